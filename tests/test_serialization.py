"""Model files: airi.save / airi.load round trips, the header, atomic saving, and a loader
that never runs code from the file (every payload below would create a marker file)."""
import collections
import copyreg
import errno
import io
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest

import airi
from airi import serialization
from airi.serialization import allowlist, fileformat, unpickler
from airi.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten,
                         Layer, LeakyRelu, Linear, LogSoftmax, MaxPool2D, Relu, Sigmoid,
                         Softmax, Tanh)

HEADER = b"AIRI-MODEL\nformat=1 airi=0.1.0\n"


# ---------------------------------------------------------------------------- helpers
def write(path, data):
    path.write_bytes(data)
    return path


def with_header(stream):
    return HEADER + stream


def small_cnn():
    """A convnet using every kind of layer with state: params, running stats, caches."""
    return airi.Sequential([
        Conv2D(1, 4, 3, pad=1), BatchNorm2D(4), Relu(), MaxPool2D(2),
        Conv2D(4, 4, (3, 1), stride=1, pad=(1, 0)), LeakyRelu(0.1), AvgPool2D(2),
        Flatten(), Dropout(0.5), Linear(16, 8), BatchNorm1D(8), Tanh(), Linear(8, 3),
        Sigmoid(), Linear(3, 3), LogSoftmax(),
    ])


def batch(seed=0, n=5):
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


def train_step(model, x):
    """Forward + backward in training mode: fills caches and gradients."""
    model.train()
    out = model.forward(x)
    model.backward(np.ones_like(out) / out.size)
    return out


class Scale(Layer):
    """A user's own layer (defined outside airi): out = x * s."""

    def __init__(self, n):
        super().__init__()
        self.add_param("s", np.full(n, 2.0, dtype=np.float32))

    def forward(self, x, training=None):
        return x * self.s.data

    def backward(self, dout):
        return dout * self.s.data


class Marker:
    """A user class whose __setstate__ would leave a trace."""

    def __setstate__(self, state):
        pathlib.Path(state["marker"]).write_text("setstate ran")


