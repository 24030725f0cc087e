"""Weights to and from PyTorch (issue 18): ``airi.interop.torch_state_dict`` and
``load_torch_state_dict`` round trip exactly, use PyTorch's names and layouts, check
every name and shape; with torch installed, a torch.nn model built layer for layer and
loaded with airi's weights computes airi's outputs (training and evaluation mode)."""
import re
from pathlib import Path

import numpy as np
import pytest

import airi
from airi import layers as L
from airi.interop import load_torch_state_dict, torch_state_dict

from interop_models import (EVERY_LAYER_INPUT, HAVE_NETS, every_layer_model,
                            randomize_batchnorm, torch_twin, walk, zoo_input_shape)

needs_nets = pytest.mark.skipif(not HAVE_NETS, reason="Residual / GlobalAvgPool2D "
                                "(issue 15) not on this branch yet")


def models_under_test():
    yield from airi.models.available_models()
    yield "every_layer"


def build(name, seed):
    airi.seed(seed)
    if name == "every_layer":
        return randomize_batchnorm(every_layer_model(), seed), EVERY_LAYER_INPUT
    return randomize_batchnorm(airi.models.get_model(name), seed), zoo_input_shape(name)


# ------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("name", list(models_under_test()))
def test_round_trip_is_exact(name):
    source, _ = build(name, 0)
    target, _ = build(name, 1)                      # other weights, other statistics
    exported = torch_state_dict(source)
    assert load_torch_state_dict(target, exported) is target
    again = torch_state_dict(target)
    assert list(again) == list(exported)
    for key, value in exported.items():
        assert again[key].dtype == value.dtype
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value, err_msg=key)


def test_the_dict_holds_copies():
    model = airi.models.lenet()
    state = torch_state_dict(model)
    state["0.weight"][...] = 7.0
    state["7.weight"][...] = 7.0
    assert not np.any(model[0].W.data == 7.0) and not np.any(model[7].W.data == 7.0)


def test_names_and_layouts_are_pytorchs():
    model = airi.Sequential(L.Conv2D(1, 4, (3, 2)), L.BatchNorm2D(4), L.Relu(),
                            L.MaxPool2D(2), L.Flatten(), L.Dropout(0.5),
                            L.Linear(4 * 13 * 13, 5, bias=False),
                            airi.Sequential(L.BatchNorm1D(5), L.Linear(5, 3)))
    state = torch_state_dict(model)
    assert {k: v.shape for k, v in state.items()} == {
        "0.weight": (4, 1, 3, 2), "0.bias": (4,),
        "1.weight": (4,), "1.bias": (4,), "1.running_mean": (4,), "1.running_var": (4,),
        "1.num_batches_tracked": (),
        "6.weight": (5, 4 * 13 * 13),                 # Linear: (out, in)
        "7.0.weight": (5,), "7.0.bias": (5,), "7.0.running_mean": (5,),
        "7.0.running_var": (5,), "7.0.num_batches_tracked": (),
        "7.1.weight": (3, 5), "7.1.bias": (3,),
    }
    np.testing.assert_array_equal(state["6.weight"], model[6].W.data.T)
    assert state["6.weight"].flags.c_contiguous
    np.testing.assert_array_equal(state["1.weight"], model[1].gamma.data)
    assert state["1.num_batches_tracked"].dtype == np.int64


@needs_nets
def test_residual_names_follow_the_body_and_shortcut_attributes():
    model = airi.Sequential(L.Conv2D(1, 2, 3), L.Residual(
        airi.Sequential(L.Conv2D(2, 2, 3, pad=1), L.BatchNorm2D(2)),
        airi.Sequential(L.Conv2D(2, 2, 1, bias=False))), L.GlobalAvgPool2D())
    keys = list(torch_state_dict(model))
    assert keys == ["0.weight", "0.bias", "1.body.0.weight", "1.body.0.bias",
                    "1.body.1.weight", "1.body.1.bias", "1.body.1.running_mean",
                    "1.body.1.running_var", "1.body.1.num_batches_tracked",
                    "1.shortcut.0.weight"]


