"""Issue 16: the attacks a review found on model files, saves and data files, each
reproduced here and now refused.

Files are crafted by hand (pickle opcodes) with airi's header. An attack that is a bomb
or a hang runs in a subprocess with a memory limit (RLIMIT_AS) and a time limit, so a
regression fails the test instead of taking the machine down.
"""
import copyreg
import io
import os
import pickle
import resource
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import zlib

import numpy as np
import pytest

import airi
from airi import serialization
from airi.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dropout, LeakyRelu,
                         Linear, MaxPool2D, Relu, Softmax)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER_V1 = b"AIRI-MODEL\nformat=1 airi=0.1.0\n"
MEMORY_LIMIT = 1536 << 20      # the bombs asked for terabytes; airi needs ~300 MB
TIME_LIMIT = 120               # seconds; a refused file takes well under one


# ------------------------------------------------------------------ crafting files
def v1_file(stream):
    """A model file of format 1 (no checksum): what an attacker would write."""
    return HEADER_V1 + stream


def v2_file(stream):
    """A model file of format 2 whose header's checksum matches ``stream`` (so the
    loader's parser, not the checksum, is what the attack meets)."""
    return (b"AIRI-MODEL\nformat=2 airi=0.1.0 bytes=%d crc32=%08x\n"
            % (len(stream), zlib.crc32(stream)) + stream)


BOTH_FORMATS = pytest.mark.parametrize("make_file", [v1_file, v2_file],
                                       ids=["format1", "format2"])


def u(text):
    """SHORT_BINUNICODE."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def glob(module, name):
    """STACK_GLOBAL module.name."""
    return u(module) + u(name) + b"\x93"


def long1(n):
    """LONG1: any int."""
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def new_object(module, name, attributes):
    """NEWOBJ of module.name with no arguments, then BUILD with a dict of attributes
    given as {name: opcodes of the value}."""
    state = b"}" + b"".join(u(key) + value + b"s" for key, value in attributes.items())
    return glob(module, name) + b")\x81" + state + b"b"


def range_op(start, stop):
    return glob("builtins", "range") + long1(start) + long1(stop) + b"\x86R"


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


def with_state(obj, **changes):
    """pickle of ``obj`` whose saved attributes are changed (None deletes one)."""
    state = dict(obj.__getstate__())
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return forged_dumps(obj, {type(obj): (copyreg.__newobj__, (type(obj),), state)})


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(code, timeout=TIME_LIMIT, **kwargs):
    """Run ``code`` in a fresh interpreter under the memory limit; a hang fails."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               AIRI_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                              env=env, preexec_fn=_limits, capture_output=True, text=True,
                              timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s (a hang)")


