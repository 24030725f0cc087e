"""MNIST: the bundled 5,000-digit subset and the full data set from its IDX files.

Both loaders return ``(X_train, y_train), (X_test, y_test)`` with images as float32
arrays of shape (N, 1, 28, 28) scaled to [0, 1] and labels as int64 arrays of shape (N,).
"""
import gzip
import hashlib
import io
import struct
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from ._download import download_file
from ._errors import DatasetError, DatasetNotFoundError, DownloadError

__all__ = ["load_mnist_subset", "load_mnist", "download_mnist", "stratified_split",
           "MNIST_MIRRORS", "MNIST_MD5"]

# ---------------------------------------------------------------------------------------
# The bundled subset
# ---------------------------------------------------------------------------------------
SUBSET_FILE = "mnist_5k.npz"
SUBSET_SHA256 = "246e0c30eeea57c8d0037d3f38c8e00651ec204cc61b8022563e9aeeb9d756f4"
SUBSET_PER_CLASS = 500
SUBSET_TEST_PER_CLASS = 100
SPLIT_SEED = 0  # fixed: every run, every machine gets the same train/test split


def _read_bundled_subset():
    """The bundled ``images`` (5000, 28, 28) uint8 and ``labels`` (5000,) uint8, after
    checking the file's sha256 (0.8 MB: hashing it costs about a millisecond)."""
    resource = resources.files(__package__).joinpath("data", SUBSET_FILE)
    try:
        raw = resource.read_bytes()
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"the bundled MNIST subset {str(resource)!r} is missing: the airi installation "
            f"is incomplete, reinstall airi") from None
    actual = hashlib.sha256(raw).hexdigest()
    if actual != SUBSET_SHA256:
        raise DatasetError(
            f"the bundled MNIST subset {str(resource)!r} is corrupt (sha256 {actual}, "
            f"expected {SUBSET_SHA256}): reinstall airi")
    with np.load(io.BytesIO(raw), allow_pickle=False) as arrays:
        return arrays["images"], arrays["labels"]


def stratified_split(y, test_per_class, seed=SPLIT_SEED):
    """Indices of a split that takes the same number of test samples from every class.

    Parameters
    ----------
    y : ndarray of int, shape (N,)
        Class labels.
    test_per_class : int
        Samples of each class that go to the test side; the rest go to training.
    seed : int
        Seed of a private generator: the split does not depend on (nor change)
        airi's global random state.

    Returns
    -------
    train_idx, test_idx : ndarray of int64
        Disjoint indices covering ``range(N)``, each in a shuffled order (classes mixed).
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        if len(members) <= test_per_class:
            raise ValueError(f"class {label} has {len(members)} samples, cannot hold out "
                             f"{test_per_class} of them for testing and keep some to train")
        test_parts.append(members[:test_per_class])
        train_parts.append(members[test_per_class:])
    train_idx = rng.permutation(np.concatenate(train_parts)).astype(np.int64)
    test_idx = rng.permutation(np.concatenate(test_parts)).astype(np.int64)
    return train_idx, test_idx


def _to_nchw_unit(images):
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1]."""
    x = images.astype(np.float32)[:, None, :, :]
    x /= 255.0
    return x


def load_mnist_subset():
    """The bundled 5,000 real MNIST digits, split 4,000 train / 1,000 test.

    The split is stratified (400 training and 100 test images of each digit) and fixed:
    it comes from a private generator with a constant seed, so it is the same on every
    call and machine, whatever ``airi.seed`` says. Both sides are shuffled (classes
    mixed). No download: the file ships inside the package (its sha256 is checked).

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        ``X_train``: float32 (4000, 1, 28, 28) in [0, 1]; ``y_train``: int64 (4000,)
        with digits 0..9; ``X_test``: float32 (1000, 1, 28, 28); ``y_test``: int64 (1000,).

    Raises
    ------
    DatasetError
        If the bundled file is missing or corrupt (the message says to reinstall).

    Examples
    --------
    >>> (X_train, y_train), (X_test, y_test) = airi.datasets.load_mnist_subset()
    >>> X_train.shape, y_test.shape
    ((4000, 1, 28, 28), (1000,))
    """
    images, labels = _read_bundled_subset()
    train_idx, test_idx = stratified_split(labels, SUBSET_TEST_PER_CLASS, SPLIT_SEED)
    labels = labels.astype(np.int64)
    return ((_to_nchw_unit(images[train_idx]), labels[train_idx]),
            (_to_nchw_unit(images[test_idx]), labels[test_idx]))


# ---------------------------------------------------------------------------------------
# Full MNIST from the official IDX files
# ---------------------------------------------------------------------------------------
#: Base URLs tried in order by ``download=True`` (override for a local mirror).
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
#: The published MD5 of each official gzipped file.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# IDX magic numbers: two zero bytes, 0x08 (unsigned byte), then the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
GZIP_MAGIC = b"\x1f\x8b"


