"""The Airi layer library: layers as Lego blocks, and the optimizers (seed 001).

Seed 001 ("Airi") turns its models into modules with one shape, ``__call__`` /
``forward`` / ``backward`` / ``update`` / ``zero_grad``, and trains a model that is
just a list of them::

    model = [Linear(input_size=3072, hidden_size=10, reg=1e3, bias=True), Softmax()]
    for i in range(n_epoches):
        for layer in model:
            x = layer.forward(x)
        loss = model[-1].NLLloss(y)
        dout = model[-1].backward(y)
        for layer in reversed(model[:-1]):
            dout = layer.backward(dout)
            layer.update()
            layer.zero_grad()

then the two-layer net the same way, and finally compares SGD, SGD + momentum, AdaGrad,
RMSProp and Adam. This example runs all of it with airi, on the bundled MNIST subset
(784 pixels per image instead of CIFAR-10's 3,072):

1. the seed's loop, as printed, for the Softmax classifier and the two-layer net;
2. the same two models with ``Sequential`` + ``Trainer`` + ``Adam``;
3. the seed's five optimizers side by side on the same net, the same initial weights
   and the same batches: a table, and (``--plots DIR``) their loss curves.

Run:  python examples/airi_layers.py [--quick] [--plots DIR]
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
from airi import Sequential, Trainer, optim
from airi.data import DataLoader
from airi.datasets import load_mnist_subset
from airi.layers import Linear, Relu, Softmax
from airi.losses import CrossEntropyLoss

# L2 strength: the seed's 1e3 was for raw 0..255 CIFAR pixels; ours are in [0, 1].
REG = 1e-3


# ------------------------------------------------------------ 1. the seed's own loop
def train_like_the_seed(model, train_images, train_targets, n_epoches, lr):
    """The seed's training loop over a list of layers (full batch gradient descent).

    One change: the seed writes ``x = layer.forward(x)``, which overwrites the training
    images with the model's output after the first epoch; here the output gets its own
    name. ``update(lr)`` passes the learning rate the seed leaves at its default.
    """
    x = train_images
    y = train_targets
    losses = []
    for i in range(n_epoches):
        out = x
        for layer in model:
            out = layer(out)                 # layer.forward(out)
        loss = model[-1].NLLloss(y)
        dout = model[-1].backward(y)
        for layer in reversed(model[:-1]):
            dout = layer.backward(dout)
            layer.update(lr)
            layer.zero_grad()
        losses.append(loss)
    return losses


def list_accuracy(model, X, y):
    """Accuracy of a list-of-layers model (eval mode)."""
    out = X
    for layer in model:
        out = layer.forward(out, training=False)
    return float(np.mean(np.argmax(out, axis=1) == y))


# --------------------------------------------------------- 3. optimizers side by side
def optimizer_table():
    """The seed's optimizers, each with a usual learning rate for it."""
    return {
        "SGD": lambda p: optim.SGD(p, lr=0.1),
        "SGD + momentum": lambda p: optim.SGD(p, lr=0.02, momentum=0.9),
        "AdaGrad": lambda p: optim.AdaGrad(p, lr=0.02),
        "RMSProp": lambda p: optim.RMSProp(p, lr=1e-3),
        "Adam": lambda p: optim.Adam(p, lr=1e-3),
    }


def two_layer_net():
    """Seed 001's two-layer net; its final Softmax lives in CrossEntropyLoss."""
    return Sequential([Linear(784, 100, reg=REG), Relu(), Linear(100, 10, reg=REG)])


def compare_optimizers(X_train, y_train, X_test, y_test, epochs, batch_size, seed):
    """Train the same net from the same initial weights on the same batches with each
    optimizer; returns {name: {"losses": per-step losses, "train_loss": mean loss of
    the last epoch, "accuracy": held-out accuracy, "seconds": training time}}."""
    results = {}
    for name, make_optimizer in optimizer_table().items():
        airi.seed(seed)                      # the same initial weights for everyone
        model = two_layer_net()
        criterion = CrossEntropyLoss()
        optimizer = make_optimizer(model.parameters())
        loader = DataLoader(X_train, y_train, batch_size=batch_size, shuffle=True,
                            seed=seed)       # the same batches for everyone
        losses = []
        start = time.perf_counter()
        for _ in range(epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = criterion(model(xb), yb)
                model.backward(criterion.backward())
                optimizer.step()
                losses.append(loss)
        seconds = time.perf_counter() - start
        scores = model.forward(X_test, training=False)
        results[name] = {
            "losses": losses,
            "train_loss": float(np.mean(losses[-len(loader):])),
            "accuracy": float(np.mean(np.argmax(scores, axis=1) == y_test)),
            "seconds": seconds,
            "lr": optimizer.lr,
        }
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: fewer iterations, 1,000 training images")
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--seed-iterations", type=int, default=200,
                        help="full-batch steps of the seed's loop")
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs of the Trainer runs and of each optimizer")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plots", metavar="DIR",
                        help="write DIR/airi_layers_optimizers.png (loss curves) and "
                             "DIR/airi_layers_curves.png "
                             "(the Trainer run's history); needs the plot extra")
    args = parser.parse_args(argv)
    if args.plots:
        try:
            airi.viz.check_matplotlib()      # fail now, not after training
        except ImportError as error:
            parser.error(str(error))
    if args.quick:
        args.train_size, args.seed_iterations, args.epochs = 1000, 60, 2
    return args