def load_limited(path, then=""):
    """airi.load(path) in a limited subprocess; returns the ModelFileError message (the
    test fails if the file loads, or on any other outcome)."""
    result = run_limited(f"""
        import airi
        try:
            obj = airi.load({str(path)!r})
        except airi.ModelFileError as exc:
            print("REFUSED", exc)
        else:
            {then or 'pass'}
            print("LOADED", type(obj).__name__)
        """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("REFUSED"), result.stdout[-2000:]
    return result.stdout


# ------------------------------------------- 1. file values never drive loops/sizes
@BOTH_FORMATS
def test_cache_names_from_the_file_are_refused(tmp_path, make_file):
    """The 117-byte file: a layer whose _cache_names is range(0, 10**15). Loading it
    iterated the range until memory ran out."""
    stream = b"\x80\x04" + new_object("airi.layers.activations", "Relu", {
        "params": b"}", "training": b"\x88",
        "_cache_names": range_op(0, 10 ** 15)}) + b"."
    path = tmp_path / "bomb.pkl"
    path.write_bytes(make_file(stream))
    assert len(path.read_bytes()) < 200
    message = load_limited(path)
    assert "_cache_names" in message and str(path) in message


def test_no_class_attribute_can_come_from_a_file(tmp_path):
    """The general rule behind the bomb: a file sets instance attributes only, never
    one the class defines (a method, a property, _cache_names, _hyper_names ...)."""
    cases = [(Linear(2, 2), "_cache_names", ("W",)),
             (Linear(2, 2), "forward", 1),
             (BatchNorm1D(2), "_buffer_names", ("params",)),
             (airi.optim.SGD([airi.Parameter(np.zeros(2))], lr=0.1), "_hyper_names",
              ("lr",)),
             (airi.CrossEntropyLoss(), "_cache_names", ("reduction",))]
    for obj, name, value in cases:
        path = tmp_path / "shadow.pkl"
        path.write_bytes(v2_file(with_state(obj, **{name: value})))
        with pytest.raises(airi.ModelFileError, match=name) as info:
            airi.load(path)
        assert type(obj).__name__ in str(info.value)


@BOTH_FORMATS
def test_a_range_cannot_stand_for_a_huge_sequence(tmp_path, make_file):
    """range is an admitted rebuilder: it costs nothing to load but as much as its length
    to iterate, so a long one counts as that many elements."""
    stream = b"\x80\x04}" + u("milestones") + range_op(0, 10 ** 15) + b"s."
    path = tmp_path / "range.pkl"
    path.write_bytes(make_file(stream))
    assert "range" in load_limited(path)
    short = b"\x80\x04}" + u("r") + range_op(0, 10) + b"s."
    path.write_bytes(make_file(short))
    assert airi.load(path) == {"r": range(10)}


def test_an_array_of_zero_sized_items_cannot_claim_a_huge_length(tmp_path):
    empty = np.dtype({"names": [], "formats": [], "itemsize": 0})
    path = tmp_path / "zero.pkl"
    path.write_bytes(v2_file(pickle.dumps(np.empty((10 ** 12,), empty), protocol=4)))
    assert "elements" in load_limited(path, then="obj.tolist()")


def test_optimizer_scratch_size_comes_from_its_parameters(tmp_path):
    """An optimizer's scratch buffers are sized from its parameters, never from the
    file (the file said 10**12)."""
    param = airi.Parameter(np.zeros(3, np.float32))
    opt = airi.optim.Adam([param])
    path = tmp_path / "opt.pkl"
    path.write_bytes(v2_file(with_state(opt, _capacity=10 ** 12)))
    result = run_limited(f"""
        import numpy as np, airi
        try:
            opt = airi.load({str(path)!r})
        except airi.ModelFileError as exc:
            print("REFUSED", exc)
        else:
            opt.params[0].grad = np.ones(3, np.float32)
            opt.step()
            print("STEPPED", opt._capacity)
        """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0] in ("REFUSED", "STEPPED")
    if result.stdout.startswith("STEPPED"):
        assert result.stdout.split()[1] == "3"


# ------------------------------------ 2. loaded layers pass their constructor's checks
def shared_pairs(depth):
    """[x, x] nested ``depth`` times, each level shared: tiny in a pickle, 2**depth
    elements to walk."""
    x = 1
    for _ in range(depth):
        x = [x, x]
    return x


def test_a_shared_graph_in_a_layer_attribute_is_refused_not_hung(tmp_path):
    conv = Conv2D(1, 2, 3)
    conv.pad = shared_pairs(64)
    model = airi.Sequential([conv, Relu()])
    path = tmp_path / "hang.pkl"
    path.write_bytes(v2_file(pickle.dumps(model, protocol=4)))
    assert len(path.read_bytes()) < 3000
    message = load_limited(path, then="print(obj)")
    assert "Conv2D.pad" in message


def test_a_shared_graph_anywhere_is_refused(tmp_path):
    path = tmp_path / "graph.pkl"
    path.write_bytes(v2_file(pickle.dumps({"history": shared_pairs(60)}, protocol=4)))
    message = load_limited(path, then="print(obj)")
    assert "history" in message and "elements" in message


def test_nesting_depth_is_bounded(tmp_path):
    x = []
    for _ in range(300):
        x = [x]
    path = tmp_path / "deep.pkl"
    path.write_bytes(v2_file(pickle.dumps({"deep": x}, protocol=4)))
    with pytest.raises(airi.ModelFileError, match="deep"):
        airi.load(path)
    # ordinary nesting and ordinary sizes load
    ok = {"a": [[[[1.0]]]], "b": list(range(100_000)), "c": [[0.5] * 100] * 100}
    airi.save(ok, tmp_path / "ok.pkl")
    assert airi.load(tmp_path / "ok.pkl") == ok


BAD_LAYER_STATES = [
    (lambda: Conv2D(1, 2, 3), "pad", [1, 1]),
    (lambda: Conv2D(1, 2, 3), "stride", (0, 1)),
    (lambda: Conv2D(1, 2, 3), "filter_size", (3, 3.0)),
    (lambda: Conv2D(1, 2, 3), "in_channels", 5),          # W is (2, 1, 3, 3)
    (lambda: Conv2D(1, 2, 3), "num_filters", -2),
    (lambda: Conv2D(1, 2, 3), "bias", None),
    (lambda: Conv2D(1, 2, 3), "training", "yes"),
    (lambda: Linear(3, 2), "hidden_size", 4),              # W is (3, 2)
    (lambda: Linear(3, 2), "reg", "0.1"),
    (lambda: Linear(3, 2), "W", None),
    (lambda: BatchNorm2D(3), "running_var", np.ones(4, np.float32)),
    (lambda: BatchNorm2D(3), "running_mean", np.zeros(3, np.int64)),
    (lambda: BatchNorm1D(3), "eps", -1.0),
    (lambda: BatchNorm1D(3), "momentum", 2.0),
    (lambda: MaxPool2D(2), "pool_size", (0, 2)),
    (lambda: AvgPool2D(2), "stride", 2),
    (lambda: Dropout(0.5), "p", 1.5),
    (lambda: LeakyRelu(0.1), "alpha", [0.1]),
    (lambda: Softmax(), "loss_function", 3),
    (lambda: Relu(), "params", ["W"]),
]


@pytest.mark.parametrize("make, name, value", BAD_LAYER_STATES,
                         ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD_LAYER_STATES)])
