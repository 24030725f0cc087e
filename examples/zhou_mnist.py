"""A CNN trained from scratch, one digit at a time (seed 000, after Victor Zhou).

The tutorial's network is three layers, Conv3x3 (8 filters) -> MaxPool2 -> Softmax,
where its "Softmax" layer flattens the 13x13x8 volume, applies weights and biases and
then the softmax. Each layer caches what it saw in the forward pass; in the backward
pass each layer receives dL/dout and returns dL/din, updating its own weights with
plain SGD (learning rate 0.005) after every single image. Training prints, every 100
steps, the average loss and the accuracy of the past 100 steps, then the network is
tested on held-out digits.

Here the same pieces are airi layers (``Conv2D``, ``MaxPool2D``, ``Flatten`` +
``Linear`` + ``Softmax``), trained on the bundled MNIST subset and tested on its 1,000
held-out digits.

Run:  python examples/zhou_mnist.py [--quick] [--epochs 3] [--plots DIR]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import airi
except ImportError:  # run from a clone without `pip install .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import airi
from airi.datasets import load_mnist_subset
from airi.layers import Conv2D, Flatten, Linear, MaxPool2D, Softmax


def build_cnn():
    """The tutorial's CNN as a list of airi layers.

    Shapes for one image: (1, 1, 28, 28) -> conv (1, 8, 26, 26) -> pool (1, 8, 13, 13)
    -> flatten (1, 1352) -> dense (1, 10) -> softmax (1, 10) probabilities.
    """
    # Conv3x3 with 8 filters (no bias, as in the tutorial)
    conv = Conv2D(in_channels=1, num_filters=8, filter_size=3, bias=False)
    pool = MaxPool2D(pool_size=2)                                          # MaxPool2
    # The tutorial's Softmax layer = flatten + weights and biases + softmax.
    softmax_layers = [Flatten(), Linear(input_size=13 * 13 * 8, hidden_size=10), Softmax()]
    return [conv, pool] + softmax_layers


def forward(layers, image, label):
    """Forward pass of one image (1, 1, 28, 28): returns (probabilities, loss, correct).

    The tutorial centres the pixels: image / 255 - 0.5 (ours are already in [0, 1]).
    """
    out = image - 0.5
    for layer in layers:
        out = layer(out)          # each layer caches its input for the backward pass
    softmax = layers[-1]
    loss = softmax.NLLloss(label)  # cross-entropy: -ln(p_c)
    correct = int(np.argmax(out[0]) == label[0])
    return out, loss, correct


def train(layers, image, label, lr=0.005):
    """One SGD step on one image, as the tutorial's ``train(im, label, lr=.005)``."""
    out, loss, correct = forward(layers, image, label)

    # Calculate initial gradient: dL/dout_s is 0 except -1/p_c for the correct class c.
    gradient = np.zeros_like(out)
    gradient[0, label[0]] = -1 / out[0, label[0]]

    # Backprop: every layer takes dL/dout and returns dL/din (Softmax first).
    for layer in reversed(layers):
        gradient = layer.backward(gradient)

    # Each layer updates its own weights with plain SGD, then forgets its cache.
    for layer in layers:
        layer.update(lr)
        layer.zero_grad()
    return loss, correct


def test(layers, X, y):
    """Loss and accuracy on held-out images (one batched forward pass, eval mode)."""
    out = X - 0.5
    for layer in layers:
        out = layer.forward(out, training=False)
    loss = layers[-1].NLLloss(y)   # Softmax keeps its probabilities in eval mode too
    accuracy = float(np.mean(np.argmax(out, axis=1) == y))
    return loss, accuracy


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: one pass over the first 1,000 training digits")
    parser.add_argument("--epochs", type=int, default=3,
                        help="passes over the training set")
    parser.add_argument("--train-size", type=int, default=4000,
                        help="training digits used (at most 4,000)")
    parser.add_argument("--lr", type=float, default=0.005, help="SGD learning rate")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and shuffling")
    parser.add_argument("--plots", metavar="DIR",
                        help="write DIR/zhou_mnist_filters.png, the 8 learned 3x3 filters "
                             "(needs the plot extra)")
    args = parser.parse_args(argv)
    if args.plots:
        try:
            airi.viz.check_matplotlib()      # fail now, not after training
        except ImportError as error:
            parser.error(str(error))
    if args.quick:
        args.epochs, args.train_size = 1, 1000
    return args


def main(argv=None):
    """Run the example; returns a dict with ``test_accuracy``, ``test_loss``, ``steps``."""
    args = parse_args(argv)
    airi.seed(args.seed)
    (X_train, y_train), (X_test, y_test) = load_mnist_subset()
    X_train, y_train = X_train[:args.train_size], y_train[:args.train_size]
    layers = build_cnn()
    print(f"MNIST CNN initialized! {len(X_train)} training digits, {args.epochs} epoch(s), "
          f"backend {airi.backend()}")

    shuffle = np.random.default_rng(args.seed)
    steps = 0
    start = time.perf_counter()
    for epoch in range(args.epochs):
        print(f"--- Epoch {epoch + 1} ---")
        order = shuffle.permutation(len(X_train))
        loss, num_correct = 0.0, 0
        for i, index in enumerate(order):
            image = X_train[index:index + 1]   # (1, 1, 28, 28): a batch of one
            label = y_train[index:index + 1]   # (1,)
            step_loss, correct = train(layers, image, label, lr=args.lr)
            loss += step_loss
            num_correct += correct
            steps += 1
            if i % 100 == 99:
                print(f"[Step {i + 1}] Past 100 steps: Average Loss {loss / 100:.3f} | "
                      f"Accuracy: {num_correct}%")
                loss, num_correct = 0.0, 0
    seconds = time.perf_counter() - start

    print("\n--- Testing the CNN ---")
    test_loss, test_accuracy = test(layers, X_test, y_test)
    print(f"Test Loss: {test_loss:.3f}")
    print(f"Test Accuracy: {test_accuracy:.3f} (on {len(X_test)} held-out digits)")
    print(f"{steps} training steps in {seconds:.1f}s ({steps / seconds:,.0f} images/s)")

    if args.plots:
        path = airi.viz.plot_filters(layers[0], f"{args.plots}/zhou_mnist_filters.png",
                                     title="the 8 learned 3x3 filters")
        print(f"wrote {path}")
    return {"test_accuracy": test_accuracy, "test_loss": test_loss, "steps": steps,
            "seconds": seconds}


if __name__ == "__main__":
    main(sys.argv[1:])
