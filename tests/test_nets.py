"""Networks beyond a chain (issue 15): nested layers, Residual, GlobalAvgPool2D, ResNets.

PyTorch comparisons are skipped when torch is not installed.
"""
import copy
import pickle

import numpy as np
import pytest

import airi
from airi import Parameter, Sequential
from airi.layers import (BatchNorm1D, BatchNorm2D, Conv2D, Flatten, GlobalAvgPool2D,
                         Layer, Linear, Relu, Residual)


def _x(shape, seed=5, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _rel(a, b):
    """max |a - b| relative to max |b| (the gradcheck measure)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(initial=0.0), 1e-300)
    return float(np.abs(a - b).max(initial=0.0) / scale)


# ------------------------------------------------------------------ a hand-written block
class HandResidual(Layer):
    """The block a user writes (issue 15's report): sub-layers held in a Sequential."""

    def __init__(self, channels):
        super().__init__()
        self.body = Sequential(Conv2D(channels, channels, 3, pad=1, bias=False),
                               BatchNorm2D(channels))
        self.relu = Relu()

    def forward(self, x, training=None):
        return self.relu.forward(self.body.forward(x, training) + x, training)

    def backward(self, dout):
        d = self.relu.backward(dout)
        return self.body.backward(d) + d


class ListAndDictLayer(Layer):
    """Sub-layers in a list, a tuple and a dict, a direct Parameter, a shared layer."""

    def __init__(self):
        super().__init__()
        self.scale = Parameter(np.ones(3, np.float32))  # assigned directly, no add_param
        self.first = Linear(3, 3)
        self.blocks = [Linear(3, 3), Relu(), BatchNorm1D(3)]
        self.pair = (Linear(3, 3),)
        self.heads = {"a": Linear(3, 2)}
        self.again = self.first                       # shared: listed once
        self.extra = [Parameter(np.zeros(2, np.float32))]   # a list of Parameters

    def forward(self, x, training=None):
        x = self.first(x * self.scale.data, training)
        for layer in self.blocks:
            x = layer(x, training)
        return self.heads["a"](self.pair[0](x, training), training)


def test_hand_written_residual_owns_its_sublayers():
    block = HandResidual(2)
    net = Sequential(block, Flatten(), Linear(2 * 4 * 4, 3))
    # the report: 4 parameters found where 6 exist (conv W, gamma, beta here)
    assert [n for n, _ in net.named_parameters()] == [
        "0.body.0.W", "0.body.1.gamma", "0.body.1.beta", "2.W", "2.b"]
    assert len(net.parameters()) == 5
    assert set(net.state_dict()) == {"0.body.0.W", "0.body.1.gamma", "0.body.1.beta",
                                     "0.body.1.running_mean", "0.body.1.running_var",
                                     "2.W", "2.b"}
    net.eval()
    assert block.body[1].training is False and block.body.training is False
    assert block.relu.training is False
    net.train()
    assert block.body[1].training is True


def test_names_order_and_no_parameter_dropped():
    layer = ListAndDictLayer()
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["scale", "extra.0", "first.W", "first.b", "blocks.0.W", "blocks.0.b",
                     "blocks.2.gamma", "blocks.2.beta", "pair.0.W", "pair.0.b",
                     "heads.a.W", "heads.a.b"]
    assert [n for n, _ in layer.named_children()] == [
        "first", "blocks.0", "blocks.1", "blocks.2", "pair.0", "heads.a"]
    assert len(layer.parameters()) == len({id(p) for p in layer.parameters()}) == 12
    assert layer.parameters(recurse=False) == [layer.scale, layer.extra[0]]
    assert "extra.0" in layer.state_dict()
    assert [n for n, _ in layer.named_buffers()] == ["blocks.2.running_mean",
                                                     "blocks.2.running_var"]
    assert "blocks.2.running_var" in layer.state_dict()
    # a list is looked at as it is now: appending registers the new layer
    layer.blocks.append(Linear(3, 3))
    assert "blocks.3.W" in dict(layer.named_parameters())


def test_zero_grad_update_and_to_reach_every_depth():
    airi.set_default_dtype(np.float32)
    layer = ListAndDictLayer()
    out = layer(_x((4, 3), dtype=np.float32))
    assert out.dtype == np.float32
    for p in layer.parameters():
        p.grad = np.ones_like(p.data)
    before = {n: p.data.copy() for n, p in layer.named_parameters()}
    layer.update(lr=0.5)
    for n, p in layer.named_parameters():
        np.testing.assert_allclose(p.data, before[n] - 0.5, rtol=1e-6)
    layer.zero_grad()
    assert all(p.grad is None for p in layer.parameters())
    assert layer.to(np.float64) is layer
    assert all(p.dtype == np.float64 for p in layer.parameters())
    assert all(b.dtype == np.float64 for _, b in layer.named_buffers())
    assert layer(_x((4, 3))).dtype == np.float64


def test_optimizer_updates_nested_parameters():
    airi.seed(0)
    net = Sequential(HandResidual(2), Flatten(), Linear(32, 3))
    opt = airi.optim.SGD(net.parameters(), lr=0.1)
    loss = airi.CrossEntropyLoss()
    conv_w = net[0].body[0].W.data.copy()
    loss(net(_x((4, 2, 4, 4), dtype=np.float32)), np.array([0, 1, 2, 0]))
    net.backward(loss.backward())
    assert net[0].body[0].W.grad is not None
    opt.step()
    assert not np.array_equal(conv_w, net[0].body[0].W.data)


def test_nested_load_state_dict_checks_everything_first():
    airi.seed(1)
    net = Sequential(HandResidual(2), Flatten(), Linear(32, 3))
    net(_x((4, 2, 4, 4), dtype=np.float32))                    # moves running stats
    other = Sequential(HandResidual(2), Flatten(), Linear(32, 3))
    other.load_state_dict(net.state_dict())
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)
    before = other.state_dict()
    block = other[0]
    state = {k[2:]: v for k, v in net.state_dict().items() if k.startswith("0.")}
    del state["body.1.running_var"]
    with pytest.raises(KeyError, match="body.1.running_var"):
        block.load_state_dict(state)
    state = {k[2:]: v for k, v in net.state_dict().items() if k.startswith("0.")}
    state["body.7.W"] = np.zeros(3)
    with pytest.raises(KeyError, match="unexpected.*body.7.W"):
        block.load_state_dict(state)
    state = {k[2:]: np.zeros_like(v) for k, v in net.state_dict().items()
             if k.startswith("0.")}
    state["body.0.W"] = np.zeros((2, 2, 1, 1))
    with pytest.raises(ValueError, match=r"body.0.W.*\(2, 2, 1, 1\)"):
        block.load_state_dict(state)
    for key, value in before.items():                          # nothing half-loaded
        np.testing.assert_array_equal(other.state_dict()[key], value)


def _trained_resnet(seed=3):
    airi.seed(seed)
    net = airi.models.resnet8(in_channels=1, width=4, num_classes=3)
    opt = airi.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss = airi.CrossEntropyLoss()
    X, y = _x((8, 1, 12, 12), dtype=np.float32), np.arange(8) % 3
    for _ in range(2):
        opt.zero_grad()
        loss(net(X), y)
        net.backward(loss.backward())
        opt.step()
    return net


def test_nested_model_survives_save_and_load(tmp_path):
    net = _trained_resnet()
    path = tmp_path / "resnet.airi"
    airi.save(net, path)
    back = airi.load(path)
    assert [n for n, _ in back.named_parameters()] == [n for n, _ in net.named_parameters()]
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value)
    X = _x((3, 1, 12, 12), seed=9, dtype=np.float32)
    np.testing.assert_array_equal(back.eval()(X), net.eval()(X))
    assert back[3].body[1].training is False
    # pickling and deep copies keep the nesting too
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(clone(X), net(X))
        assert len(clone.parameters()) == len(net.parameters())