def test_a_users_layer_keeps_its_parameter_and_buffer_names():
    class Scale(L.Layer):
        _buffer_names = ("calls",)

        def __init__(self):
            super().__init__()
            self.add_param("weight", np.ones(3, np.float32))
            self.calls = np.zeros(1)

        def forward(self, x, training=None):
            return x * self.weight.data

        def backward(self, dout):
            return dout * self.weight.data

    model = airi.Sequential(L.Linear(2, 3), Scale())
    state = torch_state_dict(model)
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.calls"]
    state["1.weight"] = np.array([1.0, 2.0, 3.0])
    state["1.calls"] = np.array([4.0])
    load_torch_state_dict(model, state)
    np.testing.assert_array_equal(model[1].weight.data, [1, 2, 3])
    np.testing.assert_array_equal(model[1].calls, [4.0])


@needs_nets
def test_a_users_block_names_its_sub_layers_by_attribute():
    torch = pytest.importorskip("torch")

    class Gated(L.Layer):
        def __init__(self):
            super().__init__()
            self.value = L.Linear(4, 4)
            self.gate = airi.Sequential(L.Linear(4, 4), L.Sigmoid())

        def forward(self, x, training=None):
            return self.value.forward(x) * self.gate.forward(x)

        def backward(self, dout):
            raise NotImplementedError

    class TorchGated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.value = torch.nn.Linear(4, 4)
            self.gate = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sigmoid())

        def forward(self, x):
            return self.value(x) * self.gate(x)

    model = airi.Sequential(L.Linear(3, 4), Gated())
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), TorchGated())
    state = torch_state_dict(model)
    assert list(state) == list(twin.state_dict()) == [
        "0.weight", "0.bias", "1.value.weight", "1.value.bias", "1.gate.0.weight",
        "1.gate.0.bias"]
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    with torch.no_grad():
        assert_close(twin(torch.from_numpy(x)).numpy(), model.forward(x), 1e-6)


# ------------------------------------------------------------------------ the checks
def test_missing_and_unexpected_keys_are_named_and_nothing_changes():
    model = airi.models.lenet()
    before = model.state_dict()
    state = torch_state_dict(airi.models.lenet())
    del state["3.bias"]
    state["3.weights"] = state.pop("3.weight")
    with pytest.raises(KeyError) as info:
        load_torch_state_dict(model, state)
    message = str(info.value)
    assert "missing keys ['3.weight', '3.bias']" in message
    assert "unexpected keys ['3.weights']" in message
    for key, value in before.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)


