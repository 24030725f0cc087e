"""Data set loaders: the bundled MNIST subset, MNIST IDX files, CIFAR-10 pickle batches,
and downloads from a local HTTP server (no network: files are written by the tests in
the real formats)."""
import functools
import gzip
import hashlib
import io
import os
import pickle
import socket
import struct
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import airi
from airi import datasets
from airi.datasets import (DatasetError, DatasetNotFoundError, DownloadError,
                           UnsafeDatasetError)
from airi.datasets import cifar as cifar_module
from airi.datasets import mnist as mnist_module

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------------------------------
# Writers of the real formats
# ---------------------------------------------------------------------------------------
def idx_bytes(array, magic=None):
    """An IDX file of unsigned bytes: magic (0x0000080<ndim>), big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_file(path, data, gz):
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def fake_mnist(n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist(folder, arrays, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_file(folder / name, idx_bytes(a), gz) for name, a in arrays.items()}


class Py2StylePickler(pickle._Pickler):
    """Writes str and bytes as Python 2 byte strings (BINSTRING opcodes), as cPickle did
    when the CIFAR-10 batches were made, and names numpy.core like NumPy 1 did."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin-1")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj):
    stream = io.BytesIO()
    Py2StylePickler(stream, protocol=2).dump(obj)
    return stream.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def cifar_batch(n, seed, label="training batch"):
    rng = np.random.default_rng(seed)
    return {b"batch_label": label.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def fake_cifar(n=4):
    batches = {f"data_batch_{i}": cifar_batch(n, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(n + 1, 99, "testing batch 1 of 1")
    return batches


def write_cifar_folder(root, batches, dump=py2_pickle):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(dump(batch))
    return folder


def write_cifar_archive(path, batches, dump=py2_pickle):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            raw = dump(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def expected_cifar(batches):
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    X = np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32) / 255.0
    y = np.concatenate([b[b"labels"] for b in train])
    test = batches["test_batch"]
    return (X, y), (test[b"data"].reshape(-1, 3, 32, 32) / 255.0, np.array(test[b"labels"]))


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# Bundled MNIST subset
# ---------------------------------------------------------------------------------------
def test_subset_shapes_dtypes_and_range():
    (X_train, y_train), (X_test, y_test) = datasets.load_mnist_subset()
    assert X_train.shape == (4000, 1, 28, 28) and X_test.shape == (1000, 1, 28, 28)
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    assert y_train.shape == (4000,) and y_test.shape == (1000,)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert X_train.min() == 0.0 and X_train.max() == 1.0
    assert 0.0 <= X_test.min() and X_test.max() <= 1.0


def test_subset_is_stratified_400_100_per_class():
    (_, y_train), (_, y_test) = datasets.load_mnist_subset()
    assert np.array_equal(np.bincount(y_train, minlength=10), [400] * 10)
    assert np.array_equal(np.bincount(y_test, minlength=10), [100] * 10)
    # Shuffled, not sorted by label as in the file.
    assert np.any(np.diff(y_train) < 0) and np.any(np.diff(y_test) < 0)


def test_subset_split_is_disjoint_complete_and_matches_file():
    images, labels = mnist_module._read_bundled_subset()
    train_idx, test_idx = datasets.stratified_split(labels, 100, mnist_module.SPLIT_SEED)
    assert np.array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(5000))
    (X_train, y_train), (X_test, y_test) = datasets.load_mnist_subset()
    assert np.array_equal(np.rint(X_train[:, 0] * 255).astype(np.uint8), images[train_idx])
    assert np.array_equal(np.rint(X_test[:, 0] * 255).astype(np.uint8), images[test_idx])
    assert np.array_equal(y_test, labels[test_idx])


def test_subset_is_deterministic_and_ignores_airi_seed():
    airi.seed(1)
    (a_train, a_y), (a_test, _) = datasets.load_mnist_subset()
    state = airi._config.get_rng_state()
    airi.seed(2)
    (b_train, b_y), (b_test, _) = datasets.load_mnist_subset()
    assert np.array_equal(a_train, b_train) and np.array_equal(a_y, b_y)
    assert np.array_equal(a_test, b_test)
    airi._config.set_rng_state(state)
    datasets.load_mnist_subset()
    assert airi._config.get_rng_state() == state  # loading draws nothing from airi's RNG


def test_subset_corrupt_file_is_reported(monkeypatch):
    monkeypatch.setattr(mnist_module, "SUBSET_SHA256", "0" * 64)
    with pytest.raises(DatasetError, match=r"mnist_5k\.npz.*corrupt.*reinstall"):
        datasets.load_mnist_subset()


def test_subset_missing_file_is_reported(monkeypatch):
    monkeypatch.setattr(mnist_module, "SUBSET_FILE", "no_such_file.npz")
    with pytest.raises(DatasetNotFoundError, match=r"no_such_file\.npz.*missing"):
        datasets.load_mnist_subset()


def test_stratified_split_refuses_a_class_too_small():
    with pytest.raises(ValueError, match="class 2 has 1 samples"):
        datasets.stratified_split(np.array([0, 0, 0, 1, 1, 1, 2]), 1)


# ---------------------------------------------------------------------------------------
# MNIST IDX files
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_reads_idx_files(tmp_path, gz):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays, gz=gz)
    (X_train, y_train), (X_test, y_test) = datasets.load_mnist(tmp_path)
    assert X_train.shape == (12, 1, 28, 28) and X_test.shape == (5, 1, 28, 28)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= X_train.min() and X_train.max() <= 1.0
    np.testing.assert_allclose(X_train[:, 0], arrays["train-images-idx3-ubyte"] / 255.0,
                               rtol=1e-6)
    np.testing.assert_allclose(X_test[:, 0], arrays["t10k-images-idx3-ubyte"] / 255.0,
                               rtol=1e-6)
    assert np.array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


def test_load_mnist_accepts_a_mix_of_gzipped_and_plain(tmp_path):
    arrays = fake_mnist()
    for i, (name, array) in enumerate(arrays.items()):
        write_file(tmp_path / name, idx_bytes(array), gz=i % 2 == 0)
    (_, y_train), _ = datasets.load_mnist(str(tmp_path))
    assert np.array_equal(y_train, arrays["train-labels-idx1-ubyte"])


def test_load_mnist_missing_files(tmp_path):
    arrays = fake_mnist()
    del arrays["t10k-labels-idx1-ubyte"]
    write_mnist(tmp_path, arrays)
    with pytest.raises(DatasetNotFoundError,
                       match=r"t10k-labels-idx1-ubyte\.gz.*download=True") as info:
        datasets.load_mnist(tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path) in str(info.value)


def test_load_mnist_missing_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        datasets.load_mnist(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def _corrupt_mnist(tmp_path, name, data, gz=False):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays, gz=False)
    (tmp_path / name).unlink()
    return write_file(tmp_path / name, data, gz)


def test_bad_idx_magic_is_reported(tmp_path):
    _corrupt_mnist(tmp_path, "train-images-idx3-ubyte",
                   idx_bytes(np.zeros((12, 28, 28)), magic=0x12345678))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*magic.*0x12345678"):
        datasets.load_mnist(tmp_path)


def test_wrong_number_of_dims_is_reported(tmp_path):
    # A label file holding a 3-d array (an image header) is not a label file.
    _corrupt_mnist(tmp_path, "t10k-labels-idx1-ubyte", idx_bytes(np.zeros((5, 28, 28))))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.*not an MNIST label"):
        datasets.load_mnist(tmp_path)


def test_truncated_idx_is_reported(tmp_path):
    data = idx_bytes(np.zeros((12, 28, 28)))[:-100]
    _corrupt_mnist(tmp_path, "train-images-idx3-ubyte", data, gz=True)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz.*truncated"):
        datasets.load_mnist(tmp_path)


def test_truncated_header_is_reported(tmp_path):
    _corrupt_mnist(tmp_path, "train-labels-idx1-ubyte", b"\x00\x00\x08")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.*truncated"):
        datasets.load_mnist(tmp_path)


def test_trailing_bytes_are_reported(tmp_path):
    _corrupt_mnist(tmp_path, "train-labels-idx1-ubyte",
                   idx_bytes(np.zeros(12)) + b"\x01\x02")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.*wrong size"):
        datasets.load_mnist(tmp_path)


def test_corrupt_gzip_is_reported(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((5, 28, 28))))[:-30]
    _corrupt_mnist(tmp_path, "t10k-images-idx3-ubyte", data)  # gzip found by content
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.*gzip"):
        datasets.load_mnist(tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    _corrupt_mnist(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.zeros(11)))
    with pytest.raises(DatasetError, match=r"12 images.*train-labels-idx1-ubyte.*11 labels"):
        datasets.load_mnist(tmp_path)


