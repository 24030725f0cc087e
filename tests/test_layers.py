"""The layers of airi.layers: gradients, backends, dtypes, modes and bad input."""
import pickle

import numpy as np
import pytest

import airi
import airi.functional
from airi import _backend, _planner
from airi.gradcheck import numerical_gradient
from airi.layers import (AvgPool2D, Conv2D, Flatten, LeakyRelu, Linear, LogSoftmax,
                         MaxPool2D, ReLU, Relu, Sigmoid, Softmax, Tanh)

TOL = 1e-6


def away_from_zero(a, margin=0.05):
    """Push values out of (-margin, margin): kinks (ReLU at 0) break central differences."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.abs(a) < margin, np.where(a < 0, -margin, margin) + a, a)


def distinct(shape, rng):
    """Distinct values (a shuffled, spread-out range): no ties inside max-pool windows."""
    values = rng.permutation(int(np.prod(shape))).astype(np.float64)
    return (values / values.size - 0.5).reshape(shape) * 4


def assert_gradcheck(layer, x, **kwargs):
    errors = airi.gradcheck(layer, x, **kwargs)
    assert errors, "gradcheck returned nothing"
    assert "input" in errors
    for name, err in errors.items():
        assert err < TOL, f"{layer!r}: {name} relative error {err:.2e}"
    return errors


# ---------------------------------------------------------------- gradients
CONV_CASES = [
    # N, C, H, W, F, filter_size, stride, pad, bias
    (2, 3, 5, 5, 2, 3, 1, 0, True),
    (2, 2, 6, 7, 3, (3, 2), (2, 1), (1, 0), True),
    (1, 3, 7, 7, 2, 3, 2, 1, False),
    (2, 4, 4, 5, 3, 1, 1, 0, True),          # 1x1 fast path
    (1, 2, 5, 5, 2, 1, 2, 1, True),          # 1x1 through im2col (stride, pad)
    (1, 1, 6, 6, 2, (2, 4), (1, 2), (2, 1), True),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradcheck(each_backend, rng, case):
    N, C, H, W, F, k, s, p, bias = case
    layer = Conv2D(C, F, k, stride=s, pad=p, bias=bias)
    x = rng.standard_normal((N, C, H, W))
    errors = assert_gradcheck(layer, x)
    assert set(errors) == ({"input", "W", "b"} if bias else {"input", "W"})


@pytest.mark.parametrize("bias,reg", [(True, 0.0), (True, 0.3), (False, 0.1)])
def test_linear_gradcheck(rng, bias, reg):
    layer = Linear(5, 4, bias=bias, reg=reg)
    x = rng.standard_normal((3, 5))
    # gradcheck sums forward(x) * dout, so add the L2 term by hand: the layer's dW
    # includes 2*reg*W, the gradient of reg * sum(W**2).
    errors = airi.gradcheck(layer, x)
    assert errors["input"] < TOL
    if bias:
        assert errors["b"] < TOL
    if reg == 0:
        assert errors["W"] < TOL
    else:
        layer64 = Linear(5, 4, bias=bias, reg=0.0, dtype=np.float64)
        layer64.W.data = layer.W.data.astype(np.float64)
        dout = rng.standard_normal((3, 4))
        layer64.forward(x)
        layer64.backward(dout)
        plain = layer64.W.grad.copy()
        layer64.reg = reg
        layer64.forward(x)
        layer64.backward(dout)
        np.testing.assert_allclose(layer64.W.grad - plain, 2 * reg * layer64.W.data,
                                   rtol=1e-12, atol=1e-12)


POOL_CASES = [
    # N, C, H, W, pool_size, stride
    (2, 3, 4, 4, 2, None),
    (1, 2, 7, 7, 3, 2),        # overlapping windows
    (2, 1, 5, 8, (2, 3), (1, 2)),
    (1, 2, 6, 5, (3, 1), None),
]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_pool_gradcheck(each_backend, rng, cls, case):
    N, C, H, W, k, s = case
    x = distinct((N, C, H, W), rng)
    assert_gradcheck(cls(k, stride=s), x)


@pytest.mark.parametrize("layer", [Relu(), LeakyRelu(0.1), Sigmoid(), Tanh()],
                         ids=lambda l: type(l).__name__)
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 4)])
def test_activation_gradcheck(rng, layer, shape):
    x = away_from_zero(rng.standard_normal(shape) * 3)
    assert_gradcheck(layer, x)


@pytest.mark.parametrize("shape", [(3, 2, 3, 4), (2, 5), (4, 1, 3)])
def test_flatten_gradcheck_and_shape(rng, shape):
    x = rng.standard_normal(shape)
    out = Flatten()(x)
    assert out.shape == (shape[0], int(np.prod(shape[1:])))
    assert_gradcheck(Flatten(), x)


@pytest.mark.parametrize("cls", [Softmax, LogSoftmax])
@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_softmax_layers_gradcheck(rng, cls, scale):
    x = rng.standard_normal((4, 6)) * scale
    assert_gradcheck(cls(), x)


def test_softmax_label_backward_is_gradient_of_nllloss(rng):
    scores = rng.standard_normal((5, 4))
    y = np.array([0, 3, 1, 1, 2])
    layer = Softmax()
    layer.forward(scores)
    grad = layer.backward(y)

    def loss():
        layer.forward(scores)
        return layer.NLLloss(y)

    numeric = numerical_gradient(loss, scores)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    # And the seed's formula: (probs - onehot) / N.
    probs = layer.forward(scores)
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(layer.backward(y), (probs - onehot) / 5)


def test_softmax_label_backward_keeps_cached_probs(rng):
    layer = Softmax()
    scores = rng.standard_normal((3, 4))
    y = np.array([1, 0, 3])
    layer.forward(scores)
    loss_before = layer.NLLloss(y)
    layer.backward(y)
    assert layer.NLLloss(y) == loss_before  # the seed modified its cache in place


def test_softmax_does_not_modify_its_input(rng):
    scores = rng.standard_normal((3, 4))
    copy = scores.copy()
    Softmax()(scores)
    LogSoftmax()(scores)
    np.testing.assert_array_equal(scores, copy)


def test_softmax_extreme_logits_are_finite():
    scores = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]])
    for dtype in (np.float32, np.float64):
        layer = Softmax()
        probs = layer(scores.astype(dtype))
        assert np.all(np.isfinite(probs))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
        assert np.isfinite(layer.NLLloss(np.array([0, 2])))
        assert np.isfinite(layer.NLLloss(np.array([1, 0])))  # prob underflows to 0
        assert np.all(np.isfinite(layer.backward(np.array([1, 0]))))
        logp = LogSoftmax()(scores.astype(dtype))
        assert np.all(np.isfinite(logp))
        np.testing.assert_allclose(logp[0], [0.0, -2000.0, -1000.0], rtol=1e-6)


# ------------------------------------------------------------------ backends
def _run(layer, x, dout):
    out = layer.forward(x)
    dx = layer.backward(dout)
    grads = {name: p.grad.copy() for name, p in layer.params.items()}
    return out, dx, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make,shape", [
    (lambda: Conv2D(3, 4, 3, stride=1, pad=1), (2, 3, 6, 6)),
    (lambda: Conv2D(2, 3, (3, 2), stride=(2, 1), pad=(0, 1)), (2, 2, 7, 5)),
    (lambda: Conv2D(4, 2, 1), (2, 4, 3, 3)),
    (lambda: MaxPool2D(2), (2, 3, 6, 6)),
    (lambda: MaxPool2D(3, stride=2), (2, 3, 7, 7)),
    (lambda: AvgPool2D((2, 3), stride=1), (2, 3, 5, 6)),
])
def test_compiled_matches_numpy(rng, make, shape, dtype):
    if "cython" not in _backend.available_backends():
        pytest.skip("compiled kernels not built")
    airi.seed(3)
    layer = make().to(dtype)
    x = distinct(shape, rng).astype(dtype)
    dout = rng.standard_normal(layer.forward(x).shape).astype(dtype)
    results = {}
    for name in ("numpy", "cython"):
        with _backend.use_backend(name):
            results[name] = _run(layer, x, dout)
    (o1, d1, g1), (o2, d2, g2) = results["numpy"], results["cython"]
    assert o1.dtype == o2.dtype == dtype and d1.dtype == d2.dtype == dtype
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(o1, o2, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(d1, d2, rtol=rtol, atol=rtol)
    for name in g1:
        np.testing.assert_allclose(g1[name], g2[name], rtol=rtol, atol=rtol)


def test_conv2d_matches_direct_cross_correlation(each_backend, rng):
    layer = Conv2D(2, 3, (3, 2), stride=(2, 1), pad=(1, 0), dtype=np.float64)
    layer.b.data = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 6, 5))
    out = layer(x)
    W, b = layer.W.data, layer.b.data
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    Ho, Wo = (6 + 2 - 3) // 2 + 1, (5 - 2) // 1 + 1
    expected = np.empty((2, 3, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            window = xp[:, :, 2 * i:2 * i + 3, j:j + 2]
            expected[:, :, i, j] = np.einsum("nchw,fchw->nf", window, W) + b
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_pools_match_direct_computation(each_backend, rng):
    x = distinct((2, 3, 5, 7), rng)
    out_max = MaxPool2D((2, 3), stride=(2, 2))(x)
    out_avg = AvgPool2D((2, 3), stride=(2, 2))(x)
    assert out_max.shape == out_avg.shape == (2, 3, 2, 3)
    for i in range(2):
        for j in range(3):
            window = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 3]
            np.testing.assert_allclose(out_max[:, :, i, j], window.max(axis=(2, 3)))
            np.testing.assert_allclose(out_avg[:, :, i, j], window.mean(axis=(2, 3)))


# --------------------------------------------------------------------- dtypes
def _all_layers():
    return [Linear(12, 5), Conv2D(3, 2, 3, pad=1), MaxPool2D(2), AvgPool2D(2), Relu(),
            LeakyRelu(), Sigmoid(), Tanh(), Flatten(), Softmax(), LogSoftmax()]


def _input_for(layer, rng, dtype):
    if isinstance(layer, Linear):
        shape = (3, 12)
    elif isinstance(layer, (Softmax, LogSoftmax)):
        shape = (3, 5)
    else:
        shape = (2, 3, 4, 4)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("layer", _all_layers(), ids=lambda l: type(l).__name__)
def test_float32_stays_float32(each_backend, rng, layer):
    x = _input_for(layer, rng, np.float32)
    out = layer(x)
    assert out.dtype == np.float32
    dx = layer.backward(np.ones_like(out))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    for p in layer.parameters():
        assert p.data.dtype == np.float32
        assert p.grad.dtype == np.float32 and p.grad.shape == p.data.shape


@pytest.mark.parametrize("layer", _all_layers(), ids=lambda l: type(l).__name__)
def test_float64_input_through_float32_params_gives_float64(each_backend, rng, layer):
    x = _input_for(layer, rng, np.float64)
    out = layer(x)
    assert out.dtype == np.float64
    dx = layer.backward(np.ones_like(out))
    assert dx.dtype == np.float64
    for p in layer.parameters():
        assert p.data.dtype == np.float32  # params untouched by a float64 input
        assert p.grad.dtype == np.float32


def test_float64_input_is_not_downcast(rng):
    layer = Linear(4, 3)
    x = rng.standard_normal((2, 4))
    expected = x @ layer.W.data.astype(np.float64) + layer.b.data.astype(np.float64)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-13)


def test_dtype_keyword_and_default_dtype():
    assert Linear(3, 2).W.dtype == np.float32
    assert Conv2D(1, 2, 3, dtype=np.float64).W.dtype == np.float64
    airi.set_default_dtype(np.float64)
    layer = Conv2D(1, 2, 3)
    assert layer.W.dtype == np.float64 and layer.b.dtype == np.float64
    assert layer.to(np.float32) is layer
    assert layer.W.dtype == np.float32 and layer.b.dtype == np.float32


def test_params_are_read_when_called(rng):
    layer = Linear(3, 2)
    layer.W.data = np.ones((3, 2), dtype=np.float64)
    x = np.ones((1, 3), dtype=np.float32)
    np.testing.assert_allclose(layer(x), [[3.0, 3.0]])
    conv = Conv2D(1, 1, 1, bias=False)
    conv.W.data = np.full((1, 1, 1, 1), 2.0, dtype=np.float32)
    np.testing.assert_allclose(conv(np.ones((1, 1, 2, 2), np.float32)), 2.0)


# ------------------------------------------------------------ API and modes
def test_parameter_shapes_and_names():
    lin = Linear(input_size=7, hidden_size=3)
    assert lin.W.shape == (7, 3) and lin.b.shape == (3,)
    assert set(lin.params) == {"W", "b"} and len(lin.parameters()) == 2
    conv = Conv2D(in_channels=3, num_filters=5, filter_size=(3, 2))
    assert conv.W.shape == (5, 3, 3, 2) and conv.b.shape == (5,)
    assert set(Linear(2, 2, bias=False).params) == {"W"}
    for layer in (Relu(), Flatten(), MaxPool2D(), Softmax()):
        assert layer.params == {} and layer.parameters() == []
    assert ReLU is Relu
    assert airi.layers.Conv2D is airi.Conv2D


def test_update_and_zero_grad(rng):
    layer = Linear(4, 2)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    layer(x)
    layer.backward(np.ones((3, 2), np.float32))
    W_before, dW = layer.W.data.copy(), layer.W.grad.copy()
    layer.update(lr=0.5)
    np.testing.assert_allclose(layer.W.data, W_before - 0.5 * dW, rtol=1e-6)
    layer.zero_grad()
    assert layer.W.grad is None and layer.b.grad is None and layer.x is None
    with pytest.raises(RuntimeError, match="Linear: backward called before forward"):
        layer.backward(np.ones((3, 2), np.float32))


@pytest.mark.parametrize("layer", _all_layers(), ids=lambda l: type(l).__name__)
def test_backward_before_forward_raises(layer):
    with pytest.raises(RuntimeError, match=type(layer).__name__):
        layer.backward(np.ones((3, 5), np.float32))


@pytest.mark.parametrize("layer", [l for l in _all_layers() if not isinstance(l, Softmax)],
                         ids=lambda l: type(l).__name__)
def test_eval_forward_caches_nothing(rng, layer):
    x = _input_for(layer, rng, np.float32)
    layer.eval()
    out = layer(x)
    with pytest.raises(RuntimeError):
        layer.backward(np.ones_like(out))
    # An explicit training=True wins for that call.
    out = layer.forward(x, training=True)
    assert layer.backward(np.ones_like(out)).shape == x.shape


def test_softmax_keeps_probs_in_eval_mode(rng):
    layer = Softmax().eval()
    layer(rng.standard_normal((2, 3)))
    assert np.isfinite(layer.NLLloss(np.array([0, 2])))


def test_pickle_drops_caches(rng):
    layer = Conv2D(2, 3, 3)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    out = layer(x)
    layer.backward(np.ones_like(out))
    clone = pickle.loads(pickle.dumps(layer))
    assert clone.cols is None and clone.W.grad is None
    np.testing.assert_array_equal(clone(x), out)


def test_initialisation_is_seeded_and_scaled():
    airi.seed(7)
    a = Conv2D(16, 32, 3).W.data
    airi.seed(7)
    b = Conv2D(16, 32, 3).W.data
    np.testing.assert_array_equal(a, b)
    assert abs(a.std() - np.sqrt(2.0 / (16 * 9))) < 0.1 * np.sqrt(2.0 / (16 * 9))
    lin = Linear(400, 300)
    assert abs(lin.W.data.std() - np.sqrt(2.0 / 400)) < 0.05 * np.sqrt(2.0 / 400)
    np.testing.assert_array_equal(lin.b.data, 0.0)
    xav = Linear(400, 300, init="xavier")
    assert abs(xav.W.data.std() - np.sqrt(2.0 / 700)) < 0.05 * np.sqrt(2.0 / 700)
    uni = Linear(400, 300, init="xavier_uniform").W.data
    limit = np.sqrt(6.0 / 700)
    assert uni.max() <= limit and uni.min() >= -limit and uni.max() > 0.9 * limit
    with pytest.raises(ValueError, match="unknown init"):
        Linear(2, 2, init="orthogonal-ish")


def test_init_functions():
    airi.seed(0)
    w = airi.init.kaiming_normal((64, 32, 3, 3), dtype=np.float64)
    assert w.shape == (64, 32, 3, 3) and w.dtype == np.float64
    assert airi.init.compute_fans((64, 32, 3, 3)) == (32 * 9, 64 * 9)
    assert airi.init.compute_fans((10, 4)) == (10, 4)
    assert airi.init.glorot_uniform((3, 3)).dtype == np.float32
    np.testing.assert_array_equal(airi.init.zeros((4,)), 0.0)


# ----------------------------------------------------------------- bad input
def test_bad_input_messages(rng):
    f32 = np.float32
    conv = Conv2D(in_channels=3, num_filters=4, filter_size=3)
    with pytest.raises(ValueError, match=r"Conv2D: expected \(N, C, H, W\) input \(4-D\), got "
                                         r"shape \(3, 8, 8\); a batch of one-channel images "
                                         r"needs a channel axis: x\[:, None\]"):
        conv(np.zeros((3, 8, 8), f32))
    with pytest.raises(ValueError, match=r"Conv2D: expected input of shape \(\*, 3, \*, \*\), "
                                         r"got \(2, 1, 8, 8\)"):
        conv(np.zeros((2, 1, 8, 8), f32))
    with pytest.raises(ValueError, match="Conv2D.*float"):
        conv(np.zeros((2, 3, 8, 8), np.int64))
    with pytest.raises(ValueError, match="Conv2D.*float"):
        conv(np.zeros((2, 3, 8, 8), object))
    with pytest.raises(ValueError, match="Conv2D.*float32 or float64"):
        conv(np.zeros((2, 3, 8, 8), np.float16))
    with pytest.raises(ValueError, match=r"Conv2D: input of shape \(1, 3, 2, 2\)"):
        conv(np.zeros((1, 3, 2, 2), f32))
    lin = Linear(input_size=9216, hidden_size=120)
    with pytest.raises(ValueError, match=r"Linear: expected input of shape \(\*, 9216\), "
                                         r"got \(2, 100\)"):
        lin(np.zeros((2, 100), f32))
    with pytest.raises(ValueError, match=r"Linear: expected a 2-D input \(N, 9216\), got shape "
                                         r"\(2, 16, 24, 24\); add a Flatten\(\)"):
        lin(np.zeros((2, 16, 24, 24), f32))
    with pytest.raises(ValueError, match=r"MaxPool2D: expected \(N, C, H, W\) input \(4-D\)"):
        MaxPool2D()(np.zeros((2, 4, 4), f32))
    with pytest.raises(ValueError, match=r"AvgPool2D: input of shape \(1, 1, 2, 2\) is smaller"):
        AvgPool2D(3)(np.zeros((1, 1, 2, 2), f32))
    with pytest.raises(ValueError, match="Relu.*float"):
        Relu()(np.arange(4))
    with pytest.raises(ValueError, match="Flatten"):
        Flatten()(np.zeros(5, f32))
    with pytest.raises(ValueError, match=r"Softmax: expected scores of shape \(N, C\)"):
        Softmax()(np.zeros((2, 3, 4), f32))
    # dout of the wrong shape
    out = conv(np.zeros((2, 3, 8, 8), f32))
    with pytest.raises(ValueError, match=r"Conv2D: backward expected dout of shape "
                                         r"\(2, 4, 6, 6\), got \(2, 4, 6\)"):
        conv.backward(np.zeros(out.shape[:3], f32))
    # constructor arguments
    with pytest.raises(ValueError, match="filter_size"):
        Conv2D(3, 4, (3, 3, 3))
    with pytest.raises(ValueError, match="stride"):
        Conv2D(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match="MaxPool2D"):
        MaxPool2D(0)


def test_check_input_describes_the_layout_and_hints_at_the_fix():
    from airi.layers.base import Layer

    class Custom(Layer):
        def forward(self, x, training=None):
            return self._check_input(x, ndim=3, expected="(N, C, L)")

    with pytest.raises(ValueError, match=r"^Custom: expected \(N, C, L\) input \(3-D\), got "
                                         r"shape \(2, 5\)$"):
        Custom()(np.zeros((2, 5), np.float32))
    pool = MaxPool2D()
    with pytest.raises(ValueError, match=r"x\.reshape\(-1, 1, 28, 28\)"):
        pool(np.zeros((2, 784), np.float32))      # flat images given to a 4-D layer
    with pytest.raises(ValueError, match=r"^Flatten: expected a 3-D input, got shape"):
        Flatten()._check_input(np.zeros((2, 3), np.float32), ndim=3)   # no layout known


@pytest.mark.parametrize("bad", [3.5, 0, -1, True, "3", None])
def test_positive_int_rejects_non_sizes(bad):
    from airi.layers.base import _positive_int
    with pytest.raises(ValueError, match=r"Linear: input_size must be a positive integer, got "):
        _positive_int(bad, "input_size", "Linear")


def test_positive_int_accepts_python_and_numpy_ints():
    from airi.layers.base import _positive_int
    assert _positive_int(np.int64(3), "n", "X") == 3 and type(_positive_int(2, "n", "X")) is int



def test_softmax_label_errors(rng):
    layer = Softmax()
    layer(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"Softmax.NLLloss: labels must be in \[0, 4\)"):
        layer.NLLloss(np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"Softmax.NLLloss: expected labels of shape \(3,\)"):
        layer.NLLloss(np.array([0, 1]))
    with pytest.raises(ValueError, match="one-hot"):
        layer.NLLloss(np.eye(4)[[0, 1, 2]])
    with pytest.raises(ValueError, match="Softmax: backward expects integer labels"):
        layer.backward(np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"Softmax.backward: labels must be in"):
        layer.backward(np.array([-1, 0, 0]))


@pytest.mark.parametrize("make", [
    lambda: airi.layers.Linear(3.5, 2),
    lambda: airi.layers.Linear(3, 0),
    lambda: airi.layers.Linear(True, 2),
    lambda: airi.layers.Conv2D(1.5, 2, 3),
    lambda: airi.layers.Conv2D(1, -2, 3),
])
def test_layer_sizes_must_be_positive_ints(make):
    with pytest.raises(ValueError, match="must be a positive integer"):
        make()


# ------------------------------------ Conv2D: direct convolution == im2col + GEMM
DIRECT_LAYER_CASES = [
    # (N, C, H, W, F, k, pad): which passes go direct depends on the shape rule in
    # airi._planner.direct_passes; together these cover every combination
    (5, 16, 14, 14, 32, 5, 0),     # LeNet conv2: forward + dW direct, dx by col2im
    (2, 16, 16, 17, 16, 5, 0),     # all three direct
    (2, 16, 16, 16, 48, 3, 1),     # all three direct, 3x3, F = 48
    (4, 3, 12, 12, 16, 5, 0),      # C = 3: dx by col2im (dW: direct on AVX2 only)
    (3, 16, 9, 10, 48, 3, 1),      # small image: dx by col2im
    (2, 32, 8, 8, 64, 3, 1),
    (3, 16, 10, 10, 16, 7, 3),
    (2, 16, 16, 16, 16, 4, 1),     # kernel width 4: dW by GEMM, dx direct
    (9, 16, 6, 6, 32, 3, 0),       # more samples than a chunk of some threads
]


def _passes(layer, x, algorithm):
    """(forward, dx, dW): which passes of ``layer`` on ``x`` run ``algorithm``."""
    plan = airi.functional.conv2d_plan(x, layer.W.data, layer.stride, layer.pad)
    return tuple(a == algorithm for a in plan)


def _every_direct_pass(dtype, C, F, kernel, stride, pad, H, W):
    """A plan that runs every pass the direct kernels can do (whatever the speed rule of
    this CPU says), so each kernel path is checked on every machine."""
    from airi import _backend
    (kh, kw), (ph, pw) = kernel, pad
    if _backend.backend() != "cython" or np.dtype(dtype) != np.float32 or \
            tuple(stride) != (1, 1) or F % 16:
        return False, False, False
    return True, C % 16 == 0 and ph <= kh - 1 and pw <= kw - 1, kw in (3, 5, 7)


def _expected_plan(level, C, H, W, F, k, pad):
    """The speed rule of airi._planner.direct_passes for these test cases."""
    forward = F <= 64
    if level >= 2:
        return (forward, C % 16 == 0 and min(H, W) >= 16 and (k - 1) * 4 <= min(H, W),
                k in (3, 5, 7) and C >= 16)
    out_pixels = (H + 2 * pad - k + 1) * (W + 2 * pad - k + 1)
    dx = C % 16 == 0 and (F == 16 or k == 3 and F <= 32 and min(H, W) >= 16)
    dw = k in (3, 5, 7) and (F == 16 or F == 32 and C >= 16 and (k >= 5 or out_pixels <= 256))
    return forward, dx, dw


@pytest.mark.parametrize("plan_mode", ["rule", "every"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", DIRECT_LAYER_CASES)
def test_conv2d_direct_path_matches_im2col_path(case, threads, plan_mode, monkeypatch):
    """On the compiled backend Conv2D runs some passes as direct convolutions; the
    results equal the NumPy backend's im2col + GEMM to float32 tolerance, both with this
    CPU's speed rule and with every pass the kernels can do forced direct."""
    from airi import _backend
    if "cython" not in _backend.available_backends():
        pytest.skip("compiled kernels not built")
    if plan_mode == "every":
        from airi._ext import _conv
        if _conv.direct_conv_level() < 0:
            pytest.skip("direct kernels not compiled in")
        monkeypatch.setattr(_planner, "direct_passes", _every_direct_pass)
    N, C, H, W, F, k, pad = case
    airi.set_num_threads(threads)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    results = {}
    for backend in ("cython", "numpy"):
        _backend.set_backend(backend)
        airi.seed(3)
        layer = airi.Conv2D(C, F, k, pad=pad)
        out = layer.forward(x, training=True)
        dout = np.random.default_rng(8).standard_normal(out.shape).astype(np.float32)
        dx = layer.backward(dout)
        results[backend] = (out, dx, layer.W.grad, layer.b.grad)
        if backend == "cython":
            plan = _passes(layer, x, "direct")
    for got, want in zip(results["cython"], results["numpy"]):
        assert got.shape == want.shape and got.dtype == want.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    from airi._ext import _conv
    if plan_mode == "rule" and _conv.direct_conv_level() >= 1:
        assert plan == _expected_plan(_conv.direct_conv_level(), C, H, W, F, k, pad)
    if plan_mode == "every":
        assert plan[0] and plan[2] == (k in (3, 5, 7)), plan


