"""Sequential: list behaviour, modes, parameters, state_dict, summary, gradients."""
import pickle

import numpy as np
import pytest

import airi
from airi import Sequential
from airi.layers import (BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten, Linear,
                         MaxPool2D, Relu, Softmax)
from airi.losses import CrossEntropyLoss


def _x(shape, seed=5):
    return np.random.default_rng(seed).standard_normal(shape)


def small_convnet():
    # (N, 1, 8, 8) -> conv3 (4, 6, 6) -> pool (4, 3, 3) -> 36 -> 5
    return Sequential(Conv2D(1, 4, 3), BatchNorm2D(4), Relu(), MaxPool2D(2), Flatten(),
                      Dropout(0.2), Linear(36, 5))


class SeedStyleLayer:
    """A user layer written like the seed's: ``forward(self, x)`` only, no base class."""

    def __init__(self):
        self.params = {}

    def forward(self, x):
        self.x = x
        return 2 * x

    def backward(self, dout):
        return 2 * dout


# --------------------------------------------------------------------- list-like
def test_constructor_forms_and_list_behaviour():
    layers = [Linear(3, 4), Relu(), Linear(4, 2)]
    a, b = Sequential(layers), Sequential(*layers)
    assert len(a) == len(b) == 3 and list(a) == list(b) == layers
    assert a[0] is layers[0] and a[-1] is layers[2] and a[-2] is layers[1]
    head = a[:2]
    assert isinstance(head, Sequential) and list(head) == layers[:2]
    assert list(a[::-1]) == layers[::-1]
    extra = Relu()
    assert a.append(extra) is a and a[-1] is extra and len(a) == 4
    a[3] = Softmax()
    assert isinstance(a[3], Softmax)
    with pytest.raises(IndexError):
        a[10]
    assert len(Sequential()) == 0


def test_rejects_non_layers():
    with pytest.raises(TypeError, match="layer 1.*int"):
        Sequential(Linear(2, 2), 3)
    with pytest.raises(TypeError, match="Sequential"):
        Sequential().append("relu")


def test_forward_backward_chain_matches_layers_by_hand():
    airi.seed(0)
    model = Sequential(Linear(3, 4, dtype=np.float64), Relu(), Linear(4, 2, dtype=np.float64))
    x = _x((5, 3))
    out = model(x)
    h = np.maximum(x @ model[0].W.data + model[0].b.data, 0)
    np.testing.assert_allclose(out, h @ model[2].W.data + model[2].b.data)
    dout = _x((5, 2), seed=6)
    dx = model.backward(dout)
    dh = (dout @ model[2].W.data.T) * (h > 0)
    np.testing.assert_allclose(dx, dh @ model[0].W.data.T)
    np.testing.assert_allclose(model[2].W.grad, h.T @ dout)


def test_seed_style_user_layer_works_inside():
    model = Sequential(SeedStyleLayer(), Linear(2, 1, dtype=np.float64))
    x = _x((3, 2))
    np.testing.assert_allclose(model(x), 2 * x @ model[1].W.data + model[1].b.data)
    assert model.backward(np.ones((3, 1))).shape == (3, 2)
    assert [n for n, _ in model.named_parameters()] == ["1.W", "1.b"]


def test_seed_style_layer_gets_no_training_argument_anywhere():
    """Trainer.fit/evaluate/predict, forward(training=...) and summary pass
    ``training=`` only to layers whose forward takes it (review finding 2)."""
    from airi.sequential import _TAKES_TRAINING, call_forward
    airi.seed(0)
    model = Sequential(Linear(2, 3, dtype=np.float64), SeedStyleLayer())
    x = _x((6, 2))
    y = np.arange(6) % 3
    np.testing.assert_allclose(model.forward(x, training=True),
                               model.forward(x, training=False))
    assert "SeedStyleLayer" in model.summary((2,))
    trainer = airi.Trainer(model, CrossEntropyLoss(),
                           airi.optim.SGD(model.parameters(), lr=0.1), verbose=False)
    history = trainer.fit((x, y), epochs=2, val=(x, y), batch_size=3)
    assert len(history) == 2 and history[-1]["val_loss"] is not None
    assert trainer.evaluate((x, y))["samples"] == 6
    assert trainer.predict(x).shape == (6, 3)
    # The signature is inspected once per class and remembered.
    assert _TAKES_TRAINING[SeedStyleLayer] is False
    assert _TAKES_TRAINING[Linear] is True
    np.testing.assert_array_equal(call_forward(SeedStyleLayer(), x, True), 2 * x)


