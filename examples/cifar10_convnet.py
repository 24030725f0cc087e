"""A CIFAR-10 convnet: strides, padding, pooling, a dense head, best checkpoint and
early stopping (seed 003).

Seed 003 ("Convoluções, o início de deep-learning") explains convolutions (a kernel
slid over the image; ``stride`` to skip positions, padding to keep the size), max and
average pooling, and a dense classifier on top of the convolutional features. It then
trains a CIFAR-10 network that saves the model whenever ``val_loss`` improves, stops
early when it no longer does, reloads the optimal weights and reports the test loss
and accuracy (about 0.70), and finally looks at the activations of a few layers for
one image.

This example builds such a network from airi layers::

    (3, 32, 32) -> Conv 3x3, 32 filters, stride 1, pad 1 -> Relu -> MaxPool 2  (32, 16, 16)
                -> Conv 3x3, 64 filters, stride 2, pad 1 -> Relu -> AvgPool 2  (64, 4, 4)
                -> Flatten -> Linear 1024-128 -> Relu -> Dropout -> Linear 128-10

and trains it with ``Trainer`` + ``Adam``, a ``ModelCheckpoint`` on ``val_loss`` and
``EarlyStopping``, then reloads the best model file with ``airi.load``.

Data: CIFAR-10 from ``--data-dir`` (the folder holding ``cifar-10-batches-py/`` or
``cifar-10-python.tar.gz``; fetch it once with ``--download``); data that cannot be
read, or a download that fails, is an error. With ``--synthetic`` instead, it runs on a
small synthetic stand-in of the same shape (N, 3, 32, 32), ten classes of coloured
stripe patterns, so that everything can be tried offline in seconds; its accuracies are
not CIFAR-10 results.

Run:  python examples/cifar10_convnet.py (--data-dir DIR [--download] | --synthetic)
          [--quick] [--plots DIR]
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
from airi.data import (Compose, DataLoader, Normalize, RandomHorizontalFlip,
                       RandomShift)
from airi.datasets import CIFAR10_CLASSES, DatasetError, load_cifar10
from airi.layers import AvgPool2D, Conv2D, Dropout, Flatten, Linear, MaxPool2D, Relu
from airi.losses import CrossEntropyLoss
from airi.trainer import EarlyStopping, ModelCheckpoint


def build_convnet(widths=(32, 64), hidden=128, dropout=0.3, num_classes=10):
    """The convnet above; ``widths`` are the filters of the two convolutions."""
    c1, c2 = widths
    return Sequential([
        Conv2D(3, c1, filter_size=3, stride=1, pad=1),   # padding keeps 32x32
        Relu(),
        MaxPool2D(pool_size=2),                          # max of each 2x2 -> 16x16
        Conv2D(c1, c2, filter_size=3, stride=2, pad=1),  # stride 2 -> 8x8
        Relu(),
        AvgPool2D(pool_size=2),                          # mean of each 2x2 -> 4x4
        Flatten(),                                       # the dense head
        Linear(c2 * 4 * 4, hidden),
        Relu(),
        Dropout(dropout),
        Linear(hidden, num_classes),
    ])


# ------------------------------------------------------------------------ the stand-in
STANDIN_CLASSES = tuple(f"{tint} stripes {angle}deg" for tint in ("warm", "cool")
                        for angle in (0, 36, 72, 108, 144))


def make_standin(n, seed):
    """A CIFAR-10-shaped stand-in: ``n`` images (n, 3, 32, 32) float32 in [0, 1] and
    labels (n,) int64, balanced over 10 classes.

    Class k is a patch of stripes at angle 36 * (k % 5) degrees, tinted warm (k < 5)
    or cool (k >= 5), with random wavelength, phase, position, size and tint, on a
    random background that also holds a fainter grey patch of stripes at a random angle
    (a distractor), plus pixel noise. A small convnet learns it, but only by looking at
    orientation, colour and position together; it is not separable by colour alone.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)

    def stripes(angle, wavelength, phase, cy, cx, radius):
        """(n, 32, 32) stripes windowed by a Gaussian blob, and the blob."""
        along = (xx[None] * np.cos(angle)[:, None, None]
                 + yy[None] * np.sin(angle)[:, None, None])
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * along / wavelength[:, None, None]
                                  + phase[:, None, None])
        squared_distance = ((yy[None] - cy[:, None, None]) ** 2
                            + (xx[None] - cx[:, None, None]) ** 2)
        blob = np.exp(-squared_distance / (2 * radius[:, None, None] ** 2))
        return (wave * blob).astype(np.float32), blob.astype(np.float32)

    angle = (labels % 5) * (np.pi / 5) + rng.normal(0, 0.08, n)
    pattern, blob = stripes(angle, rng.uniform(4, 9, n), rng.uniform(0, 2 * np.pi, n),
                            *rng.uniform(8, 24, (2, n)), rng.uniform(5, 10, n))
    distractor, _ = stripes(rng.uniform(0, np.pi, n), rng.uniform(4, 9, n),
                            rng.uniform(0, 2 * np.pi, n), *rng.uniform(4, 28, (2, n)),
                            rng.uniform(4, 8, n))
    warm, cool = np.array([0.9, 0.6, 0.3]), np.array([0.3, 0.6, 0.9])
    tint = np.where((labels < 5)[:, None], warm, cool) + rng.normal(0, 0.12, (n, 3))
    background = rng.uniform(0.1, 0.6, (n, 3))
    images = (background[:, :, None, None] * (1 - blob[:, None])
              + tint[:, :, None, None] * pattern[:, None]
              + 0.3 * distractor[:, None])
    images += rng.normal(0, 0.1, images.shape)
    return np.clip(images, 0, 1).astype(np.float32), labels.astype(np.int64)


