"""CIFAR-10 from its official "python version" batches, read without running pickled code.

The batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) are pickles written by
Python 2: each is a dict with ``data`` (uint8, (10000, 3072): 1024 red, then 1024 green,
then 1024 blue values, rows top to bottom) and ``labels`` (a list of 10000 ints 0..9).
A pickle can run any code when it is loaded, so they are read with an unpickler that
admits only what that format holds: dicts, lists, strings, bytes, ints and the NumPy
array reconstruction. Anything else is refused before it runs.
"""
import io
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ._download import download_file
from ._errors import DatasetError, DatasetNotFoundError, UnsafeDatasetError

__all__ = ["load_cifar10", "download_cifar10", "CIFAR10_CLASSES", "CIFAR10_MIRRORS",
           "CIFAR10_MD5"]

#: Class names, in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                   "horse", "ship", "truck")
#: Base URLs tried in order by ``download=True`` (override for a local mirror).
CIFAR10_MIRRORS = ["https://www.cs.toronto.edu/~kriz/"]
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
#: The published MD5 of the archive.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
IMAGE_SHAPE = (3, 32, 32)
IMAGE_BYTES = 3 * 32 * 32
NUM_CLASSES = 10
#: The most bytes a batch file may hold: 10,000 images of 3,072 bytes (30.72 MB) plus its
#: labels, file names and batch label (about 0.3 MB in the official files), with room to
#: spare. Sizes are checked against it *before* anything is read or decompressed, so a
#: damaged or hostile archive (a small .tar.gz whose member inflates to gigabytes) is
#: refused with a message instead of exhausting memory.
MAX_BATCH_BYTES = 32 * 1024 * 1024
#: The official archive holds 9 entries (the folder, 6 batches, batches.meta, readme.html).
MAX_ARCHIVE_MEMBERS = 64

def _unpickle_batch(raw, source):
    """A batch's bytes -> its dict, with str keys (Python 2 wrote them as bytes).

    Read with airi's restricted unpickler (the one behind ``airi.load``), admitting
    only plain values and NumPy arrays, whose dtypes it also checks: NumPy's own
    unpickling can be crashed by a crafted dtype, so a mere allowlist of globals is not
    enough.
    """
    from ..serialization import ModelFileError, UnsafeModelError, restricted_load

    try:
        batch = restricted_load(io.BytesIO(raw), source, size=len(raw),
                                encoding="bytes", airi_objects=False)
    except UnsafeModelError as error:
        raise UnsafeDatasetError(
            f"{source!r}: refused to load it: {error}. A CIFAR-10 batch holds only dicts, "
            "lists, strings, ints and NumPy arrays (is this file really a CIFAR-10 "
            "batch?)") from None
    except ModelFileError as error:  # truncated, garbage, or not a pickle at all
        raise DatasetError(f"{source!r}: not a readable CIFAR-10 batch: corrupt or "
                           f"truncated pickle ({error})") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{source!r}: a CIFAR-10 batch is a dict, found "
                           f"{type(batch).__name__}")
    return {(key.decode("latin-1") if isinstance(key, bytes) else key): value
            for key, value in batch.items()}