def test_a_layer_failing_its_constructor_checks_is_refused(tmp_path, make, name, value):
    layer = make()
    stream = with_state(layer, **{name: value})    # None: the attribute is missing
    path = tmp_path / "bad.pkl"
    path.write_bytes(v2_file(stream))
    with pytest.raises(airi.ModelFileError) as info:
        airi.load(path)
    message = str(info.value)
    assert type(layer).__name__ in message and name in message and str(path) in message


def test_parameter_shapes_must_fit_each_other(tmp_path):
    layer = Linear(3, 2)
    layer.b.__setstate__({"data": np.zeros(5, np.float32), "name": "b"})
    path = tmp_path / "b.pkl"
    path.write_bytes(v2_file(pickle.dumps(layer, protocol=4)))
    with pytest.raises(airi.ModelFileError, match=r"Linear\.b .*\(2,\)"):
        airi.load(path)


def test_sequential_layers_must_be_a_list_of_layers(tmp_path):
    for bad in ("abcdef", [Relu(), 3], (Relu(),)):
        model = airi.Sequential([Relu()])
        path = tmp_path / "seq.pkl"
        path.write_bytes(v2_file(with_state(model, layers=bad)))
        with pytest.raises(airi.ModelFileError, match=r"Sequential\.layers"):
            airi.load(path)


def test_scheduler_and_optimizer_fields_are_checked(tmp_path):
    param = airi.Parameter(np.zeros(3, np.float32))
    opt = airi.optim.SGD([param], lr=0.1, momentum=0.9)
    for changes, name in [({"lr": -1.0}, "lr"), ({"params": [1, 2]}, "params"),
                          ({"state": "x"}, "state")]:
        path = tmp_path / "o.pkl"
        path.write_bytes(v2_file(with_state(opt, **changes)))
        with pytest.raises(airi.ModelFileError, match=f"SGD.{name}"):
            airi.load(path)
    sched = airi.lr_scheduler.StepLR(opt, step_size=2)
    path = tmp_path / "s.pkl"
    path.write_bytes(v2_file(with_state(sched, last_epoch=-5)))
    with pytest.raises(airi.ModelFileError, match=r"StepLR\.last_epoch"):
        airi.load(path)


def test_every_kind_of_layer_still_round_trips(tmp_path):
    from test_serialization import small_cnn
    model = small_cnn()
    airi.save(model, tmp_path / "m.pkl")
    loaded = airi.load(tmp_path / "m.pkl")
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(model.eval().forward(x), loaded.eval().forward(x))