def load_data(data_dir, download, sizes, seed):
    """CIFAR-10 (when found) or the stand-in, cut to ``sizes`` = (train, val, test).

    Returns ``(X_train, y_train), (X_val, y_val), (X_test, y_test), class_names, source``.
    The validation images come from the training side (the seed validates on a part of
    the training data and tests on the official test set).
    """
    n_train, n_val, n_test = sizes
    if data_dir is not None:
        try:
            (X, y), (X_test, y_test) = load_cifar10(data_dir, download=download)
        except DatasetError as error:   # includes a failed download: an error, exit 1
            what = "downloaded into" if download else "read from"
            raise SystemExit(f"cifar10_convnet: error: CIFAR-10 could not be {what} "
                             f"{data_dir!r}: {error}") from None
        order = np.random.default_rng(seed).permutation(len(X))
        n_val = min(n_val, len(X) // 5)
        val, train = order[:n_val], order[n_val:n_val + n_train]
        return ((X[train], y[train]), (X[val], y[val]),
                (X_test[:n_test], y_test[:n_test]), CIFAR10_CLASSES,
                f"CIFAR-10 from {data_dir}")
    print("NOTE: --synthetic: running on a small SYNTHETIC STAND-IN of CIFAR-10's shape "
          "(N, 3, 32, 32): 10 classes of coloured stripe patterns. Its accuracy is not a "
          "CIFAR-10 result; pass --data-dir DIR (and --download once) for the real data.")
    X, y = make_standin(n_train + n_val + n_test, seed)
    train, val, test = slice(0, n_train), slice(n_train, n_train + n_val), \
        slice(n_train + n_val, None)
    return ((X[train], y[train]), (X[val], y[val]), (X[test], y[test]), STANDIN_CLASSES,
            "synthetic stand-in")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="folder with cifar-10-batches-py/ or "
                        "cifar-10-python.tar.gz")
    source.add_argument("--synthetic", action="store_true",
                        help="run on a small synthetic stand-in of CIFAR-10's shape "
                             "(offline, seconds; not a CIFAR-10 result)")
    parser.add_argument("--download", action="store_true",
                        help="download CIFAR-10 (163 MB) into --data-dir if it is missing")
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: small data, a few short epochs")
    parser.add_argument("--epochs", type=int, default=20, help="at most this many epochs")
    parser.add_argument("--patience", type=int, default=3,
                        help="early stopping: epochs without a better val_loss")
    parser.add_argument("--train-size", type=int, default=20000,
                        help="training images used (CIFAR-10 has 50,000; the stand-in "
                             "generates this many, at most 5,000)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default 64 (32 with --quick)")
    parser.add_argument("--lr", type=float, default=None,
                        help="Adam learning rate, default 1e-3 (3e-3 with --quick)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="runs/cifar10_convnet",
                        help="folder for the best model file, best.pkl")
    parser.add_argument("--plots", metavar="DIR",
                        help="write DIR/cifar10_convnet_activations.png (seed 003's picture), "
                             "DIR/cifar10_convnet_curves.png and DIR/cifar10_convnet_filters.png "
                             "(needs the plot extra)")
    args = parser.parse_args(argv)
    if args.download and args.data_dir is None:
        parser.error("--download needs --data-dir DIR (where to put CIFAR-10)")
    if args.plots:
        try:
            airi.viz.check_matplotlib()      # fail now, not after training
        except ImportError as error:
            parser.error(str(error))
    # --quick trains a narrower net for a few epochs: smaller batches and a larger step
    # get it well above chance in seconds.
    if args.batch_size is None:
        args.batch_size = 32 if args.quick else 64
    if args.lr is None:
        args.lr = 3e-3 if args.quick else 1e-3
    return args