def test_conv2d_direct_path_mixed_dtypes_and_switch():
    """float64 anywhere (weights, input or dout) keeps that pass on im2col + GEMM, and
    set_direct_conv(False) switches the direct kernels off; results stay equal."""
    from airi import _backend
    if "cython" not in _backend.available_backends():
        pytest.skip("compiled kernels not built")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 16, 16, 16)).astype(np.float32)
    airi.seed(5)
    layer = airi.Conv2D(16, 16, 5)
    out = layer.forward(x, training=True)
    dout = rng.standard_normal(out.shape)
    dx64 = layer.backward(dout)                          # float64 dout: im2col backward
    assert dx64.dtype == np.float64
    dx32 = layer.backward(dout.astype(np.float32))
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-4)
    previous = _planner.set_direct_conv(False)
    try:
        assert _passes(layer, x, "direct") == (False, False, False)
        out_im2col = layer.forward(x, training=True)
    finally:
        _planner.set_direct_conv(previous)
    np.testing.assert_allclose(out, out_im2col, rtol=1e-4, atol=1e-4)
    assert _passes(layer.to(np.float64), x, "direct") == (False, False, False)


@pytest.mark.parametrize("shape", [(40, 16, 20, 32, 3, 1), (24, 3, 12, 16, 5, 0)])
def test_conv_weight_gradient_bit_identical_across_thread_counts(each_backend, shape):
    """dW is summed per chunk in chunk order, so it does not depend on which thread ran
    which chunk: the same bits on 1 or 2 threads, run after run (reproducible seeds)."""
    N, C, H, F, k, p = shape
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    conv = Conv2D(C, F, k, pad=p)
    dout = rng.standard_normal(conv.forward(x).shape).astype(np.float32)
    grads = []
    for threads in (1, 2, 2, 2):
        airi.set_num_threads(threads)
        conv.forward(x)
        conv.backward(dout)
        grads.append(conv.W.grad.copy())
    for g in grads[1:]:
        assert np.array_equal(g, grads[0])