def test_shape_mismatches_name_key_layer_and_both_shapes():
    model = airi.models.lenet()
    before = model.state_dict()
    state = torch_state_dict(airi.models.lenet())
    state["7.weight"] = state["7.weight"].T                     # airi's (in, out) layout
    state["0.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(model, state)
    message = str(info.value)
    assert "'0.bias' of layer 0 (Conv2D): expected shape (16,), got (3,)" in message
    assert re.search(r"'7.weight' of layer 7 \(Linear\): expected shape \(128, 800\), "
                     r"got \(800, 128\) \(PyTorch's Linear weight is \(out_features, "
                     r"in_features\)", message)
    for key, value in before.items():                           # checked, then loaded
        np.testing.assert_array_equal(model.state_dict()[key], value)


def test_values_may_be_anything_with_numpy():
    class FakeTensor:                     # what torch.Tensor offers, without torch
        def __init__(self, array):
            self.array, self.calls = array, []

        def detach(self):
            self.calls.append("detach")
            return self

        def cpu(self):
            self.calls.append("cpu")
            return self

        def numpy(self):
            self.calls.append("numpy")
            return self.array

    source, target = airi.models.mlp(), airi.models.mlp()
    fakes = {k: FakeTensor(v) for k, v in torch_state_dict(source).items()}
    load_torch_state_dict(target, fakes)
    assert fakes["1.weight"].calls == ["detach", "cpu", "numpy"]
    np.testing.assert_array_equal(target[1].W.data, source[1].W.data)


def test_float64_values_are_converted_to_the_models_dtype():
    model = airi.models.mlp()
    state = {k: v.astype(np.float64) + 0.5 for k, v in torch_state_dict(model).items()}
    load_torch_state_dict(model, state)
    assert model[1].W.dtype == np.float32
    np.testing.assert_array_equal(model[1].W.data, state["1.weight"].T.astype(np.float32))


def test_bad_arguments():
    model = airi.models.mlp()
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        load_torch_state_dict(model, [1, 2])
    state = torch_state_dict(model)
    state["1.bias"] = np.array(["a"] * 128)
    with pytest.raises(TypeError, match="'1.bias' must hold numbers"):
        load_torch_state_dict(model, state)


# --------------------------------------------------------------------- with PyTorch
def assert_close(actual, expected, rel):
    scale = float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    assert err <= rel * scale, f"max error {err:.3g} > {rel} x {scale:.3g}"


# Tolerances, relative to the output's largest magnitude. In float64 the two frameworks
# agree to rounding (1e-10 leaves a wide margin): this is what proves every name and
# layout. In float32 each layer agrees to about 1e-6 (two implementations of a ~1000-term
# dot product), and a network compounds it: measured end to end with batch 6, at most
# 9e-7 in evaluation mode and 5e-6 in training mode, where BatchNorm divides by the
# batch's own spread. 1e-6 there would fail on rounding alone, on some CPUs.
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(models_under_test()))
def test_torch_loaded_with_airis_weights_computes_airis_outputs(name, dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model, shape = build(name, 3)
    model.to(dtype)
    for layer in walk(model):
        if isinstance(layer, L.Dropout):
            layer.p = 0.0                 # training mode must be deterministic
    twin = torch_twin(torch, model).to(torch.float64 if dtype == np.float64
                                       else torch.float32)
    twin.load_state_dict({k: torch.from_numpy(v)
                          for k, v in torch_state_dict(model).items()})
    x = np.random.default_rng(5).standard_normal((6,) + shape).astype(dtype)
    rel = TOLERANCE[dtype]
    with torch.no_grad():
        model.eval(), twin.eval()
        assert_close(twin(torch.from_numpy(x)).numpy(), model.forward(x), rel)
        model.train(), twin.train()
        assert_close(twin(torch.from_numpy(x)).numpy(), model.forward(x), rel)
    # both updated their running statistics from the same batch, the same way
    ours, theirs = torch_state_dict(model), twin.state_dict()
    for key, value in ours.items():
        if "running" in key:
            assert_close(theirs[key].numpy(), value, rel)


def test_torch_weights_load_into_airi():
    """The other way: a torch model's own (trained) weights, loaded into airi."""
    torch = pytest.importorskip("torch")
    airi.seed(0)
    model = randomize_batchnorm(every_layer_model(dropout=0.0))
    twin = torch_twin(torch, model)
    torch.manual_seed(1)
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    x = torch.randn(8, *EVERY_LAYER_INPUT)
    for _ in range(3):                       # move weights and statistics off their start
        opt.zero_grad()
        twin(x)[:, 0].sum().backward()
        opt.step()
    load_torch_state_dict(model, twin.state_dict())
    twin.eval()
    with torch.no_grad():
        assert_close(twin(x).numpy(), model.forward(x.numpy(), training=False), 1e-5)
    state = twin.state_dict()
    np.testing.assert_array_equal(model[2].W.data, state["2.weight"].numpy().T)


# ------------------------------------------------------------------------ the README
def readme_section_snippets():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(r"^## Using a model elsewhere\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README has no section 'Using a model elsewhere'"
    return re.findall(r"```python\n(.*?)```", match.group(1), re.S)


def test_readme_snippets_run_as_printed(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    snippets = readme_section_snippets()
    assert len(snippets) >= 3
    namespace = {}
    for code in snippets:                  # one session, as a reader pastes them
        exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.split()
    # as the comments say
    assert printed == ["True", "9", "(128,", "800)", "True", "True", "True"]