def main(argv=None):
    """Run the example; returns a dict with ``test_accuracy``, ``test_loss``, ``source``,
    ``epochs_run``, ``best_epoch``, ``stopped_early`` and ``history``."""
    args = parse_args(argv)
    airi.seed(args.seed)
    synthetic = args.data_dir is None
    if args.quick:
        sizes, epochs, widths, hidden = (1000, 300, 500), min(args.epochs, 4), (8, 16), 64
    else:
        sizes = (min(args.train_size, 5000), 1000, 1000) if synthetic else \
            (args.train_size, 5000, 10000)
        epochs, widths, hidden = args.epochs, (32, 64), 128
    (X_train, y_train), (X_val, y_val), (X_test, y_test), classes, source = load_data(
        args.data_dir, args.download, sizes, args.seed)
    print(f"data: {source}; {len(X_train)} training, {len(X_val)} validation, "
          f"{len(X_test)} test images of shape {X_train.shape[1:]}")

    # Per-channel standardisation fitted on the training images; flips and shifts of up
    # to 2 pixels as augmentation (the real photos only: stripe angles are the labels).
    norm = Normalize.fit(X_train)
    augment = Compose([RandomHorizontalFlip(), RandomShift(2), norm])
    transform = norm if synthetic else augment
    train = DataLoader(X_train, y_train, batch_size=args.batch_size, shuffle=True,
                       seed=args.seed, transform=transform)
    val, test = (norm(X_val), y_val), (norm(X_test), y_test)

    model = build_convnet(widths=widths, hidden=hidden)
    print(model.summary((3, 32, 32)))
    trainer = Trainer(model, CrossEntropyLoss(), optim.Adam(model.parameters(), lr=args.lr))
    best_path = Path(args.out) / "best.pkl"
    best_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = ModelCheckpoint(best_path, monitor="val_loss")
    early_stop = EarlyStopping(monitor="val_loss", patience=args.patience,
                               restore_best_weights=False)
    start = time.perf_counter()
    history = trainer.fit(train, epochs=epochs, val=val, callbacks=[checkpoint, early_stop])
    seconds = time.perf_counter() - start
    if early_stop.stopped_epoch is not None:
        print(f"interrupted by early stopping after epoch {early_stop.stopped_epoch}")

    print("reloading optimal weights...")
    best = airi.load(best_path)
    evaluator = Trainer(best, CrossEntropyLoss(), optim.Adam(best.parameters()))
    metrics = evaluator.evaluate(test)
    print(f"test loss: {metrics['loss']:.4f}")
    print(f"test accuracy: {metrics['accuracy']:.4f} (chance: 0.10; {source})")
    print(f"best epoch {checkpoint.best_epoch} of {len(history)}, "
          f"{seconds:.1f}s of training, model file {best_path}")

    if args.plots:
        image = norm(X_test[:1])
        label = classes[int(y_test[0])]
        relu_and_pools = [i for i, layer in enumerate(best)
                          if isinstance(layer, (Relu, MaxPool2D, AvgPool2D)) and i < 6]
        for path in (airi.viz.plot_feature_maps(best, image,
                                                f"{args.plots}/cifar10_convnet_activations.png",
                                                layers=relu_and_pools,
                                                title=f"activations for one test image "
                                                      f"({label})"),
                     airi.viz.plot_history(history, f"{args.plots}/cifar10_convnet_curves.png",
                                           title=f"convnet on the {source}",
                                           best_epoch=checkpoint.best_epoch),
                     airi.viz.plot_filters(best[0],
                                           f"{args.plots}/cifar10_convnet_filters.png")):
            print(f"wrote {path}")
    return {"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
            "source": source, "epochs_run": len(history),
            "best_epoch": checkpoint.best_epoch,
            "stopped_early": early_stop.stopped_epoch is not None, "history": history,
            "model_path": str(best_path)}


if __name__ == "__main__":
    main(sys.argv[1:])