def test_nested_eval_mode_and_to_dtype():
    net = _trained_resnet()
    X = _x((3, 1, 12, 12), seed=9, dtype=np.float32)
    net.eval()
    blocks = [layer for layer in net if isinstance(layer, Residual)]
    assert all(not bn.training for b in blocks for bn in b.body if hasattr(bn, "gamma"))
    first = net(X)
    stats = net.state_dict()
    np.testing.assert_array_equal(net(X), first)           # eval: statistics frozen
    for key, value in stats.items():
        np.testing.assert_array_equal(net.state_dict()[key], value)
    net.to(np.float64)
    assert all(v.dtype == np.float64 for v in net.state_dict().values())
    out64 = net(X.astype(np.float64))
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, first, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- Residual
def test_residual_adds_paths_and_names_body_first():
    body = Sequential(Linear(3, 3), Relu())
    block = Residual(body)
    x = _x((4, 3))
    np.testing.assert_allclose(block(x), body(x) + x)
    proj = Residual(Sequential(Linear(3, 2)), Linear(3, 2))
    assert [n for n, _ in proj.named_parameters()] == ["body.0.W", "body.0.b",
                                                       "shortcut.W", "shortcut.b"]
    np.testing.assert_allclose(proj(x), proj.body(x) + proj.shortcut(x))