def test_gradcheck_of_a_seed_style_layer_and_of_non_layers():
    errors = airi.gradcheck(SeedStyleLayer(), _x((3, 2)))   # no params: still a layer
    assert set(errors) == {"input"} and errors["input"] < 1e-8
    errors = airi.gradcheck(Sequential(SeedStyleLayer(), Linear(2, 2)), _x((3, 2)))
    assert max(errors.values()) < 1e-6
    assert airi.gradcheck(CrossEntropyLoss(), (_x((3, 4)), np.array([0, 3, 1])))["input0"] \
        < 1e-6                                               # a loss is still a loss
    with pytest.raises(TypeError, match=r"gradcheck: expected a layer \(forward\(x\) and "
                                        r"backward\(dout\).*or a loss.*got function"):
        airi.gradcheck(lambda x: x ** 2, _x((3, 2)))
    with pytest.raises(TypeError, match="got int"):
        airi.gradcheck(3, _x((3, 2)))


def test_nested_sequential():
    inner = Sequential(Linear(3, 3), Relu())
    model = Sequential(inner, Linear(3, 2))
    assert [n for n, _ in model.named_parameters()] == ["0.0.W", "0.0.b", "1.W", "1.b"]
    assert set(model.state_dict()) == {"0.0.W", "0.0.b", "1.W", "1.b"}
    model.eval()
    assert inner.training is False and inner[0].training is False
    assert model(_x((2, 3)).astype(np.float32)).shape == (2, 2)


# -------------------------------------------------------------------- parameters
def test_named_parameters_and_parameters():
    model = small_convnet()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.W", "0.b", "1.gamma", "1.beta", "6.W", "6.b"]
    assert [id(p) for p in model.parameters()] == \
        [id(p) for _, p in model.named_parameters()]
    assert model.params["6.W"] is model[6].W


def test_shared_parameter_listed_once():
    lin = Linear(3, 3)
    model = Sequential(lin, Relu(), lin)
    assert len(model.parameters()) == 2


def test_zero_grad_update_and_to():
    airi.seed(1)
    model = Sequential(Linear(3, 2), BatchNorm1D(2))
    out = model(_x((4, 3)).astype(np.float32))
    model.backward(np.ones_like(out))
    w = model[0].W.data.copy()
    grad = model[0].W.grad.copy()
    model.update(lr=0.5)
    np.testing.assert_allclose(model[0].W.data, w - 0.5 * grad, rtol=1e-6)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(RuntimeError):
        model.backward(np.ones_like(out))
    assert model.to(np.float64) is model
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model[1].running_mean.dtype == np.float64


# ------------------------------------------------------------------------ modes
def test_train_eval_propagate_and_explicit_argument():
    model = small_convnet()
    assert model.eval() is model and model.training is False
    assert all(layer.training is False for layer in model)
    x = _x((3, 1, 8, 8)).astype(np.float32)
    rm = model[1].running_mean.copy()
    a, b = model(x), model(x)
    np.testing.assert_array_equal(a, b)                  # no dropout, running stats
    np.testing.assert_array_equal(model[1].running_mean, rm)
    model.forward(x, training=True)                      # wins for one call
    assert not np.array_equal(model[1].running_mean, rm)
    assert all(layer.training is False for layer in model)
    assert model.train() is model and all(layer.training for layer in model)


def test_layers_added_later_take_the_models_mode():
    model = Sequential(Linear(3, 3), Relu()).eval()
    model.append(Dropout(0.5))
    model.insert(0, BatchNorm1D(3))
    model[2] = Relu()
    assert model.training is False
    assert [layer.training for layer in model] == [False, False, False, False]
    x = _x((4, 3))
    np.testing.assert_array_equal(model(x), model(x))        # eval: no dropout noise
    model.train()
    model.append(Dropout(0.1))
    model[0] = BatchNorm1D(3).eval()
    assert model.training is True and all(layer.training for layer in model)
    assert isinstance(model[1], Linear) and len(model) == 5


