"""Beyond a chain: a residual block as a nested layer, then ResNet-8 on the digits.

The seeds build networks as a chain of layers. A ResNet (He et al. 2016) is not a
chain: each block adds its input to the output of a few layers, ``y = body(x) + x``.
In airi such a block is a layer that holds other layers in its attributes, and owns
them: their parameters, BatchNorm statistics and modes belong to it, so optimizers,
``state_dict``, ``airi.save`` and ``train()``/``eval()`` reach them.

1. A residual block written by hand (``forward`` adds the skip path, ``backward`` sums
   the two paths' gradients), checked with ``airi.gradcheck``; it lists its nested
   parameters as ``body.0.W``, ``body.1.gamma`` ...
2. ``airi.models.resnet8`` (the CIFAR ResNet of the paper with one block per stage,
   built from ``airi.layers.Residual``) trained on the 4,000 bundled MNIST digits with
   SGD + Nesterov momentum and the one-cycle schedule (``OneCycleLR``, stepped after
   every batch by the Trainer), random shifts of 2 pixels, gradient clipping and a
   per-epoch CSV log; then its held-out accuracy (also top-2), the confusion matrix and
   the model saved and loaded back.

Run:  python examples/resnet_digits.py [--quick] [--epochs 12] [--plots DIR]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import airi
except ImportError:  # run from a clone without `pip install .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import airi
from airi import Sequential
from airi.datasets import load_mnist_subset
from airi.layers import BatchNorm2D, Conv2D, Layer, Relu
from airi.lr_scheduler import OneCycleLR
from airi.trainer import CSVLogger, Trainer


class ResidualBlock(Layer):
    """``relu(body(x) + x)`` with body = conv-BN-ReLU-conv-BN, written by hand.

    Assigning layers to attributes is all it takes to own them: ``self.body`` (a
    Sequential) and ``self.relu`` are registered in that order.
    """

    def __init__(self, channels):
        super().__init__()
        self.body = Sequential(Conv2D(channels, channels, 3, pad=1, bias=False),
                               BatchNorm2D(channels), Relu(),
                               Conv2D(channels, channels, 3, pad=1, bias=False),
                               BatchNorm2D(channels))
        self.relu = Relu()

    def forward(self, x, training=None):
        return self.relu(self.body(x, training) + x, training)

    def backward(self, dout):
        d_sum = self.relu.backward(dout)
        return self.body.backward(d_sum) + d_sum       # both paths reach x


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: 1,000 training digits, 3 epochs in batches of 32 "
                             "(seconds)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=0.1,
                        help="the peak rate of the one-cycle schedule")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plots", metavar="DIR",
                        help="write DIR/confusion_matrix.png and DIR/curves.png (needs "
                             "the plot extra)")
    args = parser.parse_args(argv)
    if args.plots:
        try:
            airi.viz.check_matplotlib()      # fail now, not after training
        except ImportError as error:
            parser.error(str(error))
    if args.quick:
        args.epochs, args.batch_size = 3, 32
    return args


def show_the_block():
    """Part 1: the hand-written block owns its sub-layers."""
    airi.seed(0)
    block = ResidualBlock(2)
    names = [name for name, _ in block.named_parameters()]
    print(f"parameters of ResidualBlock(2): {names}")
    print(f"state_dict keys with running statistics: "
          f"{[k for k in block.state_dict() if 'running' in k]}")
    block.eval()
    print(f"after block.eval(), the inner BatchNorm is training={block.body[1].training}")
    block.train()
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5))
    errors = airi.gradcheck(block, x)
    print(f"gradcheck (float64, central differences): max relative error "
          f"{max(errors.values()):.1e} over {len(errors)} arrays")
    return names, max(errors.values())


def main(argv=None):
    """Run the example; returns a dict with ``test_accuracy`` and more."""
    args = parse_args(argv)
    print("== 1. A residual block written by hand")
    names, gradcheck_error = show_the_block()

    print("\n== 2. ResNet-8 on the bundled digits")
    airi.seed(args.seed)
    (X_train, y_train), (X_test, y_test) = load_mnist_subset()
    if args.quick:
        X_train, y_train = X_train[:1000], y_train[:1000]
        X_test, y_test = X_test[:300], y_test[:300]
    model = airi.models.resnet8(in_channels=1, image_size=28)
    param_names = [name for name, _ in model.named_parameters()]
    print(f"resnet8: {sum(p.size for p in model.parameters()):,} parameters in "
          f"{len(param_names)} arrays: {param_names[0]}, {param_names[1]}, ... "
          f"{param_names[8]}, ... {param_names[-1]}")
    loader = airi.DataLoader(X_train, y_train, batch_size=args.batch_size, shuffle=True,
                             seed=args.seed, transform=airi.data.RandomShift(2))
    optimizer = airi.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                               nesterov=True, weight_decay=5e-4)
    schedule = OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                          steps_per_epoch=len(loader))
    trainer = Trainer(model, airi.CrossEntropyLoss(), optimizer, schedule,
                      clip_grad_norm=5.0)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = os.path.join(tmp, "history.csv")
        start = time.perf_counter()
        history = trainer.fit(loader, epochs=args.epochs, val=(X_test, y_test),
                              callbacks=[CSVLogger(csv_path)])
        seconds = time.perf_counter() - start
        with open(csv_path) as f:
            csv_lines = f.read().splitlines()
        result = trainer.evaluate((X_test, y_test), top_k=2)
        print(f"held-out accuracy {result['accuracy']:.4f} (top-2 "
              f"{result['top_2_accuracy']:.4f}) on {result['samples']} digits after "
              f"{args.epochs} epochs, {seconds:.0f}s; history.csv has {len(csv_lines)} "
              f"lines")
        cm = airi.metrics.confusion_matrix(y_test, trainer.predict(X_test), 10)
        worst = np.argmax(cm.sum(axis=1) - np.diag(cm))
        print(f"confusion matrix: the most misclassified digit is {worst} "
              f"({cm[worst].sum() - cm[worst, worst]} of {cm[worst].sum()})")
        path = os.path.join(tmp, "resnet8.airi")
        airi.save(model, path)
        back = airi.load(path)
        same = bool(np.array_equal(back.eval()(X_test[:64]), model.eval()(X_test[:64])))
        print(f"saved and loaded back: same outputs = {same}")
    if args.plots:
        folder = Path(args.plots)
        written = airi.viz.plot_confusion_matrix(cm, folder / "confusion_matrix.png")
        print(f"wrote {written}")
        print(f"wrote {airi.viz.plot_history(history, folder / 'curves.png')}")
    return {"test_accuracy": result["accuracy"], "top2_accuracy": result["top_2_accuracy"],
            "block_parameters": names, "gradcheck_error": gradcheck_error,
            "confusion_matrix": cm, "history": history, "csv_lines": len(csv_lines),
            "reloaded_equal": same}


if __name__ == "__main__":
    main(sys.argv[1:])