def test_train_and_test_image_sizes_must_agree(tmp_path):
    _corrupt_mnist(tmp_path, "t10k-images-idx3-ubyte", idx_bytes(np.zeros((5, 20, 20))))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.*\(20, 20\)"):
        datasets.load_mnist(tmp_path)


# ---------------------------------------------------------------------------------------
# CIFAR-10 batches
# ---------------------------------------------------------------------------------------
def _check_cifar(result, batches):
    (X_train, y_train), (X_test, y_test) = result
    (eX_train, ey_train), (eX_test, ey_test) = expected_cifar(batches)
    assert X_train.shape == (20, 3, 32, 32) and X_test.shape == (5, 3, 32, 32)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert y_test.dtype == np.int64 and X_test.dtype == np.float32
    np.testing.assert_allclose(X_train, eX_train, rtol=1e-6)
    np.testing.assert_allclose(X_test, eX_test, rtol=1e-6)
    assert np.array_equal(y_train, ey_train) and np.array_equal(y_test, ey_test)


def test_cifar_layout_is_rgb_planes_row_major(tmp_path):
    batches = fake_cifar()
    write_cifar_folder(tmp_path, batches)
    (X_train, _), _ = datasets.load_cifar10(tmp_path)
    row = batches["data_batch_1"][b"data"][0]
    # Green channel, row 3, column 7 is byte 1024 + 3 * 32 + 7 of the flat row.
    assert X_train[0, 1, 3, 7] == np.float32(row[1024 + 3 * 32 + 7] / 255.0)


