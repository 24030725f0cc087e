"""ONNX export (issue 18): every zoo model and every layer, run by ONNX Runtime, equals
airi's evaluation-mode forward; the graph is valid, named and dynamic in the batch;
export leaves the model as it was; a layer without an exporter is a clear error; the
``python -m airi.export`` command line."""
import copy
import json
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

import airi
from airi import layers as L

from interop_models import (EVERY_LAYER_INPUT, HAVE_NETS, every_layer_model,
                            randomize_batchnorm, walk, zoo_input_shape)

onnx = pytest.importorskip("onnx")

needs_nets = pytest.mark.skipif(not HAVE_NETS, reason="Residual / GlobalAvgPool2D "
                                "(issue 15) not on this branch yet")


def ort_session(path_or_proto):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    data = path_or_proto if isinstance(path_or_proto, str) else \
        path_or_proto.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_ort(session, x):
    return session.run(["output"], {"input": x})[0]


def assert_close(actual, expected, rel=1e-5):
    """``max|actual - expected| <= rel * max|expected|`` (relative to the output's
    scale, so values near zero do not make a float32 comparison meaningless)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == np.float32
    scale = float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    assert err <= rel * scale, f"max error {err:.3g} > {rel} x {scale:.3g}"


def check_against_airi(model, input_shape, path, opset=None, rel=1e-5):
    """Export ``model``, run batches of 1 and 7 in ONNX Runtime, compare with airi."""
    airi.onnx.export(model, path, input_shape, opset=opset)
    session = ort_session(str(path))
    rng = np.random.default_rng(7)
    for batch in (1, 7):
        x = rng.standard_normal((batch,) + tuple(input_shape)).astype(np.float32)
        expected = copy.deepcopy(model).forward(x, training=False)
        assert_close(run_ort(session, x), expected, rel)


# ------------------------------------------------------------------------ the zoo
@pytest.mark.parametrize("name", airi.models.available_models())
def test_every_zoo_model_runs_in_onnx_runtime_as_in_airi(name, tmp_path):
    airi.seed(0)
    model = randomize_batchnorm(airi.models.get_model(name))
    check_against_airi(model, zoo_input_shape(name), tmp_path / f"{name}.onnx")


# -------------------------------------------------------------- every layer, by hand
@pytest.mark.parametrize("head", ["softmax", "logsoftmax"])
def test_a_model_with_every_layer_runs_in_onnx_runtime_as_in_airi(head, tmp_path):
    airi.seed(1)
    model = randomize_batchnorm(every_layer_model(head))
    # the softmax compresses differences: compare its input too, through LogSoftmax
    check_against_airi(model, EVERY_LAYER_INPUT, tmp_path / "every.onnx")
    check_against_airi(model[:-1], EVERY_LAYER_INPUT, tmp_path / "logits.onnx")


@pytest.mark.parametrize("layer, shape", [
    (L.Conv2D(2, 3, (2, 4), stride=(3, 2), pad=(0, 3)), (2, 9, 8)),
    (L.Conv2D(2, 3, 1, bias=False), (2, 4, 5)),
    (L.MaxPool2D(3, stride=2), (2, 9, 8)),
    (L.AvgPool2D((2, 3)), (2, 6, 7)),
    (L.Linear(5, 4, bias=False), (5,)),
    (L.BatchNorm1D(5), (5,)),
    (L.LeakyRelu(0.3), (2, 3, 4)),
    (L.Flatten(), (2, 3, 4)),
    (L.Softmax(), (6,)),
], ids=lambda v: type(v).__name__ if isinstance(v, L.Layer) else None)
def test_a_single_layer_exports(layer, shape, tmp_path):
    check_against_airi(randomize_batchnorm(layer), shape, tmp_path / "layer.onnx")


def test_every_public_layer_class_has_an_exporter():
    classes = [cls for cls in vars(L).values() if isinstance(cls, type)
               and issubclass(cls, L.Layer) and cls is not L.Layer]
    assert len(classes) >= 15
    missing = [cls.__name__ for cls in classes if airi.onnx._registered_base(cls) is None]
    assert not missing, f"no ONNX exporter for {missing}"


@needs_nets
def test_residual_global_pool_and_nested_models(tmp_path):
    airi.seed(2)
    block = L.Residual(airi.Sequential(L.Conv2D(4, 4, 3, pad=1), L.BatchNorm2D(4),
                                       L.Relu(), L.Conv2D(4, 4, 3, pad=1)))
    model = randomize_batchnorm(airi.Sequential(
        L.Conv2D(1, 4, 3), block,
        L.Residual(airi.Sequential(L.Conv2D(4, 6, 3, stride=2)),
                   airi.Sequential(L.AvgPool2D(3, stride=2), L.Conv2D(4, 6, 1))),
        L.GlobalAvgPool2D(), airi.Sequential(airi.Sequential(L.Linear(6, 3)))))
    check_against_airi(model, (1, 12, 12), tmp_path / "res.onnx")
    proto = onnx.load(str(tmp_path / "res.onnx"))
    names = {t.name for t in proto.graph.initializer}
    # weights are named as airi's state_dict names them
    assert {"1.body.0.W", "1.body.1.running_var", "2.shortcut.1.W", "4.0.0.W"} <= names
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Add") == 2 and "GlobalAveragePool" in ops


def test_float64_models_export_as_float32(tmp_path):
    airi.seed(3)
    model = randomize_batchnorm(every_layer_model(dtype=np.float64))
    airi.onnx.export(model, tmp_path / "m.onnx", EVERY_LAYER_INPUT)
    x = np.random.default_rng(0).standard_normal((4,) + EVERY_LAYER_INPUT)
    expected = copy.deepcopy(model).forward(x, training=False)
    got = run_ort(ort_session(str(tmp_path / "m.onnx")), x.astype(np.float32))
    assert_close(got, expected)


# ------------------------------------------------------------------ the bundled digits
def test_a_trained_model_predicts_every_test_digit_as_airi_does(tmp_path):
    (X, y), (X_test, y_test) = airi.datasets.load_mnist_subset()
    airi.seed(0)
    model = airi.models.lenet(channels=(6, 12), hidden_size=32)
    opt = airi.optim.Adam(model.parameters(), lr=2e-3)
    airi.Trainer(model, airi.CrossEntropyLoss(), opt, verbose=False).fit(
        (X, y), 1, batch_size=32)
    path = tmp_path / "digits.onnx"
    airi.onnx.export(model, path, (1, 28, 28))
    ours = model.forward(X_test, training=False)
    theirs = run_ort(ort_session(str(path)), X_test)
    assert np.mean(ours.argmax(1) == y_test) > 0.8           # it did learn something
    np.testing.assert_array_equal(theirs.argmax(1), ours.argmax(1))


# ------------------------------------------------------------------------- the graph
def test_the_graph_is_valid_named_dynamic_and_versioned(tmp_path):
    model = airi.models.lenet()
    proto = airi.onnx.export(model, tmp_path / "m.onnx", (1, 28, 28))
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    assert loaded == proto
    onnx.checker.check_model(loaded, full_check=True)
    (inp,), (out,) = loaded.graph.input, loaded.graph.output
    assert (inp.name, out.name) == ("input", "output")
    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    assert dims(inp) == ["batch", 1, 28, 28]
    assert dims(out) == ["batch", 10]
    props = {p.key: p.value for p in loaded.metadata_props}
    assert props["airi_version"] == airi.__version__
    assert props["airi_input_shape"] == "1,28,28"
    assert loaded.producer_name == "airi"
    assert loaded.opset_import[0].version == airi.onnx.DEFAULT_OPSET
    assert [t.name for t in loaded.graph.initializer] == \
        ["0.W", "0.b", "3.W", "3.b", "7.W", "7.b", "9.W", "9.b"]


def test_export_leaves_the_model_as_it_was(tmp_path):
    airi.seed(4)
    model = randomize_batchnorm(every_layer_model())
    x = np.random.default_rng(1).standard_normal((5,) + EVERY_LAYER_INPUT)
    x = x.astype(np.float32)
    model.train()
    model.forward(x)                                  # training caches now exist
    before = pickle.dumps(model)
    caches = [(layer, name, getattr(layer, name)) for layer in walk(model)
              for name in getattr(layer, "_cache_names", ())]
    modes = [getattr(layer, "training", None) for layer in walk(model)]
    airi.onnx.export(model, tmp_path / "m.onnx", EVERY_LAYER_INPUT)
    assert pickle.dumps(model) == before              # parameters, statistics, modes
    assert [getattr(layer, "training", None) for layer in walk(model)] == modes
    assert all(getattr(layer, name) is value for layer, name, value in caches)
    assert model.training


def test_the_export_is_the_eval_network_whatever_the_mode(tmp_path):
    airi.seed(5)
    model = randomize_batchnorm(every_layer_model(dropout=0.9)).train()
    check_against_airi(model, EVERY_LAYER_INPUT, tmp_path / "m.onnx")
    assert model.training


def test_opset(tmp_path):
    model = airi.models.mlp()
    check_against_airi(model, (784,), tmp_path / "13.onnx", opset=airi.onnx.MIN_OPSET)
    assert onnx.load(str(tmp_path / "13.onnx")).opset_import[0].version == 13
    newest = onnx.defs.onnx_opset_version()
    for bad in (12, newest + 1):
        with pytest.raises(ValueError, match=f"opset must be from 13 to {newest}"):
            airi.onnx.export(model, tmp_path / "bad.onnx", (784,), opset=bad)
    for bad in ("17", 17.0, True):
        with pytest.raises(TypeError, match="opset must be an int"):
            airi.onnx.export(model, tmp_path / "bad.onnx", (784,), opset=bad)
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize("shape", [(), (0, 28, 28), (1.5,), "784", None, (1, -28, 28)])
def test_bad_input_shapes_are_refused(shape, tmp_path):
    with pytest.raises(ValueError, match="input_shape must be one sample's shape"):
        airi.onnx.export(airi.models.mlp(), tmp_path / "m.onnx", shape)


def test_an_input_shape_the_model_refuses_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"does not accept input_shape \(1, 32, 32\).*"
                                         r"Linear"):
        airi.onnx.export(airi.models.lenet(), tmp_path / "m.onnx", (1, 32, 32))
    assert not (tmp_path / "m.onnx").exists()


def test_an_int_input_shape_means_features(tmp_path):
    proto = airi.onnx.export(airi.models.mlp(), tmp_path / "m.onnx", 784)
    assert proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 784


def test_a_failed_export_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    with pytest.raises(airi.onnx.OnnxExportError):
        airi.onnx.export(airi.Sequential(L.Relu(), Doubler()), path, (3,))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_a_write_that_fails_midway_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")

    def full_disk(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(airi.onnx.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        airi.onnx.export(airi.models.mlp(), path, (784,))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_export_writes_through_a_symlink_and_keeps_permissions(tmp_path):
    target = tmp_path / "real.onnx"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    airi.onnx.export(airi.models.mlp(), link, (784,))
    assert link.is_symlink() and onnx.load(str(target)).graph.input[0].name == "input"
    assert target.stat().st_mode & 0o777 == 0o640
    with pytest.raises(IsADirectoryError):
        airi.onnx.export(airi.models.mlp(), tmp_path, (784,))


# ------------------------------------------------------------- layers of one's own
class Doubler(L.Layer):
    """A user's layer without an exporter."""

    def forward(self, x, training=None):
        return 2 * x

    def backward(self, dout):
        return 2 * dout