class Payload:
    """pickle.dumps(Payload(func, *args)) records a call of func(*args)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def unicode_op(s):
    data = s.encode()
    return b"\x8c" + bytes([len(data)]) + data


def stack_global(module, name):
    return unicode_op(module) + unicode_op(name) + b"\x93"


# ------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32, np.uint8,
                                   np.bool_, np.complex128, ">f4", "<f8", np.float16])
def test_arrays_keep_dtype_shape_and_bits(tmp_path, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    arrays = {"c": arr, "f": np.asfortranarray(arr), "view": arr[:, ::2, 1:],
              "scalar": arr.ravel()[0], "empty": arr[:0], "0d": np.array(arr.ravel()[1])}
    path = tmp_path / "arrays.pkl"
    airi.save(arrays, path)
    back = airi.load(path)
    assert set(back) == set(arrays)
    for key, value in arrays.items():
        got = back[key]
        assert type(got) is type(value), key
        if key == "view" and value.dtype.byteorder == ">":
            # NumPy's own pickling of a non-contiguous big-endian array loads it in
            # native byte order (plain pickle.loads does the same): equal values.
            assert got.dtype == value.dtype.newbyteorder("=")
            np.testing.assert_array_equal(got, value)
            continue
        assert got.dtype == value.dtype and got.dtype.str == value.dtype.str, key
        assert got.shape == value.shape, key
        assert got.tobytes() == value.tobytes(), key
    assert back["f"].flags.f_contiguous
    assert back["c"].flags.writeable          # loaded arrays can be trained further


def test_special_float_values_survive(tmp_path):
    arr = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, np.finfo(np.float32).max],
                   dtype=np.float32)
    airi.save(arr, tmp_path / "a.pkl")
    assert airi.load(tmp_path / "a.pkl").tobytes() == arr.tobytes()


def test_plain_values_round_trip(tmp_path):
    value = {
        "ints": [0, -1, 2 ** 70], "floats": (0.5, float("inf")), "text": "ação",
        "bytes": b"\x00\xff", "bytearray": bytearray(b"ab"), "set": {1, 2},
        "frozenset": frozenset({"a"}), "complex": 1 - 2j, "slice": slice(1, None, 2),
        "range": range(2, 9, 3), "ordered": collections.OrderedDict(b=1, a=2),
        "nested": {"none": None, "bool": True, "list": [[], {}]}, "ellipsis": ...,
        "np_types": [np.float32, np.int64], "object_array": np.array([1, "a", None], object),
        "structured": np.zeros(2, dtype=[("x", "f4"), ("y", "i4", (2,))]),
        "aligned": np.ones(2, dtype=np.dtype([("a", "u1"), ("b", "f8")], align=True)),
        "titled": np.ones(1, dtype=[(("a title", "a"), ">f4"), ("n", [("m", "i2")])]),
        "void": np.array([b"abc"], dtype="V3"), "bytes_array": np.array([b"xy"]),
        "datetime": np.array(["2024-01-02"], dtype="M8[ns]"), "str_array": np.array(["ab"]),
    }
    airi.save(value, tmp_path / "v.pkl")
    back = airi.load(tmp_path / "v.pkl")
    for key in value:
        if isinstance(value[key], np.ndarray):
            assert back[key].dtype == value[key].dtype
            if value[key].dtype.hasobject:
                assert back[key].tolist() == value[key].tolist()
            else:
                assert back[key].tobytes() == value[key].tobytes()
        else:
            assert back[key] == value[key] and type(back[key]) is type(value[key]), key
    assert list(back["ordered"]) == ["b", "a"]


def test_model_round_trip_predicts_exactly(tmp_path, each_backend):
    airi.seed(0)
    model = small_cnn()
    x = batch()
    for _ in range(2):                          # running statistics move away from init
        train_step(model, x)
        model.update(0.1)
    model.eval()
    expected = model.forward(x)
    path = tmp_path / "model.pkl"
    airi.save(model, path)
    loaded = airi.load(path)
    assert type(loaded) is airi.Sequential and len(loaded) == len(model)
    assert [type(layer) for layer in loaded] == [type(layer) for layer in model]
    np.testing.assert_array_equal(loaded.forward(x), expected)
    for p, q in zip(model.parameters(), loaded.parameters()):
        assert p.data.dtype == q.data.dtype and np.array_equal(p.data, q.data)
    assert not loaded.training and not loaded[1].training
    # The loaded model trains: backward and update work, gradients are per-parameter.
    out = train_step(loaded, x)
    assert all(p.grad is not None and p.grad.shape == p.shape for p in loaded.parameters())
    loaded.update(0.1)
    assert out.shape == expected.shape


def test_float64_model_round_trip(tmp_path):
    airi.set_default_dtype(np.float64)
    model = airi.Sequential([Linear(4, 3), Relu(), Linear(3, 2)])
    x = np.random.default_rng(0).standard_normal((6, 4))
    airi.save(model, tmp_path / "m.pkl")
    loaded = airi.load(tmp_path / "m.pkl")
    assert all(p.dtype == np.float64 for p in loaded.parameters())
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_loaded_model_shares_parameters_with_loaded_optimizer(tmp_path):
    model = airi.Sequential([Linear(4, 3)])
    opt = airi.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    airi.save({"model": model, "optimizer": opt}, tmp_path / "m.pkl")
    back = airi.load(tmp_path / "m.pkl")
    assert back["optimizer"].params[0] is back["model"][0].W
    x = np.ones((2, 4), np.float32)
    out = back["model"].forward(x, training=True)
    back["model"].backward(np.ones_like(out))
    before = back["model"][0].W.data.copy()
    back["optimizer"].step()
    assert not np.array_equal(before, back["model"][0].W.data)


@pytest.mark.parametrize("direction", [("cython", "numpy"), ("numpy", "cython")])
def test_model_moves_between_backends(tmp_path, direction):
    if "cython" not in airi.available_backends():
        pytest.skip("compiled kernels not built")
    saved_on, loaded_on = direction
    airi.set_backend(saved_on)
    airi.seed(1)
    model = small_cnn()
    train_step(model, batch())
    model.eval()
    x = batch(2)
    expected = model.forward(x)
    airi.save(model, tmp_path / "m.pkl")
    airi.set_backend(loaded_on)
    loaded = airi.load(tmp_path / "m.pkl")
    assert airi.backend() == loaded_on
    np.testing.assert_allclose(loaded.forward(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))  # same backend now


def test_caches_and_gradients_are_not_saved(tmp_path, each_backend):
    airi.seed(0)
    model = small_cnn()
    airi.save(model, tmp_path / "fresh.pkl")
    x = batch(n=64)
    train_step(model, x)
    assert all(p.grad is not None for p in model.parameters())
    cached = [(type(layer).__name__, name) for layer in model
              for name in type(layer)._cache_names if getattr(layer, name) is not None]
    assert ("Conv2D", "cols") in cached             # caches the file must not hold
    airi.save(model, tmp_path / "trained.pkl")
    # Same bytes count: no cached activations (cols alone is 64*9*64*4 bytes) and no grads.
    size = (tmp_path / "trained.pkl").stat().st_size
    assert size == (tmp_path / "fresh.pkl").stat().st_size
    loaded = airi.load(tmp_path / "trained.pkl")
    assert all(p.grad is None for p in loaded.parameters())
    for layer in loaded:
        for name in type(layer)._cache_names:
            assert getattr(layer, name) is None, (type(layer).__name__, name)
    with pytest.raises(RuntimeError, match="before forward"):
        loaded[0].backward(np.ones((64, 4, 8, 8), np.float32))


def test_every_layer_round_trips_alone(tmp_path):
    layers = [Linear(4, 3), Conv2D(2, 3, 3), MaxPool2D(2), AvgPool2D(2), Relu(),
              LeakyRelu(0.2), Sigmoid(), Tanh(), Flatten(), Dropout(0.3), BatchNorm1D(3),
              BatchNorm2D(3), Softmax(), LogSoftmax(), airi.ReLU()]
    for i, layer in enumerate(layers):
        path = tmp_path / f"{i}.pkl"
        airi.save(layer, path)
        loaded = airi.load(path)
        assert type(loaded) is type(layer)
        assert repr(loaded) == repr(layer)
        assert loaded.state_dict().keys() == layer.state_dict().keys()


def test_checkpoint_dict_with_rng_state(tmp_path):
    airi.seed(7)
    model = airi.Sequential([Linear(4, 3), Relu(), Linear(3, 2)])
    opt = airi.optim.Adam(model.parameters(), lr=1e-2)
    sched = airi.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    out = model.forward(x)
    model.backward(np.ones_like(out))
    opt.step()
    sched.step()
    checkpoint = {
        "model": model, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "epoch": 3, "rng_state": airi._config.get_rng_state(),
        "metrics": {"history": [{"loss": 0.5, "acc": 0.75}], "best": np.float64(0.75)},
    }
    path = tmp_path / "checkpoint.pkl"
    airi.save(checkpoint, path)
    draws = airi._config.get_rng().standard_normal(5)
    back = airi.load(path)
    assert back["epoch"] == 3 and back["metrics"] == checkpoint["metrics"]
    assert back["rng_state"] == checkpoint["rng_state"]
    airi._config.set_rng_state(back["rng_state"])
    np.testing.assert_array_equal(airi._config.get_rng().standard_normal(5), draws)
    opt2 = airi.optim.Adam(back["model"].parameters(), lr=1.0)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.lr == opt.lr
    for i, s in checkpoint["optimizer"]["state"].items():
        for key, value in s.items():
            np.testing.assert_array_equal(back["optimizer"]["state"][i][key], value)
    assert back["scheduler"] == checkpoint["scheduler"]


def test_optimizer_and_scheduler_objects_round_trip(tmp_path):
    model = airi.Sequential([Linear(3, 2)])
    opt = airi.optim.RMSProp(model.parameters(), lr=0.01)
    sched = airi.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    loss = airi.CrossEntropyLoss()
    airi.save([model, opt, sched, loss], tmp_path / "all.pkl")
    model2, opt2, sched2, loss2 = airi.load(tmp_path / "all.pkl")
    assert sched2.optimizer is opt2 and opt2.params[0] is model2[0].W
    assert opt2.param_groups[0]["lr"] == opt.lr        # rebuilt by Optimizer.__setstate__
    sched2.step()
    assert type(loss2) is airi.CrossEntropyLoss


def test_paths_str_pathlike_and_header(tmp_path):
    class MyPath:
        def __init__(self, p):
            self.p = p

        def __fspath__(self):
            return self.p

    arr = np.arange(3.0)
    paths = (str(tmp_path / "a.pkl"), tmp_path / "b.pkl", MyPath(str(tmp_path / "c.pkl")))
    for path in paths:
        airi.save(arr, path)
        np.testing.assert_array_equal(airi.load(path), arr)
    data = (tmp_path / "a.pkl").read_bytes()
    assert data.startswith(b"AIRI-MODEL\nformat=2 airi=" + airi.__version__.encode() + b" ")
    header = serialization.read_header(tmp_path / "a.pkl")
    assert header["format"] == serialization.FORMAT_VERSION
    assert header["airi"] == airi.__version__
    # The stream after the header is pickle protocol 5, the opcodes the loader checks.
    stream = data.split(b"\n", 2)[2]
    assert stream[:2] == b"\x80\x05"
    with pytest.raises(TypeError):
        airi.save(arr, 123)


def test_saving_warns_about_what_load_would_refuse(tmp_path):
    with pytest.warns(UserWarning, match=r"Scale.*register_safe"):
        airi.save(airi.Sequential([Scale(3)]), tmp_path / "m.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        airi.save(small_cnn(), tmp_path / "ok.pkl")           # nothing to warn about


def test_loading_a_few_megabytes_reads_arrays_whole(tmp_path, monkeypatch):
    """Not a timing assert: the pure-Python unpickler is fast enough because each array
    arrives in one read (4.5 MB load in ~4 ms measured here, vs ~0.4 ms for pickle)."""
    model = airi.Sequential([Linear(1024, 1024), Relu(), Linear(1024, 10)])
    airi.save(model, tmp_path / "big.pkl")
    assert (tmp_path / "big.pkl").stat().st_size > 4 * 1024 * 1024
    calls = []
    original = unpickler._BoundedReader.read

    def counting_read(self, n=-1):
        calls.append(n)
        return original(self, n)

    monkeypatch.setattr(unpickler._BoundedReader, "read", counting_read)
    loaded = airi.load(tmp_path / "big.pkl")
    assert len(calls) < 50          # a handful of frames and one read per array
    assert max(calls) >= 1024 * 1024 * 4
    np.testing.assert_array_equal(loaded[0].W.data, model[0].W.data)


# ------------------------------------------------------------- payloads are refused
def marker_payloads(marker):
    """(label, object whose pickle runs a payload, refused global)."""
    m = str(marker)
    code = f"open({m!r}, 'w').write('pwned')"
    import numpy.testing._private.utils as np_utils
    return [
        ("os.system", Payload(os.system, f"touch {m}"), f"{os.system.__module__}.system"),
        ("builtins.exec", Payload(exec, code), "builtins.exec"),
        ("builtins.eval", Payload(eval, code), "builtins.eval"),
        ("subprocess.Popen", Payload(subprocess.Popen, ["touch", m]), "subprocess.Popen"),
        ("numpy runstring", Payload(np_utils.runstring, code, {}),
         "numpy.testing._private.utils.runstring"),
        ("numpy.savetxt", Payload(np.savetxt, m, np.zeros(2)), "numpy.savetxt"),
        ("numpy.load", Payload(np.load, m, None, True), "numpy.load"),
        ("builtins.getattr", Payload(getattr, "x", "upper"), "builtins.getattr"),
        ("builtins.__import__", Payload(__import__, "os"), "builtins.__import__"),
        ("io.open", Payload(open, m, "w"), f"{open.__module__}.open"),
        ("copyreg._reconstructor", Payload(copyreg._reconstructor, Linear, object, None),
         "copyreg._reconstructor"),
        ("nested in a list", [1, [2, Payload(os.system, f"touch {m}")]],
         f"{os.system.__module__}.system"),
        ("in a state dict", {"model": {"W": np.zeros(2), "b": Payload(exec, code)}},
         "builtins.exec"),
    ]


def payload_cases():
    return [case[0] for case in marker_payloads("x")]


@pytest.mark.parametrize("label", payload_cases())
def test_classic_payloads_are_refused_and_never_run(tmp_path, label):
    marker = tmp_path / "pwned"
    _, payload, refused = {c[0]: c for c in marker_payloads(marker)}[label]
    path = write(tmp_path / "evil.pkl", with_header(pickle.dumps(payload, protocol=4)))
    with pytest.raises(airi.UnsafeModelError) as info:
        airi.load(path)
    assert refused in str(info.value) and str(path) in str(info.value)
    assert info.value.global_name == refused
    assert not marker.exists()
    assert isinstance(info.value, airi.ModelFileError) and isinstance(info.value, ValueError)


def test_payload_in_a_layers_dict_via_build(tmp_path):
    marker = tmp_path / "pwned"
    layer = Linear(2, 2)
    layer.evil = Payload(os.system, f"touch {marker}")
    model = airi.Sequential([Relu(), layer])
    path = write(tmp_path / "evil.pkl", with_header(pickle.dumps(model, protocol=5)))
    with pytest.raises(airi.UnsafeModelError, match=r"posix\.system|nt\.system"):
        airi.load(path)
    assert not marker.exists()


class ForgingPickler(pickle.Pickler):
    """Pickles objects of chosen classes with a hand-made reduce tuple."""

    def __init__(self, file, forged):
        super().__init__(file, protocol=4)
        self.forged = forged

    def reducer_override(self, obj):
        for cls, reduce_value in self.forged.items():
            if type(obj) is cls:
                return reduce_value
        return NotImplemented


def forged_dumps(obj, forged):
    buf = io.BytesIO()
    ForgingPickler(buf, forged).dump(obj)
    return buf.getvalue()


def test_payload_in_a_parameter_state(tmp_path):
    marker = tmp_path / "pwned"
    evil_state = {"data": Payload(os.system, f"touch {marker}"), "name": "W"}
    stream = forged_dumps(Linear(2, 2), {
        airi.Parameter: (copyreg.__newobj__, (airi.Parameter,), evil_state)})
    path = write(tmp_path / "evil.pkl", with_header(stream))
    with pytest.raises(airi.UnsafeModelError, match="system"):
        airi.load(path)
    assert not marker.exists()
    # A Parameter state that is not {'data': ndarray, 'name': str} is refused before
    # Parameter.__setstate__ sees it.
    stream = forged_dumps(Linear(2, 2), {
        airi.Parameter: (copyreg.__newobj__, (airi.Parameter,), {"data": [1.0], "x": 1})})
    with pytest.raises(airi.ModelFileError, match="Parameter's state"):
        airi.load(write(tmp_path / "bad.pkl", with_header(stream)))


def test_global_opcode_protocol0_is_checked_too(tmp_path):
    marker = tmp_path / "pwned"
    stream = f"cos\nsystem\n(Vtouch {marker}\ntR.".encode()
    path = write(tmp_path / "evil.pkl", with_header(stream))
    with pytest.raises(airi.UnsafeModelError, match=r"'os\.system'"):
        airi.load(path)
    assert not marker.exists()


def test_reduce_calling_an_admitted_airi_class_is_refused(tmp_path):
    path = write(tmp_path / "r.pkl", with_header(pickle.dumps(Payload(Linear, 4, 3), 4)))
    with pytest.raises(airi.UnsafeModelError, match=r"airi\.layers\.linear\.Linear"):
        airi.load(path)
    stream = forged_dumps(Linear(4, 3), {Linear: (copyreg.__newobj__, (Linear, 4, 3))})
    path = write(tmp_path / "n.pkl", with_header(stream))
    with pytest.raises(airi.UnsafeModelError, match="constructor arguments"):
        airi.load(path)
    assert b"\x81" in path.read_bytes()        # it really was a NEWOBJ with arguments


def test_airi_functions_and_helpers_are_not_admitted(tmp_path):
    for func, name in [(airi.set_backend, "airi._backend.set_backend"),
                       (airi.seed, "airi._config.seed"),
                       (airi.serialization.save, "airi.serialization.fileformat.save")]:
        path = write(tmp_path / "f.pkl", with_header(pickle.dumps(Payload(func, "x"), 4)))
        with pytest.raises(airi.UnsafeModelError, match=name.replace(".", r"\.")):
            airi.load(path)
    # Attribute paths are never followed from an admitted name.
    stream = b"\x80\x04" + stack_global("airi.layers.base", "Layer.__init__") + b"."
    with pytest.raises(airi.UnsafeModelError, match=r"Layer\.__init__"):
        airi.load(write(tmp_path / "g.pkl", with_header(stream)))
    # Non-airi modules named like airi ones are not imported.
    stream = b"\x80\x04" + stack_global("airi_evil.layers", "Linear") + b"."
    with pytest.raises(airi.UnsafeModelError, match=r"airi_evil\.layers\.Linear"):
        airi.load(write(tmp_path / "h.pkl", with_header(stream)))
    assert "airi_evil" not in sys.modules


def test_methods_of_admitted_objects_are_never_called(tmp_path):
    # APPENDS / SETITEMS on a Sequential would call its append / __setitem__.
    seq = stack_global("airi.model", "Sequential") + b")\x81"
    for ops in (b"(K\x01e", b"(K\x01K\x02u", b"K\x01a", b"K\x01K\x02s"):
        path = write(tmp_path / "m.pkl", with_header(b"\x80\x04" + seq + ops + b"."))
        with pytest.raises(airi.UnsafeModelError, match="Sequential object"):
            airi.load(path)
    # BUILD only on objects the loader has just created, and only once.
    build_twice = seq + b"}b}b"
    with pytest.raises(airi.UnsafeModelError, match="BUILD"):
        airi.load(write(tmp_path / "b.pkl", with_header(b"\x80\x04" + build_twice + b".")))
    # Dunder attribute names are refused.
    dunder = seq + b"}" + unicode_op("__class__") + b"K\x01sb"
    with pytest.raises(airi.UnsafeModelError, match="__class__"):
        airi.load(write(tmp_path / "d.pkl", with_header(b"\x80\x04" + dunder + b".")))


def test_user_setstate_is_not_called(tmp_path):
    marker = tmp_path / "ran"
    obj = Marker()
    obj.__dict__["marker"] = str(marker)
    stream = pickle.dumps(obj, protocol=5)      # Marker has no __getstate__: dict state
    path = write(tmp_path / "m.pkl", with_header(stream))
    with pytest.raises(airi.UnsafeModelError, match="Marker"):
        airi.load(path)
    with serialization.safe_classes(Marker):
        loaded = airi.load(path)
    assert type(loaded) is Marker and loaded.marker == str(marker)
    assert not marker.exists()


def test_other_opcodes_that_run_code_are_refused(tmp_path):
    cases = {
        "persistent": b"\x80\x04" + unicode_op("x") + b"Q.",          # BINPERSID
        "persid0": b"Px\n.",                                           # PERSID
        "ext1": b"\x80\x04\x82\x01.",                                  # EXT1
        "inst": b"(ios\nsystem\n.",                                    # INST
        "obj": b"\x80\x04(" + stack_global("airi.model", "Sequential") + b"o.",   # OBJ
    }
    for label, stream in cases.items():
        with pytest.raises(airi.UnsafeModelError):
            airi.load(write(tmp_path / f"{label}.pkl", with_header(stream)))
    with pytest.raises(airi.ModelFileError, match="out-of-band"):
        airi.load(write(tmp_path / "buf.pkl", with_header(b"\x80\x05\x97.")))


def test_forged_numpy_dtype_flags_are_refused(tmp_path):
    """NumPy trusts the flags of a pickled dtype: an object dtype marked "no objects"
    would turn the bytes 0x41... into an object pointer (a segfault, or worse)."""
    dtype_o = (stack_global("numpy", "dtype") + unicode_op("O8") + b"\x89\x88\x87R"
               + b"(K\x03" + unicode_op("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
               + b"K\x00tb")                      # flags 0 instead of 63
    array = (stack_global("numpy._core.multiarray", "_reconstruct")
             + stack_global("numpy", "ndarray") + b"K\x00\x85C\x01b\x87R"
             + b"(K\x01K\x01\x85" + dtype_o + b"\x89C\x08AAAAAAAAtb")
    path = write(tmp_path / "dtype.pkl", with_header(b"\x80\x04" + array + b"."))
    with pytest.raises(airi.UnsafeModelError, match="dtype"):
        airi.load(path)
    # A float dtype claiming to hold objects is refused the same way.
    forged = (stack_global("numpy", "dtype") + unicode_op("f8") + b"\x89\x88\x87R"
              + b"(K\x03" + unicode_op("<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
              + b"K?tb.")
    with pytest.raises(airi.UnsafeModelError, match="dtype"):
        airi.load(write(tmp_path / "f.pkl", with_header(b"\x80\x04" + forged)))


def test_dtype_must_be_checked_before_an_array_uses_it(tmp_path):
    # numpy.dtype('f8') without BUILD, used by an array, then BUILT (mutated) later.
    dtype = stack_global("numpy", "dtype") + unicode_op("f8") + b"\x89\x88\x87R\x94"
    array = (stack_global("numpy._core.numeric", "_frombuffer") + b"(C\x08AAAAAAAA"
             + dtype + b"K\x01\x85" + unicode_op("C") + b"tR")
    path = write(tmp_path / "d.pkl", with_header(b"\x80\x04" + array + b"."))
    with pytest.raises(airi.UnsafeModelError, match="before its state was set"):
        airi.load(path)


def test_object_array_with_too_few_items_is_refused(tmp_path):
    """NumPy does not check the length of a pickled object array's item list: 156 slots
    filled from a 2-item list read past its end (a crash found by fuzzing)."""
    stream = pickle.dumps(np.array([1, "a"], dtype=object), protocol=4)
    assert stream.count(b"K\x01K\x02\x85") == 1            # shape (2,)
    stream = stream.replace(b"K\x01K\x02\x85", b"K\x01K\x9c\x85")   # shape (156,)
    with pytest.raises(airi.ModelFileError, match="needs 156 items"):
        airi.load(write(tmp_path / "o.pkl", with_header(stream)))


def py2_cifar_batch():
    """A CIFAR-10-style batch as Python 2 pickled it (protocol 2, 8-bit strings)."""
    def string(s):
        b = s if isinstance(s, bytes) else s.encode("latin1")
        return b"U" + bytes([len(b)]) + b
    return (b"\x80\x02}(" + string("data")
            + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
            + string("b") + b"\x87R(K\x01K\x02K\x03\x86cnumpy\ndtype\n" + string("u1")
            + b"K\x00K\x01\x87R(K\x03" + string("|")
            + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + string(bytes(range(6)))
            + b"tb" + string("labels") + b"](K\x01K\x02eu.")


@pytest.mark.parametrize("encoding", ["bytes", "latin1"])
def test_restricted_load_reads_python2_array_pickles(encoding):
    batch = serialization.restricted_load(io.BytesIO(py2_cifar_batch()), "batch",
                                          encoding=encoding, airi_objects=False)
    data, labels = batch.values()
    assert data.dtype == np.uint8 and data.shape == (2, 3)
    assert data.tobytes() == bytes(range(6)) and labels == [1, 2]


def test_restricted_load_without_airi_objects_refuses_layers():
    stream = pickle.dumps(Linear(2, 2), protocol=5)
    with pytest.raises(airi.UnsafeModelError, match=r"airi\.layers\.linear\.Linear"):
        serialization.restricted_load(io.BytesIO(stream), "data", airi_objects=False)
    assert type(serialization.restricted_load(io.BytesIO(stream), "data")) is Linear


def test_numpy_reconstructors_only_accept_what_numpy_writes(tmp_path):
    # _reconstruct of a non-ndarray subtype (here an airi class) is refused.
    stream = (b"\x80\x04" + stack_global("numpy._core.multiarray", "_reconstruct")
              + stack_global("airi.layers.linear", "Linear") + b"K\x00\x85C\x01b\x87R.")
    with pytest.raises(airi.UnsafeModelError, match="_reconstruct"):
        airi.load(write(tmp_path / "r.pkl", with_header(stream)))
    # numpy.dtype from a string NumPy never writes (a comma spec) is refused.
    stream = (b"\x80\x04" + stack_global("numpy", "dtype") + unicode_op("f8,O")
              + b"\x89\x88\x87R.")
    with pytest.raises(airi.UnsafeModelError, match="numpy.dtype"):
        airi.load(write(tmp_path / "d.pkl", with_header(stream)))


# -------------------------------------------------------------- broken files
@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"hello world, not a model", "not an airi model file"),
    (pickle.dumps([1, 2], protocol=5), "plain pickle"),
    (b"AIRI-MODEL\n", "damaged"),
    (b"AIRI-MODEL\nformat=one\n\x80\x05N.", "damaged"),
    (b"AIRI-MODEL\nformat=1 airi=0.1.0\n", "only the airi header"),
    (b"AIRI-MODEL\nformat=1 airi=0.1.0\n\x80\x05", "truncated"),
    (b"AIRI-MODEL\nformat=1 airi=0.1.0\n\x80\x05N", "truncated"),
    (b"AIRI-MODEL\nformat=1 airi=0.1.0\n\x80\x05N.junk", "after the end"),
    (b"AIRI-MODEL\nformat=1 airi=0.1.0\n\x80\x05\x8e" + struct.pack("<Q", 2 ** 40) + b"x.",
     "truncated"),
    (b"AIRI-MODEL\nformat=1 airi=0.1.0\n\x80\x05\x96" + struct.pack("<Q", 2 ** 40) + b"x.",
     "bytearray"),
    (b"AIRI-MODEL\nformat=1 airi=0.1.0\n\x80\x05\x95" + struct.pack("<Q", 2 ** 60) + b"N.",
     "truncated"),
    (b"AIRI-MODEL\nformat=1 airi=0.1.0\n\xff\xfe\xfd", "corrupt"),
    (b"AIRI-MODEL\nformat=1 airi=0.1.0\n\x80\x05e.", "corrupt"),     # APPENDS, no MARK
])
def test_broken_files_raise_model_file_error(tmp_path, content, message):
    path = write(tmp_path / "broken.pkl", content)
    with pytest.raises(airi.ModelFileError, match=message) as info:
        airi.load(path)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, airi.UnsafeModelError)


def test_newer_format_names_the_airi_version_needed(tmp_path):
    path = write(tmp_path / "new.pkl", b"AIRI-MODEL\nformat=7 airi=3.2.0\n\x80\x05N.")
    with pytest.raises(airi.ModelFileError, match=r"airi >= 3\.2\.0") as info:
        airi.load(path)
    assert "format 7" in str(info.value) and str(path) in str(info.value)
    path = write(tmp_path / "req.pkl",
                 b"AIRI-MODEL\nformat=9 airi=5.0.0 requires=4.1\n\x80\x05N.")
    with pytest.raises(airi.ModelFileError, match=r"airi >= 4\.1"):
        airi.load(path)


def test_every_truncation_of_a_model_file_is_a_clean_error(tmp_path):
    airi.save({"model": airi.Sequential([Conv2D(1, 2, 3), Flatten(), Linear(8, 2)]),
               "epoch": 1}, tmp_path / "m.pkl")
    data = (tmp_path / "m.pkl").read_bytes()
    for cut in range(0, len(data) - 1, 7):
        path = write(tmp_path / "cut.pkl", data[:cut])
        with pytest.raises(airi.ModelFileError):
            airi.load(path)


def test_random_corruption_never_escapes_as_another_error(tmp_path):
    airi.save({"model": airi.Sequential([Linear(3, 2), BatchNorm1D(2)]),
               "opt": {"state": {0: {"step": 1}}}, "x": np.arange(4.0)}, tmp_path / "m.pkl")
    data = bytearray((tmp_path / "m.pkl").read_bytes())
    rng = np.random.default_rng(0)
    for _ in range(300):
        mutated = bytearray(data)
        for pos in rng.integers(len(HEADER), len(data), size=rng.integers(1, 4)):
            mutated[pos] = rng.integers(0, 256)
        path = write(tmp_path / "fuzz.pkl", bytes(mutated))
        try:
            airi.load(path)
        except airi.ModelFileError:
            pass
    with pytest.raises(airi.ModelFileError):
        airi.load(write(tmp_path / "rand.pkl", HEADER + rng.bytes(500)))


def test_missing_file_is_an_os_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        airi.load(tmp_path / "nope.pkl")


# ------------------------------------------------------------------ atomic saves
class FailsHalfway:
    """Pickling gets this far into the file, then fails."""

    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


def test_pickling_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.pkl"
    airi.save({"version": 1}, path)
    before = path.read_bytes()
    big = np.zeros(300_000)                        # written to the temp file before failing
    with pytest.raises(RuntimeError, match="cannot pickle"):
        airi.save({"big": big, "bad": FailsHalfway()}, path)
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["model.pkl"]
    assert airi.load(path) == {"version": 1}


class FullDisk(io.FileIO):
    """A file on a disk that fills up after `room` bytes."""
    room = 10_000

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pkl"
    airi.save(np.arange(10), path)
    before = path.read_bytes()
    monkeypatch.setattr(fileformat, "_open_new_file",
                        lambda p: io.BufferedWriter(FullDisk(p, "xb")))
    with pytest.raises(OSError) as info:
        airi.save(np.zeros(100_000), path)
    assert info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["model.pkl"]


def test_failing_fsync_or_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pkl"
    airi.save([1], path)

    def fail(*args):
        raise OSError(errno.EIO, "I/O error")

    for target in ("fsync", "replace"):
        with monkeypatch.context() as m:
            m.setattr(fileformat.os, target, fail)
            with pytest.raises(OSError, match="model.pkl"):
                airi.save([2], path)
        assert airi.load(path) == [1]
        assert files_in(tmp_path) == ["model.pkl"]


def test_save_replaces_and_keeps_mode_and_symlinks(tmp_path):
    real = tmp_path / "real.pkl"
    airi.save([1], real)
    os.chmod(real, 0o640)
    link = tmp_path / "link.pkl"
    link.symlink_to(real)
    airi.save([2], link)
    assert link.is_symlink() and airi.load(real) == [2]
    assert (real.stat().st_mode & 0o777) == 0o640
    assert files_in(tmp_path) == ["link.pkl", "real.pkl"]


def test_save_into_a_missing_folder_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        airi.save([1], tmp_path / "missing" / "m.pkl")
    with pytest.raises(IsADirectoryError):
        airi.save([1], tmp_path)


# ------------------------------------------------------------ admitting user classes
def test_register_safe_admits_a_custom_layer(tmp_path):
    model = airi.Sequential([Linear(3, 3), Scale(3)])
    x = np.ones((2, 3), np.float32)
    path = tmp_path / "m.pkl"
    with pytest.warns(UserWarning):
        airi.save(model, path)
    with pytest.raises(airi.UnsafeModelError, match=r"Scale.*register_safe") as info:
        airi.load(path)
    assert info.value.global_name.endswith(".Scale")
    try:
        assert airi.register_safe(Scale) is Scale
        loaded = airi.load(path)
        np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
        assert type(loaded[1]) is Scale and loaded[1].s.grad is None
    finally:
        serialization.unregister_safe(Scale)
    with pytest.raises(airi.UnsafeModelError):
        airi.load(path)
    with serialization.safe_classes(Scale):
        assert type(airi.load(path)[1]) is Scale
    with pytest.raises(airi.UnsafeModelError):
        airi.load(path)


def test_register_safe_rejects_non_classes_and_builtins():
    with pytest.raises(TypeError):
        airi.register_safe(os.system)
    with pytest.raises(ValueError):
        airi.register_safe(dict)
    with pytest.raises(ValueError):
        airi.register_safe(OSError)

    def factory():
        class Local(Layer):
            pass
        return Local

    with pytest.raises(ValueError, match="module level"):
        airi.register_safe(factory())


def test_registered_class_still_cannot_be_called_with_arguments(tmp_path):
    with serialization.safe_classes(Scale):
        path = write(tmp_path / "r.pkl", with_header(pickle.dumps(Payload(Scale, 3), 4)))
        with pytest.raises(airi.UnsafeModelError, match="Scale"):
            airi.load(path)


def test_airi_setstate_methods_are_all_reviewed():
    """An airi class with its own __setstate__ must be reviewed (it receives data from
    untrusted files) and listed in serialization._REVIEWED_SETSTATE."""
    import importlib
    import pkgutil
    unreviewed = []
    for info in pkgutil.walk_packages(airi.__path__, "airi."):
        if info.name.startswith(("airi._ext", "airi.train", "airi.distributed")):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        for obj in vars(module).values():
            if (isinstance(obj, type) and obj.__module__ == info.name
                    and allowlist._is_admitted_class(obj)):
                method = allowlist._own_setstate(obj)
                if method is not None:
                    name = allowlist._qualified(method)
                    if name not in allowlist._REVIEWED_SETSTATE:
                        unreviewed.append(name)
    assert not unreviewed