def test_residual_shape_mismatch_names_both_shapes():
    block = Residual(Linear(3, 2))
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(4, 3\)"):
        block(_x((4, 3)))
    block = Residual(Linear(3, 2), Linear(3, 5))
    with pytest.raises(ValueError, match=r"body.*\(4, 2\).*shortcut.*\(4, 5\)"):
        block(_x((4, 3)))
    with pytest.raises(TypeError, match="body"):
        Residual("conv")
    with pytest.raises(ValueError, match=r"Sequential layer 0 \(Residual\)"):
        Sequential(Residual(Linear(3, 2)))(_x((4, 3)))


def test_residual_backward_sums_both_paths():
    block = Residual(Linear(3, 3), Linear(3, 3))
    x, dout = _x((4, 3)), _x((4, 3), seed=6)
    block(x)
    dx = block.backward(dout)
    expected = dout @ block.body.W.data.T + dout @ block.shortcut.W.data.T
    np.testing.assert_allclose(dx, expected)
    identity = Residual(Linear(3, 3))
    identity(x)
    np.testing.assert_allclose(identity.backward(dout),
                               dout @ identity.body.W.data.T + dout)
    with pytest.raises(ValueError, match=r"dout of shape \(4, 3\)"):
        identity.backward(np.ones((4, 2)))
    identity.zero_grad()
    with pytest.raises(RuntimeError, match="before forward"):
        identity.backward(dout)


def test_residual_backward_params_gives_the_same_gradients():
    airi.set_default_dtype(np.float64)
    a = Residual(Sequential(Conv2D(2, 2, 3, pad=1), Relu()),
                 Sequential(Conv2D(2, 2, 1)))
    b = copy.deepcopy(a)
    x, dout = _x((2, 2, 5, 5)), _x((2, 2, 5, 5), seed=8)
    a(x)
    a.backward(dout)
    b(x)
    assert b.backward_params(dout) is None
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(pb.grad, pa.grad, rtol=1e-12, err_msg=na)


def _walk(layer):
    """The layer and every layer inside it, depth first."""
    yield layer
    for child in getattr(layer, "children", list)():
        yield from _walk(child)


def _freeze_batchnorm(net):
    """BatchNorm layers in eval mode (running statistics), the others still training:
    the "eval mode" whose gradients can be compared (convolutions cache only in
    training mode)."""
    for layer in _walk(net):
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            layer.eval()
    return net