def test_cifar_from_folder_of_python2_pickles(tmp_path):
    batches = fake_cifar()
    write_cifar_folder(tmp_path, batches)
    _check_cifar(datasets.load_cifar10(tmp_path), batches)


def test_cifar_from_archive_without_extracting(tmp_path):
    batches = fake_cifar()
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches)
    _check_cifar(datasets.load_cifar10(str(tmp_path)), batches)
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-python.tar.gz"]


def test_cifar_python3_pickles_with_str_keys(tmp_path):
    batches = fake_cifar()
    as_str = {name: {k.decode(): v for k, v in b.items()} for name, b in batches.items()}
    write_cifar_folder(tmp_path, as_str, dump=lambda b: pickle.dumps(b, protocol=4))
    _check_cifar(datasets.load_cifar10(tmp_path), batches)


def test_cifar_not_found(tmp_path):
    with pytest.raises(DatasetNotFoundError,
                       match=r"cifar-10-batches-py.*cifar-10-python\.tar\.gz.*download=True"):
        datasets.load_cifar10(tmp_path)


def test_cifar_missing_batch(tmp_path):
    folder = write_cifar_folder(tmp_path, fake_cifar())
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"data_batch_3.*missing"):
        datasets.load_cifar10(tmp_path)


def test_cifar_batch_without_labels(tmp_path):
    batches = fake_cifar()
    del batches["data_batch_2"][b"labels"]
    write_cifar_folder(tmp_path, batches)
    with pytest.raises(DatasetError, match=r"data_batch_2.*no 'labels'"):
        datasets.load_cifar10(tmp_path)


def test_cifar_batch_without_data_in_archive(tmp_path):
    batches = fake_cifar()
    del batches["test_batch"][b"data"]
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches)
    with pytest.raises(DatasetError, match=r"cifar-10-python\.tar\.gz:.*test_batch.*'data'"):
        datasets.load_cifar10(tmp_path)


def test_cifar_batch_with_wrong_image_size(tmp_path):
    batches = fake_cifar()
    batches["data_batch_1"][b"data"] = np.zeros((4, 3000), dtype=np.uint8)
    write_cifar_folder(tmp_path, batches)
    with pytest.raises(DatasetError, match=r"data_batch_1.*\(N, 3072\).*\(4, 3000\)"):
        datasets.load_cifar10(tmp_path)


def test_cifar_labels_out_of_range(tmp_path):
    batches = fake_cifar()
    batches["data_batch_4"][b"labels"][0] = 10
    write_cifar_folder(tmp_path, batches)
    with pytest.raises(DatasetError, match=r"data_batch_4.*0\.\.9"):
        datasets.load_cifar10(tmp_path)


def test_cifar_truncated_batch(tmp_path):
    folder = write_cifar_folder(tmp_path, fake_cifar())
    raw = (folder / "data_batch_5").read_bytes()
    (folder / "data_batch_5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match=r"data_batch_5.*corrupt or truncated"):
        datasets.load_cifar10(tmp_path)


def test_cifar_corrupt_archive(tmp_path):
    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", fake_cifar())
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match=r"cifar-10-python\.tar\.gz.*corrupt or truncated"):
        datasets.load_cifar10(tmp_path)


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_cifar_pickle_asking_for_os_system_is_refused(tmp_path):
    marker = tmp_path / "payload_ran"
    batches = fake_cifar()
    batches["data_batch_3"][b"labels"] = [_RunsCommand(f"touch {marker}")] * 4
    write_cifar_folder(tmp_path, batches)
    with pytest.raises(UnsafeDatasetError, match=r"data_batch_3.*'(posix|os)\.system'"):
        datasets.load_cifar10(tmp_path)
    assert not marker.exists()