# --------------------------------------------- backward_params: no dL/dx wanted
@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("make, x_shape", [
    (lambda: airi.Conv2D(3, 16, 5), (4, 3, 12, 12)),               # im2col path
    (lambda: airi.Conv2D(16, 16, 3, pad=1), (3, 16, 16, 16)),      # direct passes
    (lambda: airi.Conv2D(16, 32, 5), (3, 16, 14, 14)),
    (lambda: airi.Conv2D(4, 6, 1), (2, 4, 5, 5)),                  # pointwise
    (lambda: airi.Conv2D(2, 3, 3, stride=2, pad=1), (2, 2, 7, 7)),
    (lambda: airi.Linear(7, 5), (6, 7)),
    (lambda: airi.layers.BatchNorm2D(3), (4, 3, 5, 5)),             # Layer's default
])
def test_backward_params_matches_backward(make, x_shape, backend):
    """backward_params stores the same parameter gradients as backward and returns
    None (Conv2D and Linear skip computing dx)."""
    from airi import _backend
    if backend not in _backend.available_backends():
        pytest.skip("compiled kernels not built")
    with _backend.use_backend(backend):
        airi.seed(0)
        layer = make()
        x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
        out = layer.forward(x, training=True)
        dout = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
        dx = layer.backward(dout)
        full = [p.grad.copy() for p in layer.parameters()]
        for p in layer.parameters():
            p.grad = None          # (zero_grad would also drop the forward's cache)
        assert layer.backward_params(dout) is None
        assert dx is not None and dx.shape == x.shape
    for p, g in zip(layer.parameters(), full):
        assert p.grad is not None
        np.testing.assert_allclose(p.grad, g, rtol=1e-6, atol=1e-6)