def test_a_new_sequential_takes_its_mode_from_its_layers():
    assert Sequential(Linear(2, 2).eval(), Relu().eval()).training is False
    mixed = Sequential(Linear(2, 2).eval(), Relu())
    assert mixed.training is True and mixed[0].training is False   # modes kept
    assert Sequential().training is True and Sequential(SeedStyleLayer()).training is True


# ------------------------------------------------------------------------ errors
def test_forward_and_backward_errors_name_the_failing_layer():
    model = Sequential(Flatten(), Linear(4, 3))
    with pytest.raises(ValueError, match=r"^Sequential layer 1 \(Linear\): Linear: expected "
                                         r"input of shape \(\*, 4\), got \(2, 5\)") as info:
        model(_x((2, 5)))
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value.__cause__).startswith("Linear: expected")
    with pytest.raises(RuntimeError, match=r"^Sequential layer 1 \(Linear\): Linear: "
                                           "backward called before forward"):
        model.backward(np.ones((2, 3)))
    nested = Sequential(Sequential(Relu(), Linear(4, 3)))
    with pytest.raises(ValueError, match=r"Sequential layer 0 \(Sequential\): Sequential "
                                         r"layer 1 \(Linear\)"):
        nested(_x((2, 5)))


def test_errors_of_custom_classes_keep_their_class_and_attributes():
    class ShapeError(ValueError):
        def __init__(self, message, code=None):
            super().__init__(message)
            self.code = code

    class Picky(SeedStyleLayer):
        def forward(self, x):
            raise ShapeError("too wide", code=7)

    with pytest.raises(ShapeError, match=r"Sequential layer 1 \(Picky\): too wide") as info:
        Sequential(Relu(), Picky())(_x((2, 2)))
    assert info.value.code == 7