# ---------------------------------------------------------------- 3. checksums
def test_files_carry_a_checksum_of_their_payload(tmp_path):
    path = tmp_path / "m.pkl"
    airi.save(Linear(4, 3), path)
    header = serialization.read_header(path)
    assert header["format"] == serialization.FORMAT_VERSION == 2
    data = path.read_bytes()
    first, second, payload = data.split(b"\n", 2)
    assert header["crc32"] == f"{zlib.crc32(payload):08x}"
    assert int(header["bytes"]) == len(payload)


def test_a_flipped_bit_in_the_weights_is_refused(tmp_path):
    layer = Linear(64, 32)
    path = tmp_path / "m.pkl"
    airi.save(layer, path)
    data = bytearray(path.read_bytes())
    # a bit in the middle of W's raw bytes (the largest region of the file)
    where = data.index(layer.W.data.tobytes()[:16]) + 1000
    rng = np.random.default_rng(0)
    for bit in rng.integers(0, 8, size=5):
        damaged = bytearray(data)
        damaged[where] ^= 1 << int(bit)
        path.write_bytes(bytes(damaged))
        with pytest.raises(airi.ModelFileError,
                           match="checksum mismatch: the file is damaged") as info:
            airi.load(path)
        assert str(path) in str(info.value)


def test_random_damage_never_loads_silently(tmp_path):
    model = airi.Sequential([Linear(8, 8), BatchNorm1D(8), Linear(8, 2)])
    path = tmp_path / "m.pkl"
    airi.save(model, path)
    data = path.read_bytes()
    start = data.index(b"\n", len(b"AIRI-MODEL\n")) + 1
    rng = np.random.default_rng(1)
    for _ in range(200):
        damaged = bytearray(data)
        for pos in rng.integers(start, len(data), size=rng.integers(1, 4)):
            damaged[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(damaged))
        with pytest.raises(airi.ModelFileError, match="checksum mismatch"):
            airi.load(path)
    for cut in range(start, len(data), 97):
        path.write_bytes(data[:cut])
        with pytest.raises(airi.ModelFileError, match="truncated"):
            airi.load(path)
    path.write_bytes(data + b"x")
    with pytest.raises(airi.ModelFileError):
        airi.load(path)


def test_format_1_files_without_checksum_still_load(tmp_path):
    layer = Linear(3, 2)
    path = tmp_path / "old.pkl"
    path.write_bytes(v1_file(pickle.dumps(layer, protocol=5)))
    loaded = airi.load(path)
    np.testing.assert_array_equal(loaded.W.data, layer.W.data)
    assert serialization.read_header(path)["format"] == 1


@pytest.mark.parametrize("line", [b"format=2 airi=0.1.0\n",
                                  b"format=2 airi=0.1.0 bytes=10 crc32=xyz\n",
                                  b"format=2 airi=0.1.0 bytes=-3 crc32=00000000\n"])
def test_a_format_2_header_without_a_valid_checksum_is_refused(tmp_path, line):
    path = tmp_path / "h.pkl"
    path.write_bytes(b"AIRI-MODEL\n" + line + pickle.dumps(1, protocol=5))
    with pytest.raises(airi.ModelFileError, match="header"):
        airi.load(path)


# ------------------------------------------------------------- 4. stale temp files
def temp_files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


SLOW_SAVE = """
import sys, time, airi
class Slow:
    def __reduce__(self):
        print("WRITING", flush=True)
        time.sleep(600)
        return (int, (0,))
airi.save({"big": bytes(1 << 20), "slow": Slow()}, sys.argv[1])
"""