class Scale(L.Layer):
    """A user's layer that exports itself: out = x * s (one factor per feature)."""

    def __init__(self, n):
        super().__init__()
        self.add_param("s", np.linspace(0.5, 2.0, n).astype(np.float32))

    def forward(self, x, training=None):
        return x * self.s.data

    def backward(self, dout):
        return dout * self.s.data

    def to_onnx(self, graph, x):
        return graph.node("Mul", [x, graph.initializer("s", self.s.data)])


def test_a_layer_without_exporter_is_a_clear_error(tmp_path):
    model = airi.Sequential(L.Linear(3, 4), airi.Sequential(L.Relu(), Doubler()))
    with pytest.raises(airi.onnx.OnnxExportError) as info:
        airi.onnx.export(model, tmp_path / "m.onnx", (3,))
    message = str(info.value)
    assert "layer '1.1' (Doubler) cannot be exported" in message
    assert "to_onnx(self, graph, x)" in message and "register_exporter" in message


def test_a_layer_exports_itself_with_to_onnx(tmp_path):
    airi.seed(6)
    model = airi.Sequential(L.Linear(3, 4), Scale(4), L.Tanh())
    check_against_airi(model, (3,), tmp_path / "m.onnx")
    names = {t.name for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    assert "1.s" in names


class Gated(L.Layer):
    """A user's block with sub-layers: y = value(x) * sigmoid(gate(x))."""

    def __init__(self, n):
        super().__init__()
        self.value = L.Linear(n, n)
        self.gate = airi.Sequential(L.Linear(n, n), L.Sigmoid())

    def forward(self, x, training=None):
        return self.value.forward(x, training) * self.gate.forward(x, training)

    def backward(self, dout):
        raise NotImplementedError

    def to_onnx(self, graph, x):
        return graph.node("Mul", [graph.layer(self.value, x, "value"),
                                  graph.layer(self.gate, x, "gate")])


def test_a_users_block_exports_its_sub_layers_with_graph_layer(tmp_path):
    airi.seed(9)
    model = airi.Sequential(L.Linear(3, 4), Gated(4), L.Relu())
    check_against_airi(model, (3,), tmp_path / "m.onnx")
    names = [t.name for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer]
    assert names == ["0.W", "0.b", "1.value.W", "1.value.b", "1.gate.0.W", "1.gate.0.b"]


def test_register_exporter_for_a_class(tmp_path):
    class Tripler(Doubler):
        def forward(self, x, training=None):
            return 3 * x

    @airi.onnx.register_exporter(Tripler)
    def export_tripler(layer, graph, x):
        return graph.node("Mul", [x, graph.initializer("k", np.float32(3.0))])

    try:
        check_against_airi(airi.Sequential(L.Linear(2, 3), Tripler()), (2,),
                           tmp_path / "m.onnx")
    finally:
        airi.onnx._EXPORTERS.pop(Tripler)


def test_a_subclass_uses_its_base_exporter_only_if_forward_is_the_same(tmp_path):
    class NamedRelu(L.Relu):
        pass

    class ClippedRelu(L.Relu):
        def forward(self, x, training=None):
            return np.minimum(super().forward(x, training), 1.0)

    check_against_airi(airi.Sequential(L.Linear(2, 3), NamedRelu()), (2,),
                       tmp_path / "a.onnx")
    with pytest.raises(airi.onnx.OnnxExportError,
                       match="ClippedRelu.*subclasses Relu but overrides forward"):
        airi.onnx.export(airi.Sequential(ClippedRelu()), tmp_path / "b.onnx", (2,))


def test_a_to_onnx_that_returns_nonsense_is_named(tmp_path):
    class Broken(Doubler):
        def to_onnx(self, graph, x):
            graph.node("Relu", [x])
            return "nowhere"

    with pytest.raises(airi.onnx.OnnxExportError, match="layer '0' .Broken.*'nowhere'"):
        airi.onnx.export(airi.Sequential(Broken()), tmp_path / "m.onnx", (2,))


def test_graph_api_misuse_is_named(tmp_path):
    class StringInputs(Doubler):
        def to_onnx(self, graph, x):
            return graph.node("Relu", x)

    class Unnamed(Doubler):
        def to_onnx(self, graph, x):
            return graph.layer(L.Relu(), x, "")

    with pytest.raises(TypeError, match="inputs must be a list of tensor names"):
        airi.onnx.export(airi.Sequential(StringInputs()), tmp_path / "m.onnx", (2,))
    with pytest.raises(ValueError, match="OnnxGraph.layer needs a name"):
        airi.onnx.export(airi.Sequential(Unnamed()), tmp_path / "m.onnx", (2,))


def test_a_to_onnx_that_builds_a_wrong_shape_fails_the_checker(tmp_path):
    class WrongShape(Doubler):
        def to_onnx(self, graph, x):      # drops the feature axis: (N, 2) -> (N,)
            return graph.node("ReduceSum", [x], keepdims=0, axes=[1]) \
                if graph.opset < 13 else graph.node(
                    "ReduceSum", [x, graph.initializer("axes", np.array([1]))], keepdims=0)

    with pytest.raises(airi.onnx.OnnxExportError, match="does not pass the ONNX checker"):
        airi.onnx.export(airi.Sequential(WrongShape()), tmp_path / "m.onnx", (2,))


def test_an_empty_model_exports_as_the_identity(tmp_path):
    check_against_airi(airi.Sequential(), (3, 2), tmp_path / "m.onnx")


# --------------------------------------------------------------- python -m airi.export
def export_main(*argv):
    from airi.export import main
    return main([str(a) for a in argv])


def test_cli_exports_a_saved_model(tmp_path, capsys):
    airi.seed(8)
    model = airi.models.lenet()
    airi.save(model, tmp_path / "model.pkl")
    out = tmp_path / "lenet.onnx"
    assert export_main(tmp_path / "model.pkl", out, "--input-shape", 1, 28, 28) == 0
    assert "wrote" in capsys.readouterr().out
    x = np.random.default_rng(2).standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert_close(run_ort(ort_session(str(out)), x), model.forward(x, training=False))


def test_cli_exports_a_checkpoint_with_its_normalization(tmp_path):
    model = airi.models.mlp()
    opt = airi.optim.SGD(model.parameters(), lr=0.1)
    trainer = airi.Trainer(model, airi.CrossEntropyLoss(), opt, verbose=False)
    trainer.checkpoint_extra = {"normalization": {"mean": [0.5], "std": [0.25]}}
    trainer.save_checkpoint(tmp_path / "checkpoint.pkl")
    assert export_main(tmp_path / "checkpoint.pkl", tmp_path / "m.onnx",
                       "--input-shape", 784, "--opset", 13, "--quiet") == 0
    proto = onnx.load(str(tmp_path / "m.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["airi_normalization"] == '{"mean": [0.5], "std": [0.25]}'
    assert proto.opset_import[0].version == 13


@pytest.mark.parametrize("case, status, message", [
    ("missing", 2, "no such file"),
    ("not_a_model_file", 2, "not an airi model file|AIRI-MODEL|header"),
    ("not_a_model", 2, "holds a dict, not an airi model"),
    ("bad_shape", 2, r"does not accept input_shape \(1, 9, 9\)"),
    ("bad_opset", 2, "opset must be from 13"),
    ("no_args", 2, "required"),
    ("out_dir_missing", 2, "no directory"),
    ("not_exportable", 1, r"\(Doubler\) cannot be exported"),
])
def test_cli_errors(case, status, message, tmp_path, capsys):
    model_path = tmp_path / "model.pkl"
    airi.save(airi.models.lenet(), model_path)
    args = [model_path, tmp_path / "m.onnx", "--input-shape", 1, 28, 28]
    if case == "missing":
        args[0] = tmp_path / "nope.pkl"
    elif case == "not_a_model_file":
        args[0].write_bytes(b"not a model")
    elif case == "not_a_model":
        airi.save({"a": 1}, model_path)
    elif case == "bad_shape":
        args[-3:] = [1, 9, 9]
    elif case == "bad_opset":
        args += ["--opset", 5]
    elif case == "no_args":
        args = []
    elif case == "out_dir_missing":
        args[1] = tmp_path / "no" / "m.onnx"
    elif case == "not_exportable":
        airi.register_safe(Doubler)
        try:
            airi.save(airi.Sequential(Doubler()), model_path)
            assert export_main(*args) == status
        finally:
            airi.serialization.unregister_safe(Doubler)
        err = capsys.readouterr().err
        assert err.startswith("python -m airi.export: error:")
        assert len(err.splitlines()) == 1 and re.search(message, err), err
        return
    assert export_main(*args) == status
    err = capsys.readouterr().err
    assert err.startswith("python -m airi.export: error:")
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_as_a_module_exits_2_on_usage_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "airi.export", str(tmp_path / "x.pkl"),
                           str(tmp_path / "x.onnx"), "--input-shape", "784"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "python -m airi.export: error: no such file" in proc.stderr


# ----------------------------------------------------- python -m airi.train --export-onnx
TRAIN_SHORT = ["--limit", "200", "--model", "two_layer", "--batch-size", "50", "--quiet",
               "--epochs", "1"]


def test_train_cli_writes_model_onnx_beside_model_pkl(tmp_path, capsys):
    from airi.cli import main
    out = tmp_path / "run"
    assert main([*TRAIN_SHORT, "--out", str(out), "--export-onnx"]) == 0
    best = airi.load(out / "model.pkl")
    x = np.random.default_rng(3).standard_normal((5, 1, 28, 28)).astype(np.float32)
    assert_close(run_ort(ort_session(str(out / "model.onnx")), x),
                 best.forward(x, training=False))
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert props["airi_model"] == "two_layer" and props["airi_dataset"] == "mnist-subset"
    assert "airi_normalization" not in props            # the digits are not normalised


def test_train_cli_records_cifar_normalization(tmp_path, capsys):
    from airi.cli import main
    from test_cli import write_small_cifar
    write_small_cifar(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--model",
                 "lenet", "--epochs", "1", "--batch-size", "20", "--out", str(out),
                 "--quiet", "--export-onnx"]) == 0
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    normalization = json.loads(props["airi_normalization"])
    assert len(normalization["mean"]) == 3 and len(normalization["std"]) == 3


def test_train_cli_without_onnx_stops_before_training(tmp_path, capsys, monkeypatch):
    from airi.cli import main

    def no_onnx():
        raise ImportError("airi.onnx.export needs the onnx package: pip install "
                          "'airi[onnx]' (or pip install onnx)")
    monkeypatch.setattr(airi.onnx, "_import_onnx", no_onnx)
    out = tmp_path / "run"
    assert main([*TRAIN_SHORT, "--out", str(out), "--export-onnx"]) == 2
    err = capsys.readouterr().err
    assert "error: --export-onnx: airi.onnx.export needs the onnx package" in err
    assert not (out / "model.pkl").exists()              # nothing was trained


def test_train_cli_help_lists_export_onnx(capsys):
    from airi.cli import main
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--export-onnx" in capsys.readouterr().out


@pytest.mark.parametrize("argv0, prog", [("/usr/bin/airi-export", "airi-export"),
                                         ("/x/airi/export.py", "python -m airi.export"),
                                         ("", "python -m airi.export")])
def test_cli_names_itself_as_it_was_run(argv0, prog):
    from airi.export import prog_name
    assert prog_name(argv0) == prog