def _small_resnet_block(channels=2, stride=2):
    out = 2 * channels if stride == 2 else channels
    body = Sequential(Conv2D(channels, out, 3, stride=stride, pad=1, bias=False),
                      BatchNorm2D(out), Relu(),
                      Conv2D(out, out, 3, pad=1, bias=False), BatchNorm2D(out))
    shortcut = Sequential(Conv2D(channels, out, 1, stride=stride, bias=False),
                          BatchNorm2D(out)) if stride == 2 else None
    return Residual(body, shortcut)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_gradcheck_residual(each_backend, training, stride):
    airi.seed(4)
    block = _small_resnet_block(stride=stride)
    if not training:
        block(_x((6, 2, 5, 5), seed=2) + 1.0)       # non-trivial running statistics
        _freeze_batchnorm(block)
    errors = airi.gradcheck(block, _x((3, 2, 5, 5)))
    assert len(errors) == 1 + len(block.parameters())
    assert max(errors.values()) < 1e-6, errors


def test_gradcheck_global_avg_pool(each_backend):
    pool = GlobalAvgPool2D()
    errors = airi.gradcheck(pool, _x((2, 3, 4, 5)))
    assert errors["input"] < 1e-8
    net = Sequential(Conv2D(2, 3, 3, pad=1), GlobalAvgPool2D(), Linear(3, 2))
    errors = airi.gradcheck(net, _x((2, 2, 5, 5)))
    assert max(errors.values()) < 1e-6, errors


def test_global_avg_pool_shapes_dtype_and_errors():
    pool = GlobalAvgPool2D()
    x = _x((2, 3, 4, 5), dtype=np.float32)
    out = pool(x)
    assert out.shape == (2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)), rtol=1e-6)
    dx = pool.backward(np.ones((2, 3), dtype=np.float32))
    assert dx.shape == x.shape and dx.dtype == np.float32
    np.testing.assert_allclose(dx, 1.0 / 20)
    with pytest.raises(ValueError, match="GlobalAvgPool2D.*4-D"):
        pool(_x((2, 3, 4)))
    with pytest.raises(ValueError, match=r"dout of shape \(2, 3\)"):
        pool.backward(np.ones((2, 4)))