def main(argv=None):
    """Run the example; returns a dict of the accuracies and the optimizer table."""
    args = parse_args(argv)
    (X_train, y_train), (X_test, y_test) = load_mnist_subset()
    # The seed's models take flat images: (N, 1, 28, 28) -> (N, 784).
    X_train = X_train[:args.train_size].reshape(-1, 784)
    y_train = y_train[:args.train_size]
    X_test = X_test.reshape(-1, 784)
    print(f"MNIST subset: {len(X_train)} training, {len(X_test)} held-out images of 784 "
          f"pixels; backend {airi.backend()}")
    result = {}

    # ---- 1. the seed's loop --------------------------------------------------------
    print(f"\n== 1. The seed's loop over a list of layers "
          f"({args.seed_iterations} full-batch steps)")
    airi.seed(args.seed)
    seed_models = {
        "Softmax classifier": ([Linear(input_size=784, hidden_size=10, reg=REG, bias=True),
                                Softmax()], 0.5),
        "Two-layer net": ([Linear(input_size=784, hidden_size=100, reg=REG, bias=True),
                           Relu(),
                           Linear(input_size=100, hidden_size=10, reg=REG, bias=True),
                           Softmax()], 0.5),
    }
    for name, (model, lr) in seed_models.items():
        losses = train_like_the_seed(model, X_train, y_train, args.seed_iterations, lr)
        acc = list_accuracy(model, X_test, y_test)
        result[f"seed_loop/{name}"] = acc
        print(f"{name:>20}: loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
              f"held-out accuracy {acc:.3f}")

    # ---- 2. Sequential + Trainer + Adam --------------------------------------------
    print(f"\n== 2. The same models with Sequential + Trainer + Adam "
          f"({args.epochs} epochs)")
    histories = {}
    builders = {"Softmax classifier": lambda: Sequential([Linear(784, 10, reg=REG)]),
                "Two-layer net": two_layer_net}
    for name, build in builders.items():
        airi.seed(args.seed)
        model = build()
        adam = optim.Adam(model.parameters(), lr=1e-3)
        trainer = Trainer(model, CrossEntropyLoss(), adam)
        print(f"-- {name}")
        histories[name] = trainer.fit((X_train, y_train), epochs=args.epochs,
                                      val=(X_test, y_test), batch_size=args.batch_size)
        acc = trainer.evaluate((X_test, y_test))["accuracy"]
        result[f"trainer/{name}"] = acc

    # ---- 3. the optimizers side by side --------------------------------------------
    print(f"\n== 3. The seed's optimizers on the two-layer net ({args.epochs} epochs, "
          "same initial weights, same batches)")
    table = compare_optimizers(X_train, y_train, X_test, y_test, args.epochs,
                               args.batch_size, args.seed)
    print(f"{'optimizer':<16}{'lr':>8}{'last-epoch loss':>17}{'held-out acc':>14}")
    for name, row in table.items():
        print(f"{name:<16}{row['lr']:>8g}{row['train_loss']:>17.4f}"
              f"{row['accuracy']:>14.3f}")
    result["optimizers"] = {name: {k: v for k, v in row.items() if k != "losses"}
                            for name, row in table.items()}

    if args.plots:
        steps_per_epoch = max(1, len(table["Adam"]["losses"]) // args.epochs)
        path = airi.viz.plot_loss_curves(
            {name: row["losses"] for name, row in table.items()},
            f"{args.plots}/airi_layers_optimizers.png",
            title="the seed's optimizers on the two-layer net",
            xlabel="step (batch)", smooth=max(1, steps_per_epoch // 4))
        print(f"wrote {path}")
        path = airi.viz.plot_history(histories["Two-layer net"],
                                     f"{args.plots}/airi_layers_curves.png",
                                     title="two-layer net, Trainer + Adam")
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