def _batch_arrays(batch, source):
    """Check a batch dict and return its images uint8 (N, 3, 32, 32), labels int64 (N,)."""
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        raise DatasetError(f"{source!r}: not a CIFAR-10 batch: no {' or '.join(missing)!r} "
                           f"entry (found {sorted(map(str, batch))})")
    data = batch["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == IMAGE_BYTES):
        described = (f"{data.dtype} array of shape {data.shape}"
                     if isinstance(data, np.ndarray) else type(data).__name__)
        raise DatasetError(f"{source!r}: 'data' must be a uint8 array of shape "
                           f"(N, {IMAGE_BYTES}), found a {described}")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{source!r}: 'labels' must be a list of ints") from None
    if labels.shape != (len(data),):
        raise DatasetError(f"{source!r}: {len(data)} images but 'labels' has shape "
                           f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(f"{source!r}: labels must lie in 0..{NUM_CLASSES - 1}, found "
                           f"{labels.min()}..{labels.max()}")
    return data.reshape((len(data),) + IMAGE_SHAPE), labels


def _read_from_folder(folder):
    """Batch name -> raw bytes, from an extracted ``cifar-10-batches-py`` folder."""
    raws = {}
    for name in TRAIN_BATCHES + (TEST_BATCH,):
        path = folder / name
        if not path.is_file():
            raise DatasetNotFoundError(f"CIFAR-10 batch {str(path)!r} is missing: "
                                       f"{_download_hint(folder.parent)}")
        _check_batch_size(path.stat().st_size, str(path))
        with open(path, "rb") as f:
            raw = f.read(MAX_BATCH_BYTES + 1)   # the file may grow after the check
        _check_batch_size(len(raw), str(path))
        raws[name] = (raw, str(path))
    return raws


def _check_batch_size(size, source):
    """Refuse a batch larger than any CIFAR-10 batch can be, before reading it."""
    if size > MAX_BATCH_BYTES:
        raise DatasetError(
            f"{source!r}: {size:,} bytes, but a CIFAR-10 batch holds at most "
            f"{MAX_BATCH_BYTES:,} (10,000 images of {IMAGE_BYTES:,} bytes plus labels): "
            "not a CIFAR-10 batch, or a damaged file; refused without reading it")


def _read_from_archive(archive):
    """Batch name -> raw bytes, read from the ``.tar.gz`` in one pass, nothing extracted."""
    wanted = set(TRAIN_BATCHES + (TEST_BATCH,))
    raws = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise DatasetError(
                        f"{str(archive)!r}: more than {MAX_ARCHIVE_MEMBERS} entries; the "
                        "CIFAR-10 archive holds 9: not the CIFAR-10 archive")
                source = f"{archive}:{member.name}"
                # The header's size is checked before the member is decompressed, and
                # the read is bounded too (a header can lie about a member's size).
                _check_batch_size(member.size, source)
                name = member.name.rsplit("/", 1)[-1]
                if name in wanted and member.isfile():
                    raw = tar.extractfile(member).read(MAX_BATCH_BYTES + 1)
                    _check_batch_size(len(raw), source)
                    raws[name] = (raw, source)
                    if len(raws) == len(wanted):
                        break   # the rest of the archive is never decompressed
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{str(archive)!r}: corrupt or truncated archive "
                           f"({type(error).__name__}: {error})") from None
    missing = sorted(wanted - set(raws))
    if missing:
        raise DatasetError(f"{str(archive)!r} does not hold the CIFAR-10 batches "
                           f"{missing} (expected {CIFAR10_FOLDER}/<batch>)")
    return raws


def _download_hint(root):
    return (f"pass download=True (python -m airi.train: --download), or download "
            f"{CIFAR10_MIRRORS[0]}{CIFAR10_ARCHIVE} (md5 {CIFAR10_MD5}) by hand and put it "
            f"in {str(Path(root).resolve())!r} (extracting it there is optional)")


def download_cifar10(root, mirrors=None, show_progress=None):
    """Download ``cifar-10-python.tar.gz`` into ``root`` (MD5-checked) unless present.

    Parameters
    ----------
    root : str or Path
        Destination folder (created if missing).
    mirrors : sequence of str, optional
        Base URLs tried in order; default :data:`CIFAR10_MIRRORS`.
    show_progress : bool or None
        Progress bar; None means only when stderr is a terminal.

    Returns
    -------
    Path
        The archive's path.

    Raises
    ------
    DownloadError
        If the archive could not be fetched intact (nothing half-written is left).
    """
    archive = Path(root) / CIFAR10_ARCHIVE
    if archive.is_file():
        return archive
    mirrors = CIFAR10_MIRRORS if mirrors is None else mirrors
    return download_file(CIFAR10_ARCHIVE, mirrors, root, CIFAR10_MD5, "md5", show_progress)


def load_cifar10(root, download=False, mirrors=None):
    """CIFAR-10: 50,000 training and 10,000 test colour images of 10 classes.

    Looks in ``root`` for the extracted folder ``cifar-10-batches-py/`` first, then for
    the archive ``cifar-10-python.tar.gz`` (read in place, nothing is extracted). Class
    names are in :data:`CIFAR10_CLASSES`.

    Parameters
    ----------
    root : str or Path
        Folder holding ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``.
    download : bool
        If neither is there, fetch the archive over HTTPS (checked against its
        published MD5) into ``root``.
    mirrors : sequence of str, optional
        Base URLs for ``download``; default :data:`CIFAR10_MIRRORS`.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        ``X_*``: float32 (N, 3, 32, 32) in [0, 1], channels RGB; ``y_*``: int64 (N,)
        in 0..9. N is 50,000 and 10,000 for the official files.

    Raises
    ------
    DatasetNotFoundError
        If the data are not in ``root`` and ``download`` is False.
    DownloadError
        If ``download`` failed.
    UnsafeDatasetError
        If a batch asks for a global outside the format (for example ``posix.system``).
    DatasetError
        If a batch is corrupt, truncated, or lacks ``data``/``labels``. The message names
        the file.
    """
    root = Path(root)
    folder = root / CIFAR10_FOLDER
    archive = root / CIFAR10_ARCHIVE
    if folder.is_dir():
        raws = _read_from_folder(folder)
    else:
        if not archive.is_file():
            if not download:
                where = "" if root.is_dir() else " (the folder does not exist)"
                raise DatasetNotFoundError(
                    f"CIFAR-10 not found in {str(root)!r}{where}: expected "
                    f"{CIFAR10_FOLDER}/ or {CIFAR10_ARCHIVE}; {_download_hint(root)}")
            download_cifar10(root, mirrors)
        raws = _read_from_archive(archive)
    parts = {}
    for name in TRAIN_BATCHES + (TEST_BATCH,):
        raw, source = raws.pop(name)  # drop each raw batch once decoded (memory)
        parts[name] = _batch_arrays(_unpickle_batch(raw, source), source)
    train_images = np.concatenate([parts[name][0] for name in TRAIN_BATCHES])
    train_labels = np.concatenate([parts[name][1] for name in TRAIN_BATCHES])
    test_images, test_labels = parts[TEST_BATCH]
    return ((_to_unit_float(train_images), train_labels),
            (_to_unit_float(test_images), test_labels))


def _to_unit_float(images):
    """uint8 (N, 3, 32, 32) -> float32 in [0, 1], without a float64 temporary."""
    x = images.astype(np.float32)
    x /= 255.0
    return x