def test_cifar_pickle_asking_for_builtins_eval_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    batches = fake_cifar()
    batches["test_batch"][b"data"] = Evil()
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches,
                        dump=lambda b: pickle.dumps(b, protocol=4))
    with pytest.raises(UnsafeDatasetError, match=r"test_batch.*'builtins\.eval'"):
        datasets.load_cifar10(tmp_path)


# ---------------------------------------------------------------------------------------
# Downloads from a local HTTP server
# ---------------------------------------------------------------------------------------
class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """(folder served, base URL) of an HTTP server on 127.0.0.1 in a thread."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _unused_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _serve_mnist(served, monkeypatch):
    arrays = fake_mnist()
    paths = write_mnist(served / "mnist", arrays, gz=True)
    monkeypatch.setattr(mnist_module, "MNIST_MD5",
                        {p.name: md5_of(p) for p in paths.values()})
    return arrays


def test_mnist_download_success_with_mirror_fallback(http_server, tmp_path, monkeypatch):
    served, url = http_server
    arrays = _serve_mnist(served, monkeypatch)
    root = tmp_path / "data" / "mnist"
    mirrors = [url + "missing/", url + "mnist/"]  # first mirror answers 404
    (X_train, y_train), (_, y_test) = datasets.load_mnist(root, download=True,
                                                          mirrors=mirrors)
    assert sorted(os.listdir(root)) == sorted(n + ".gz" for n in IDX_NAMES)
    assert X_train.shape == (12, 1, 28, 28)
    assert np.array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    # Files present: a second call downloads nothing (the mirror is gone).
    datasets.load_mnist(root, download=True, mirrors=[_unused_port_url()])


def test_mnist_download_checksum_mismatch_leaves_nothing(http_server, tmp_path):
    served, url = http_server
    write_mnist(served, fake_mnist(), gz=True)  # real MD5s expected: they cannot match
    root = tmp_path / "mnist"
    with pytest.raises(DownloadError) as info:
        datasets.load_mnist(root, download=True, mirrors=[url])
    message = str(info.value)
    assert "md5 checksum mismatch" in message
    assert "train-images-idx3-ubyte.gz" in message and "by hand" in message
    assert str(root.resolve()) in message
    assert os.listdir(root) == []  # no partial or temporary file


def test_mnist_download_404_leaves_nothing(http_server, tmp_path):
    _, url = http_server  # serves an empty folder
    root = tmp_path / "mnist"
    with pytest.raises(DownloadError, match=r"(?s)HTTP 404.*by hand") as info:
        datasets.load_mnist(root, download=True, mirrors=[url])
    assert isinstance(info.value, DatasetError)
    assert os.listdir(root) == []
    # the message names every file MNIST needs, not only the first that failed
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert str(info.value).count(name) >= 2      # needed (with md5) and missing
    assert str(root.resolve()) in str(info.value)


def test_download_unreachable_server(tmp_path):
    with pytest.raises(DownloadError, match=r"(?s)cannot connect.*by hand"):
        datasets.download_mnist(tmp_path, mirrors=[_unused_port_url()])
    assert os.listdir(tmp_path) == []


def test_cifar_download_success(http_server, tmp_path, monkeypatch):
    served, url = http_server
    batches = fake_cifar()
    archive = write_cifar_archive(served / "cifar-10-python.tar.gz", batches)
    monkeypatch.setattr(cifar_module, "CIFAR10_MD5", md5_of(archive))
    root = tmp_path / "cifar"
    _check_cifar(datasets.load_cifar10(root, download=True, mirrors=[url]), batches)
    assert os.listdir(root) == ["cifar-10-python.tar.gz"]


def test_cifar_download_checksum_mismatch_leaves_nothing(http_server, tmp_path):
    served, url = http_server
    write_cifar_archive(served / "cifar-10-python.tar.gz", fake_cifar())
    root = tmp_path / "cifar"
    with pytest.raises(DownloadError,
                       match=r"(?s)cifar-10-python\.tar\.gz.*checksum mismatch.*by hand"):
        datasets.load_cifar10(root, download=True, mirrors=[url])
    assert os.listdir(root) == []


def test_cifar_download_404(http_server, tmp_path):
    _, url = http_server
    root = tmp_path / "cifar"
    with pytest.raises(DownloadError, match=r"HTTP 404"):
        datasets.load_cifar10(root, download=True, mirrors=[url])
    assert os.listdir(root) == []