def test_sequential_backward_without_input_grad():
    """Sequential.backward(dout, input_grad=False) gives every layer the same gradients
    and returns None; the default still returns dL/dx."""
    airi.seed(0)
    model = airi.Sequential(airi.Conv2D(1, 16, 3, pad=1), airi.Relu(),
                            airi.layers.Flatten(), airi.Linear(16 * 6 * 6, 3))
    x = np.random.default_rng(0).standard_normal((5, 1, 6, 6)).astype(np.float32)
    out = model.forward(x, training=True)
    dout = np.ones_like(out)
    dx = model.backward(dout)
    assert dx.shape == x.shape
    full = [p.grad.copy() for p in model.parameters()]

    def drop_grads():   # (zero_grad would also drop the forward's caches)
        for p in model.parameters():
            p.grad = None

    drop_grads()
    assert model.backward(dout, input_grad=False) is None
    for p, g in zip(model.parameters(), full):
        np.testing.assert_allclose(p.grad, g, rtol=1e-6, atol=1e-6)
    drop_grads()
    assert model.backward_params(dout) is None
    for p, g in zip(model.parameters(), full):
        np.testing.assert_allclose(p.grad, g, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", [
    (3, 16, 8, 8, 16, 1),      # forward and dx
    (2, 16, 9, 7, 32, 0),      # odd sizes, no padding
    (2, 20, 6, 6, 16, 2),      # padding 2: dx with padding 0
    (2, 3, 10, 10, 16, 1),     # C = 3: forward stays on im2col, dx Winograd
    (2, 16, 8, 8, 8, 1),       # F = 8: dx stays on col2im
])
def test_conv2d_winograd_matches_im2col(case, monkeypatch):
    """With Winograd switched on (set_winograd(True)), Conv2D's forward and dx equal
    the NumPy backend's im2col + GEMM (float32 and float64); the direct convolution is
    switched off so that Winograd runs whatever this CPU's direct rule says."""
    from airi import _backend
    if "cython" not in _backend.available_backends():
        pytest.skip("compiled kernels not built")
    N, C, H, W, F, pad = case
    previous = _planner.set_winograd(True), _planner.set_direct_conv(False)
    try:
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(4)
            x = rng.standard_normal((N, C, H, W)).astype(dtype)
            results = {}
            for backend in ("cython", "numpy"):
                _backend.set_backend(backend)
                airi.seed(3)
                layer = airi.Conv2D(C, F, 3, pad=pad, dtype=dtype)
                out = layer.forward(x, training=True)
                dout = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
                results[backend] = (out, layer.backward(dout), layer.W.grad, layer.b.grad)
                if backend == "cython":
                    assert _passes(layer, x, "winograd")[:2] == (C >= 16, F >= 16)
            tol = 1e-4 if dtype == np.float32 else 1e-10
            for got, want in zip(results["cython"], results["numpy"]):
                np.testing.assert_allclose(got, want, rtol=tol,
                                           atol=tol * np.abs(want).max())
    finally:
        _backend.set_backend("cython")
        _planner.set_winograd(previous[0])
        _planner.set_direct_conv(previous[1])