# ------------------------------------------------------------------------ state
def test_state_dict_round_trip():
    airi.seed(2)
    model = small_convnet()
    model(_x((4, 1, 8, 8)).astype(np.float32))          # moves the running stats
    state = model.state_dict()
    assert set(state) == {"0.W", "0.b", "1.gamma", "1.beta", "1.running_mean",
                          "1.running_var", "6.W", "6.b"}
    state["0.W"][...] = 7.0                               # copies, not the weights
    assert not np.any(model[0].W.data == 7.0)
    other = small_convnet()
    other.load_state_dict(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)
    x = _x((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(other.eval()(x), model.eval()(x))


def test_load_state_dict_errors_leave_model_untouched():
    model = small_convnet()
    before = model.state_dict()
    state = model.state_dict()
    del state["1.running_var"]
    with pytest.raises(KeyError, match="missing.*1.running_var"):
        model.load_state_dict(state)
    state = model.state_dict()
    state["9.W"] = np.zeros(2)
    with pytest.raises(KeyError, match="unexpected.*9.W"):
        model.load_state_dict(state)
    state = {k: np.zeros_like(v) for k, v in model.state_dict().items()}
    state["6.W"] = np.zeros((5, 36))
    with pytest.raises(ValueError, match=r"6.W.*\(5, 36\).*\(36, 5\)"):
        model.load_state_dict(state)
    for key, value in before.items():                     # nothing was half-loaded
        np.testing.assert_array_equal(model.state_dict()[key], value)


def test_pickle_drops_caches_and_keeps_state():
    model = small_convnet()
    size_before = len(pickle.dumps(model))
    x = _x((64, 1, 8, 8)).astype(np.float32)     # caches of this batch: > 50 kB
    model(x)
    assert len(pickle.dumps(model)) < size_before + 200
    clone = pickle.loads(pickle.dumps(model))
    with pytest.raises(RuntimeError):
        clone.backward(np.ones((64, 5), dtype=np.float32))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(clone.state_dict()[key], value)


# ---------------------------------------------------------------------- summary
def test_summary_of_a_small_convnet():
    model = Sequential(Conv2D(1, 8, 3), Relu(), MaxPool2D(2), Flatten(),
                       Linear(8 * 13 * 13, 10), Softmax())
    text = model.summary((1, 28, 28))
    lines = text.splitlines()
    conv = next(line for line in lines if "Conv2D" in line)
    assert "(None, 8, 26, 26)" in conv and conv.split()[-1] == "80"
    pool = next(line for line in lines if "MaxPool2D" in line)
    assert "(None, 8, 13, 13)" in pool and pool.split()[-1] == "0"
    assert "(None, 1352)" in next(line for line in lines if "Flatten" in line)
    linear = next(line for line in lines if "Linear" in line)
    assert "(None, 10)" in linear and linear.split()[-1] == "13,530"
    total = sum(p.size for p in model.parameters())
    assert total == 80 + 13530
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {total:,}" in text
    assert "Input shape: (None, 1, 28, 28)" in text
    assert text.index("Conv2D") < text.index("MaxPool2D") < text.index("Linear")


def test_summary_counts_buffers_as_non_trainable_params():
    model = Sequential(Linear(4, 3), BatchNorm1D(3), Sequential(BatchNorm1D(3)))
    text = model.summary((4,))
    lines = text.splitlines()
    batchnorm = next(line for line in lines if "BatchNorm1D" in line)
    assert batchnorm.split()[-1] == "12"           # gamma, beta + running mean, var
    nested = next(line for line in lines if "2: Sequential" in line)
    assert nested.split()[-1] == "12"
    assert "Trainable params: 27" in text          # 15 + 6 + 6
    assert "Non-trainable params: 12" in text      # two running means and variances
    assert "Total params: 39" in text


def test_summary_does_not_disturb_caches_stats_or_mode():
    airi.seed(3)
    model = small_convnet()
    x = _x((4, 1, 8, 8)).astype(np.float32)
    dout = _x((4, 5), seed=9).astype(np.float32)
    airi.seed(4)
    model(x)
    state = model.state_dict()
    rng_state = airi._config.get_rng_state()
    text = model.summary((1, 8, 8))
    assert "BatchNorm2D" in text and "(None, 36)" in text
    assert airi._config.get_rng_state() == rng_state
    assert model.training and all(layer.training for layer in model)
    for key, value in state.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)
    dx = model.backward(dout)                             # caches of the real batch
    reference = small_convnet()
    reference.load_state_dict(state)
    airi.seed(4)
    reference(x)
    np.testing.assert_array_equal(dx, reference.backward(dout))


def test_summary_reports_bad_input_shape():
    model = Sequential(Linear(4, 2), Relu())
    with pytest.raises(ValueError, match="summary: layer 0 \\(Linear\\)"):
        model.summary((5,))


def test_repr_lists_layers():
    text = repr(Sequential(Linear(2, 3), Dropout(0.25)))
    assert text.startswith("Sequential(") and "(0): Linear" in text
    assert "(1): Dropout(p=0.25)" in text


# ----------------------------------------------------------------- gradients
def test_gradcheck_of_a_small_sequential():
    airi.seed(5)
    model = Sequential(Conv2D(2, 3, 3, pad=1, bias=False), BatchNorm2D(3), Relu(),
                       Dropout(0.3), Flatten(), Linear(3 * 4 * 4, 4), BatchNorm1D(4))
    errors = airi.gradcheck(model, _x((3, 2, 4, 4)))
    assert set(errors) == {"input", "0.W", "1.gamma", "1.beta", "5.W", "5.b",
                           "6.gamma", "6.beta"}
    # 5.b feeds a BatchNorm: its true gradient is 0, compared relative to ~0.
    for name, err in errors.items():
        if name != "5.b":
            assert err < 1e-5, (name, err)
    # Eval mode: BatchNorm and Dropout (which keep their backward in eval mode).
    model = Sequential(BatchNorm1D(3), Dropout(0.5), BatchNorm1D(3))
    model(_x((4, 3)))                                   # non-trivial running stats
    errors = airi.gradcheck(model.eval(), _x((3, 3)))
    assert set(errors) == {"input", "0.gamma", "0.beta", "2.gamma", "2.beta"}
    assert max(errors.values()) < 1e-6


def test_a_convnet_with_batchnorm_overfits_a_tiny_batch(each_backend):
    airi.seed(6)
    x = _x((8, 1, 8, 8)).astype(np.float32)
    y = np.arange(8) % 5
    model = Sequential(Conv2D(1, 4, 3), BatchNorm2D(4), Relu(), MaxPool2D(2), Flatten(),
                       Dropout(0.1), Linear(36, 5))
    loss = CrossEntropyLoss()
    first = None
    for _ in range(60):
        value = loss(model(x), y)
        first = value if first is None else first
        model.backward(loss.backward())
        model.update(lr=0.1)
        model.zero_grad()
    assert loss(model(x, training=False), y) < 0.1 * first