def _find_idx_file(folder, name):
    """``folder/name`` or ``folder/name.gz``, whichever exists (uncompressed first)."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_maybe_gzipped(path):
    """The bytes of ``path``, decompressed if it is gzip (recognised by content)."""
    raw = path.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{str(path)!r}: corrupt or truncated gzip data ({error})") \
            from None


def _read_idx(path, magic):
    """An IDX file of unsigned bytes as an ndarray of shape given by its header.

    Parameters
    ----------
    path : Path
        Gzipped or plain IDX file.
    magic : int
        Expected magic number: ``IMAGES_MAGIC`` (3 dims) or ``LABELS_MAGIC`` (1 dim).

    Returns
    -------
    ndarray of uint8, shape (N, rows, cols) or (N,)
    """
    data = _read_maybe_gzipped(path)
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise DatasetError(f"{str(path)!r}: truncated IDX file ({len(data)} bytes, "
                           f"no header)")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        kind = "image" if magic == IMAGES_MAGIC else "label"
        raise DatasetError(f"{str(path)!r}: not an MNIST {kind} file: bad IDX magic number "
                           f"0x{found:08X}, expected 0x{magic:08X}")
    if len(data) < header_len:
        raise DatasetError(f"{str(path)!r}: truncated IDX header ({len(data)} bytes, "
                           f"expected {header_len})")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(data) - header_len
    if actual < expected:
        raise DatasetError(f"{str(path)!r}: truncated: the header announces shape {dims} "
                           f"({expected} bytes of data) but only {actual} bytes follow")
    if actual > expected:
        raise DatasetError(f"{str(path)!r}: wrong size: the header announces shape {dims} "
                           f"({expected} bytes of data) but {actual} bytes follow")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def _read_split(images_path, labels_path):
    images = _read_idx(images_path, IMAGES_MAGIC)
    labels = _read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetError(f"{str(images_path)!r} holds {len(images)} images but "
                           f"{str(labels_path)!r} holds {len(labels)} labels")
    return images, labels


def _missing_message(root, missing):
    files = ", ".join(name + ".gz" for name in missing)
    where = "" if Path(root).is_dir() else " (the folder does not exist)"
    return (f"MNIST not found in {str(root)!r}{where}: missing {files} (gzipped or not). Pass "
            f"download=True (python -m airi.train: --download), or download them by hand "
            f"from {MNIST_MIRRORS[0]} and put them in {str(Path(root).resolve())!r}.")


def download_mnist(root, mirrors=None, show_progress=None):
    """Download the official MNIST files missing from ``root`` (gzipped, MD5-checked).

    Parameters
    ----------
    root : str or Path
        Destination folder (created if missing). Files already there are kept.
    mirrors : sequence of str, optional
        Base URLs tried in order; default :data:`MNIST_MIRRORS`.
    show_progress : bool or None
        Progress bar; None means only when stderr is a terminal.

    Raises
    ------
    DownloadError
        If a file could not be fetched intact from any mirror.
    """
    root = Path(root)
    mirrors = MNIST_MIRRORS if mirrors is None else mirrors
    for name in IDX_FILES:
        if _find_idx_file(root, name) is None:
            gz_name = name + ".gz"
            try:
                download_file(gz_name, mirrors, root, MNIST_MD5[gz_name], "md5",
                              show_progress)
            except DownloadError as error:
                raise DownloadError(_all_files_message(root, mirrors, error)) from None


def _all_files_message(root, mirrors, error):
    """A failed download's message, followed by every file MNIST needs (not just the
    one that failed), those still missing, and where to put them."""
    missing = [n + ".gz" for n in IDX_FILES if _find_idx_file(root, n) is None]
    base = (mirrors[0] if isinstance(mirrors, (list, tuple)) and mirrors
            else mirrors if isinstance(mirrors, str) else MNIST_MIRRORS[0])
    needed = "\n  ".join(f"{n + '.gz'}  (md5 {MNIST_MD5[n + '.gz']})" for n in IDX_FILES)
    return (f"{error}\nMNIST needs all four files (gzipped or not):\n  {needed}\n"
            f"Still missing: {', '.join(missing)}. Download them by hand from {base} and "
            f"put them in {str(root.resolve())!r}.")


def load_mnist(root, download=False, mirrors=None):
    """The full MNIST (60,000 training and 10,000 test digits) from its official files.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` from ``root``, each
    gzipped (``.gz``) or not.

    Parameters
    ----------
    root : str or Path
        Folder holding the four files.
    download : bool
        Fetch missing files over HTTPS first (checked against their published MD5).
    mirrors : sequence of str, optional
        Base URLs for ``download``; default :data:`MNIST_MIRRORS`.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        ``X_*``: float32 (N, 1, 28, 28) in [0, 1]; ``y_*``: int64 (N,).
        N is 60,000 and 10,000 for the official files.

    Raises
    ------
    DatasetNotFoundError
        If files are missing and ``download`` is False.
    DownloadError
        If ``download`` failed (nothing half-written is left in ``root``).
    DatasetError
        If a file is corrupt: bad magic number, truncated, wrong size, or image and
        label counts that disagree. The message names the file.
    """
    root = Path(root)
    if download:
        download_mnist(root, mirrors)
    paths = {name: _find_idx_file(root, name) for name in IDX_FILES}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise DatasetNotFoundError(_missing_message(root, missing))
    train_images, train_labels = _read_split(paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    test_images, test_labels = _read_split(paths[TEST_IMAGES], paths[TEST_LABELS])
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DatasetError(f"{str(paths[TEST_IMAGES])!r} holds images of shape "
                           f"{test_images.shape[1:]} but {str(paths[TRAIN_IMAGES])!r} "
                           f"holds {train_images.shape[1:]}")
    return ((_to_nchw_unit(train_images), train_labels.astype(np.int64)),
            (_to_nchw_unit(test_images), test_labels.astype(np.int64)))