# ----------------------------------------------------------------------- ResNets
def test_resnet20_parameter_count_and_shapes():
    net = airi.models.resnet20(in_channels=1)
    assert sum(p.size for p in net.parameters()) == 272_186
    assert sum(p.size for p in airi.models.resnet(20).parameters()) == 272_474
    assert sum(p.size for p in airi.models.get_model("resnet8").parameters()) == 78_042
    assert "resnet20" in airi.models.available_models()
    out = net.eval()(np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert out.shape == (2, 10) and out.dtype == np.float32
    residuals = [layer for layer in net if isinstance(layer, Residual)]
    assert len(residuals) == 9
    projections = [r for r in residuals if r.shortcut is not None]
    assert len(projections) == 2                        # first block of stages 2 and 3
    for r in projections:
        conv = r.shortcut[0]
        assert conv.filter_size == (1, 1) and conv.stride == (2, 2) and not conv.bias
    convs = [m for r in residuals for m in r.body if isinstance(m, Conv2D)]
    assert all(not c.bias for c in convs)
    assert isinstance(net[-2], GlobalAvgPool2D) and isinstance(net[-1], Linear)
    text = net.summary((1, 28, 28))
    assert "Trainable params: 272,186" in text
    # buffers: the running mean and variance of 19 BatchNorms, nested ones included
    bn_channels = 16 + 2 * 3 * 16 + (2 * 3 + 1) * 32 + (2 * 3 + 1) * 64
    assert sum(v.size for _, v in net.named_buffers()) == 2 * bn_channels
    assert f"Non-trainable params: {2 * bn_channels:,}" in text
    assert "3.body.1.running_mean" in dict(net.named_buffers())


def test_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        airi.models.resnet(depth=10)
    with pytest.raises(ValueError, match="width"):
        airi.models.resnet(width=0)


# ------------------------------------------------------------------ PyTorch checks
def _to_torch(layer, torch):
    """A torch module computing what the airi ``layer`` computes, with its values."""
    nn = torch.nn

    class TorchResidual(nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    class TorchGAP(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float64))  # noqa: E731
    if isinstance(layer, Sequential):
        return nn.Sequential(*[_to_torch(inner, torch) for inner in layer])
    if isinstance(layer, Residual):
        return TorchResidual(_to_torch(layer.body, torch),
                             None if layer.shortcut is None
                             else _to_torch(layer.shortcut, torch))
    if isinstance(layer, Conv2D):
        m = nn.Conv2d(layer.in_channels, layer.num_filters, layer.filter_size,
                      stride=layer.stride, padding=layer.pad, bias=bool(layer.bias),
                      dtype=torch.float64)
        m.weight.data = t(layer.W.data)
        if layer.bias:
            m.bias.data = t(layer.b.data)
        return m
    if isinstance(layer, BatchNorm2D):
        m = nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                           dtype=torch.float64)
        m.weight.data, m.bias.data = t(layer.gamma.data), t(layer.beta.data)
        m.running_mean.data, m.running_var.data = (t(layer.running_mean),
                                                   t(layer.running_var))
        return m
    if isinstance(layer, Linear):
        m = nn.Linear(layer.input_size, layer.hidden_size, dtype=torch.float64)
        m.weight.data, m.bias.data = t(layer.W.data.T), t(layer.b.data)
        return m
    if isinstance(layer, Relu):
        return nn.ReLU()
    if isinstance(layer, GlobalAvgPool2D):
        return TorchGAP()
    raise TypeError(type(layer).__name__)


def _torch_grad_like(name, grad):
    """A torch gradient in airi's layout (Linear's W is the transpose of torch's)."""
    return grad.T if name.endswith(".W") and grad.ndim == 2 else grad


@pytest.mark.parametrize("training", [True, False])
def test_resnet_matches_torch(training):
    torch = pytest.importorskip("torch")
    airi.set_default_dtype(np.float64)
    airi.seed(7)
    net = airi.models.resnet8(in_channels=2, width=4, num_classes=5)
    warm = _x((8, 2, 10, 10), seed=1) * 2 + 0.5
    net.train()(warm)                        # running statistics away from 0 and 1
    theirs = _to_torch(net, torch)
    if not training:          # BatchNorm on running statistics, as torch's eval()
        _freeze_batchnorm(net)
        theirs.eval()
    x, dout = _x((6, 2, 10, 10), seed=2), _x((6, 5), seed=3)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    out_t = theirs(tx)
    (out_t * torch.from_numpy(dout)).sum().backward()
    out = net(x)
    dx = net.backward(dout)
    assert _rel(out, out_t.detach().numpy()) < 1e-8
    assert _rel(dx, tx.grad.numpy()) < 1e-8
    ours = list(net.named_parameters())
    torch_params = list(theirs.parameters())
    assert len(ours) == len(torch_params)
    for (name, p), tp in zip(ours, torch_params):
        ref = _torch_grad_like(name, tp.grad.numpy())
        assert p.grad.shape == ref.shape, name
        assert _rel(p.grad, ref) < 1e-8, name
    # running statistics moved (training) or not (eval) exactly as torch's
    bns = [m for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ours_bn = [m for m in _walk(net) if isinstance(m, BatchNorm2D)]
    assert len(ours_bn) == len(bns) == 9
    for mine, m in zip(ours_bn, bns):
        assert _rel(mine.running_mean, m.running_mean.numpy()) < 1e-12
        assert _rel(mine.running_var, m.running_var.numpy()) < 1e-12
