"""Training a network the PyTorch way: losses, optimizer, epoch loop (seed 004).

The lesson ("Como treinar uma rede neural artificial") builds
``nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
nn.Linear(64, 10))`` for MNIST and walks through:

1. the loss on logits: ``nn.CrossEntropyLoss`` (LogSoftmax and NLLLoss in one);
2. the same model ending in ``nn.LogSoftmax`` with ``nn.NLLLoss``;
3. the backward pass (``loss.backward()`` fills the weights' gradients);
4. ``optim.SGD(model.parameters(), lr=0.01)``: ``zero_grad()``, forward, loss, backward,
   ``step()``, printing the weights and gradients of one step;
5. the epoch loop over a ``DataLoader`` of batches of 64, printing the training loss;
6. ``view_classify``: one digit beside the bar chart of its class probabilities.

airi has no autograd: the loss object remembers what it needs, ``criterion.backward()``
returns dL/d(output) and ``model.backward(...)`` carries it through the layers, filling
every ``Parameter.grad``. Everything else reads as in the lesson. The data are the
bundled MNIST subset (4,000 training and 1,000 held-out digits), normalised to [-1, 1]
like ``transforms.Normalize([0.5], [0.5])``.

Run:  python examples/pytorch_style_mlp.py [--quick] [--epochs 5] [--plots DIR]
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
from airi import Sequential, optim
from airi.data import DataLoader
from airi.datasets import load_mnist_subset
from airi.layers import Linear, LogSoftmax, Relu
from airi.losses import CrossEntropyLoss, NLLLoss


def normalize(images):
    """``transforms.Normalize([0.5], [0.5])``: pixels in [0, 1] -> [-1, 1]."""
    return (images - 0.5) / 0.5


def build_mlp(log_softmax=False):
    """784 -> 128 -> 64 -> 10, ReLU between; optionally ending in LogSoftmax."""
    layers = [Linear(784, 128), Relu(), Linear(128, 64), Relu(), Linear(64, 10)]
    if log_softmax:
        layers.append(LogSoftmax())
    return Sequential(layers)


def accuracy(model, X, y):
    """Fraction of correct argmax predictions (eval mode: nothing is cached)."""
    scores = model.forward(X.reshape(len(X), -1), training=False)
    return float(np.mean(np.argmax(scores, axis=1) == y))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: 2 epochs (the full run takes seconds too)")
    parser.add_argument("--epochs", type=int, default=5,
                        help="passes over the training set")
    parser.add_argument("--lr", type=float, default=0.05,
                        help="SGD learning rate of the epoch loop (the one-step demo uses "
                             "the lesson's 0.01)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plots", metavar="DIR",
                        help="write DIR/pytorch_style_mlp_class_probabilities.png, one digit "
                             "and its class "
                             "probabilities (needs the plot extra)")
    args = parser.parse_args(argv)
    if args.plots:
        try:
            airi.viz.check_matplotlib()      # fail now, not after training
        except ImportError as error:
            parser.error(str(error))
    if args.quick:
        args.epochs = 2
    return args


def main(argv=None):
    """Run the example; returns a dict with ``test_accuracy`` and the losses."""
    args = parse_args(argv)
    airi.seed(args.seed)
    (X_train, y_train), (X_test, y_test) = load_mnist_subset()
    X_train, X_test = normalize(X_train), normalize(X_test)
    trainloader = DataLoader(X_train, y_train, batch_size=args.batch_size, shuffle=True,
                             seed=args.seed)

    # ---- 1. A loss on logits: CrossEntropyLoss ------------------------------------
    print("== CrossEntropyLoss on logits")
    model = build_mlp()
    criterion = CrossEntropyLoss()
    images, labels = next(iter(trainloader))
    images = images.reshape(images.shape[0], -1)       # "flatten" the images
    logits = model(images)                              # forward pass: logits
    loss = criterion(logits, labels)                    # loss from logits and labels
    print(f"loss: {loss:.4f}   (untrained: close to ln(10) = {np.log(10):.4f})")

    # ---- 2. LogSoftmax output + NLLLoss -------------------------------------------
    print("\n== LogSoftmax + NLLLoss")
    airi.seed(args.seed)                                # same initial weights as above
    model = build_mlp(log_softmax=True)
    criterion = NLLLoss()
    logps = model(images)                               # log-probabilities
    loss = criterion(logps, labels)
    print(f"loss: {loss:.4f}   (the same number: CrossEntropy = LogSoftmax + NLLLoss)")

    # ---- 3. The backward pass fills the gradients ---------------------------------
    print("\n== Backward pass")
    print(f"Before the backward pass: model[0].W.grad = {model[0].W.grad}")
    model.backward(criterion.backward())                # airi's loss.backward()
    print(f"After the backward pass:  model[0].W.grad has shape {model[0].W.grad.shape}, "
          f"mean |grad| {np.abs(model[0].W.grad).mean():.2e}")

    # ---- 4. One optimizer step ----------------------------------------------------
    print("\n== One SGD step (lr=0.01)")
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    print(f"Initial weights - {model[0].W.data[0, :4]}")
    images, labels = next(iter(trainloader))
    images = images.reshape(len(images), 784)             # the lesson's resize_(64, 784)
    optimizer.zero_grad()                               # gradients would accumulate
    output = model(images)
    loss = criterion(output, labels)
    model.backward(criterion.backward())
    print(f"Gradient -        {model[0].W.grad[0, :4]}")
    optimizer.step()
    print(f"Updated weights - {model[0].W.data[0, :4]}")

    # ---- 5. Training for real: the epoch loop -------------------------------------
    print(f"\n== Training: {args.epochs} epochs, SGD lr={args.lr}, batches of "
          f"{args.batch_size}")
    airi.seed(args.seed)
    model = build_mlp(log_softmax=True)
    criterion = NLLLoss()
    optimizer = optim.SGD(model.parameters(), lr=args.lr)
    epoch_losses = []
    start = time.perf_counter()
    for e in range(args.epochs):
        running_loss = 0.0
        for images, labels in trainloader:
            images = images.reshape(images.shape[0], -1)
            optimizer.zero_grad()                       # clear the gradients
            logps = model(images)                       # forward: log-probabilities
            loss = criterion(logps, labels)             # the loss
            model.backward(criterion.backward())        # backward through the model
            optimizer.step()                            # update the weights
            running_loss += loss
        epoch_losses.append(running_loss / len(trainloader))
        print(f"Training loss: {epoch_losses[-1]:.4f}")
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, X_test, y_test)
    print(f"Held-out accuracy: {test_accuracy:.3f} on {len(X_test)} digits "
          f"({seconds:.1f}s of training)")

    # ---- 6. Look at one prediction ------------------------------------------------
    img = X_test[1].reshape(1, 784)
    logps = model.forward(img, training=False)          # no gradients needed here
    ps = np.exp(logps)                                  # log-probabilities -> probabilities
    print(f"\nDigit {y_test[1]}: predicted {int(np.argmax(ps))} with probability "
          f"{ps.max():.3f}")
    if args.plots:
        path = airi.viz.plot_class_probabilities(
            img.reshape(28, 28), ps, f"{args.plots}/pytorch_style_mlp_class_probabilities.png")
        print(f"wrote {path}")
    return {"test_accuracy": test_accuracy, "epoch_losses": epoch_losses,
            "probabilities": ps[0]}


if __name__ == "__main__":
    main(sys.argv[1:])