def start_slow_save(path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    return proc


def age(folder, names, seconds=3600):
    """Make files look old (a stale file's age is one of the two tests)."""
    past = time.time() - seconds
    for name in names:
        os.utime(os.path.join(folder, name), (past, past))


def test_a_killed_save_leaves_a_temp_file_the_next_save_removes(tmp_path):
    path = tmp_path / "model.pkl"
    airi.save(Linear(2, 2), path)
    proc = start_slow_save(path)
    try:
        stale = temp_files(tmp_path)
        assert len(stale) == 1 and stale[0].startswith(".model.pkl.")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert temp_files(tmp_path) == stale          # SIGKILL: nothing could clean up
    age(tmp_path, stale)
    other = tmp_path / ".other.pkl.0123abcd.tmp"  # another target's temp file: kept
    other.write_bytes(b"x")
    age(tmp_path, [other.name])
    airi.save(Linear(2, 2), path)
    assert temp_files(tmp_path) == [other.name]
    assert isinstance(airi.load(path), Linear)


def test_a_temp_file_another_process_is_writing_is_kept(tmp_path):
    path = tmp_path / "model.pkl"
    proc = start_slow_save(path)
    try:
        live = temp_files(tmp_path)
        age(tmp_path, live)                       # even when it looks old
        airi.save(Linear(2, 2), path)
        assert temp_files(tmp_path) == live
        assert isinstance(airi.load(path), Linear)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_old_style_temp_files_are_removed_too(tmp_path):
    """Temp files left by airi before this change (no lock was held: stale)."""
    path = tmp_path / "model.pkl"
    old = tmp_path / ".model.pkl.5f3a9c21.tmp"
    old.write_bytes(b"AIRI-MODEL\n" + bytes(1000))
    age(tmp_path, [old.name])
    recent = tmp_path / ".model.pkl.00c0ffee.tmp"   # could be a writer just starting
    recent.write_bytes(b"")
    unrelated = tmp_path / ".model.pkl.notes.tmp"
    unrelated.write_bytes(b"keep me")
    age(tmp_path, [unrelated.name])
    airi.save(Linear(2, 2), path)
    assert temp_files(tmp_path) == sorted([recent.name, unrelated.name])


# ----------------------------------------------------------------- 5. CIFAR bomb
def tar_gz_with(members):
    """A .tar.gz holding {name: bytes or (declared size, actual bytes)}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_cifar_member_that_inflates_beyond_a_batch_is_refused(tmp_path):
    from airi.datasets import DatasetError
    from airi.datasets.cifar import MAX_BATCH_BYTES
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(tar_gz_with({"data_batch_1": bytes(MAX_BATCH_BYTES + 4096)}))
    assert archive.stat().st_size < 200_000          # a small file ...
    with pytest.raises(DatasetError, match=r"data_batch_1.*at most") as info:
        airi.datasets.load_cifar10(tmp_path)
    assert "not a CIFAR-10 batch" in str(info.value)


def test_cifar_gigabyte_member_is_refused_before_reading(tmp_path):
    """A header announcing 3 GB: refused from the header, under a memory limit."""
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = 3 << 30
    raw = info.tobuf(format=tarfile.GNU_FORMAT) + bytes(1 << 16)
    import gzip
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(gzip.compress(raw))
    result = run_limited(f"""
        import airi
        try:
            airi.datasets.load_cifar10({str(tmp_path)!r})
        except airi.datasets.DatasetError as exc:
            print("REFUSED", exc)
        """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("REFUSED") and "3,221,225,472" in result.stdout


def test_cifar_batch_file_too_large_in_a_folder_is_refused(tmp_path):
    from airi.datasets import DatasetError
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "data_batch_1", "wb") as f:
        f.truncate(1 << 30)                           # sparse: takes no disk
    with pytest.raises(DatasetError, match="data_batch_1"):
        airi.datasets.load_cifar10(tmp_path)


# ------------------------------------------------------------------- fuzz (short)
def test_fuzzing_model_files_gives_a_load_or_a_model_file_error():
    """tools/fuzz_model_files.py, briefly: mutations, truncations and splices of saved
    files (with the checksum fixed up, so the parser is what gets fuzzed, and without),
    each a load or a ModelFileError, under memory and time limits."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", AIRI_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "fuzz_model_files.py"),
         "--iterations", "400", "--seed", "16", "--memory-mb", "1536",
         "--case-seconds", "20"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 failures" in result.stdout


class Gain(airi.layers.Layer):
    """A user's layer with a public class-level default, overridden per instance."""

    gain = 1.0

    def forward(self, x, training=None):
        return x * self.gain

    def backward(self, dout):
        return dout * self.gain


def test_a_user_layer_may_override_a_public_class_default(tmp_path):
    layer = Gain()
    layer.gain = 3.0
    with serialization.safe_classes(Gain):
        airi.save(layer, tmp_path / "g.pkl")
        assert airi.load(tmp_path / "g.pkl").gain == 3.0
        # ... but not a method or a private class setting
        path = tmp_path / "m.pkl"
        path.write_bytes(v2_file(with_state(layer, backward=1)))
        with pytest.raises(airi.ModelFileError, match=r"Gain\.backward"):
            airi.load(path)


def test_the_number_of_objects_a_file_builds_is_bounded(tmp_path, monkeypatch):
    """50 million empty lists fit in a 100 MB file; the loader stops counting at
    MAX_OBJECTS (lowered here to keep the test fast) before memory goes."""
    from airi.serialization import unpickler
    monkeypatch.setattr(unpickler, "MAX_OBJECTS", 1000)
    path = tmp_path / "lists.pkl"
    path.write_bytes(v2_file(b"\x80\x04]" + b"]a" * 1000 + b"."))
    with pytest.raises(airi.ModelFileError, match="more than 1,000 objects"):
        airi.load(path)
    path.write_bytes(v2_file(b"\x80\x04]" + b"]a" * 900 + b"."))
    assert len(airi.load(path)) == 900


def test_resume_from_the_bomb_is_a_one_line_error(tmp_path):
    """--resume reads checkpoints with airi.load: the 117-byte bomb is refused there
    too, as one line and exit status 2, under the memory limit."""
    stream = b"\x80\x04" + new_object("airi.layers.activations", "Relu", {
        "params": b"}", "training": b"\x88",
        "_cache_names": range_op(0, 10 ** 15)}) + b"."
    path = tmp_path / "checkpoint.pkl"
    path.write_bytes(v1_file(stream))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", AIRI_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "airi.train", "--resume", str(path)],
                            cwd=ROOT, env=env, preexec_fn=_limits, capture_output=True,
                            text=True, timeout=TIME_LIMIT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1
    assert "_cache_names" in result.stderr


def rebuilder_cases():
    """Each admitted reconstruction function called with the largest arguments a file
    can give it (sizes that would take terabytes if anything trusted them)."""
    reconstruct = np._core.multiarray._reconstruct
    frombuffer = np._core.numeric._frombuffer
    big = (10 ** 6, 10 ** 6)

    class Forged:
        def __init__(self, value):
            self.value = value

        def __reduce__(self):
            return self.value

    return {
        # an ndarray whose state claims a shape of 10**12 elements but carries no data
        "array state": Forged((reconstruct, (np.ndarray, (0,), b"b"),
                               (1, big, np.dtype("f8"), False, b""))),
        "array of a huge shape": Forged((reconstruct, (np.ndarray, big, b"b"))),
        "frombuffer": Forged((frombuffer, (b"", np.dtype("f8"), big, "C"))),
        "long unicode dtype": Forged((np.dtype, ("U999999", False, True))),
        "complex of a huge int": Forged((complex, (10 ** 400, 0))),
        "long range": Forged((range, (0, 10 ** 18))),
        "slice": Forged((slice, (0, 10 ** 100, 1))),
        "bytearray": Forged((bytearray, (b"x" * 100,))),
        "set of a list": Forged((set, ([1, 2, 3],))),
    }


@pytest.mark.parametrize("name", list(rebuilder_cases()))
def test_every_admitted_rebuilder_stays_within_memory_and_time(tmp_path, name):
    path = tmp_path / "r.pkl"
    path.write_bytes(v2_file(pickle.dumps({"x": rebuilder_cases()[name]}, protocol=4)))
    result = run_limited(f"""
        import airi
        try:
            obj = airi.load({str(path)!r})
        except airi.ModelFileError as exc:
            print("REFUSED", exc)
        else:
            repr(obj); list(obj.values())
            print("LOADED", repr(obj)[:80])
        """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0] in ("REFUSED", "LOADED")
    if name in ("array state", "array of a huge shape", "frombuffer", "long range",
                "complex of a huge int"):
        assert result.stdout.startswith("REFUSED"), result.stdout
