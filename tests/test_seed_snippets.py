"""The code of seed 001 ("Airi"), run as printed with ``from airi.layers import ...``.

Differences from the printed text, each forced by a bug in the seed itself:
* the two-layer list misses a comma after ``Relu()`` (a SyntaxError as printed);
* the training loop assigns ``x = layer.forward(x)`` to the variable holding the data, so
  from the second epoch on the data are the previous probabilities; here ``x`` is reset at
  the top of each epoch (``test_seed_loop_as_printed_fails_clearly`` shows what the
  printed loop does instead: a clear error, not a silent mistake);
* ``reg=1e3`` with ``update()``'s lr=1e-3 flips the sign of W at every step, so the tests
  use a small ``reg``.
The data are small synthetic stand-ins for CIFAR-10 (3072 features, 10 classes).
"""
import numpy as np
import pytest

import airi
from airi.layers import Conv2D, Flatten, Linear, Relu, Softmax


def synthetic_cifar_like(n=64, features=3072, classes=10, seed=0):
    """Separable data: one random mean per class plus noise; float32, like the seed's."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, features)).astype(np.float32) * 0.5
    y = rng.integers(0, classes, size=n)
    x = means[y] + 0.5 * rng.standard_normal((n, features)).astype(np.float32)
    return x, y


def train_seed_loop(model, train_images, train_targets, n_epoches):
    """The seed's loop, with ``x`` reset at each epoch; returns the loss per epoch."""
    losses = []
    y = train_targets
    for i in range(n_epoches):
        x = train_images
        for layer in model:
            x = layer.forward(x)  # Não é necessario chamar o método forward. layer() é suficiente

        loss = model[-1].NLLloss(y)
        dout = model[-1].backward(y)

        for layer in reversed(model[:-1]):
            dout = layer.backward(dout)
            layer.update()
            layer.zero_grad()
        losses.append(loss)
    return losses


def test_softmax_classifier_trains():
    airi.seed(0)
    train_images, train_targets = synthetic_cifar_like()
    model = [
        Linear(input_size=3072, hidden_size=10, reg=1e-3, bias=True),
        Softmax()
    ]
    losses = train_seed_loop(model, train_images, train_targets, n_epoches=30)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert model[0].W.dtype == np.float32


def test_two_layer_net_trains():
    airi.seed(1)
    train_images, train_targets = synthetic_cifar_like(seed=1)
    model = [
        Linear(input_size=3072, hidden_size=100, reg=1e-3, bias=True),
        Relu(),
        Linear(input_size=100, hidden_size=10, reg=1e-3, bias=True),
        Softmax()
    ]
    losses = train_seed_loop(model, train_images, train_targets, n_epoches=30)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


def test_seed_loop_as_printed_fails_clearly():
    train_images, train_targets = synthetic_cifar_like(n=8)
    model = [Linear(input_size=3072, hidden_size=10, reg=1e-3, bias=True), Softmax()]
    x = train_images
    y = train_targets
    with pytest.raises(ValueError, match=r"Linear: expected input of shape \(\*, 3072\), "
                                         r"got \(8, 10\)"):
        for i in range(2):
            for layer in model:
                x = layer.forward(x)
            loss = model[-1].NLLloss(y)
            dout = model[-1].backward(y)
            for layer in reversed(model[:-1]):
                dout = layer.backward(dout)
                layer.update()
                layer.zero_grad()


def test_cifar_model_forward_backward_update(each_backend):
    airi.seed(2)
    reg = 1e-3
    model = [
            Conv2D(in_channels=3, num_filters=16,filter_size=5, stride=1, pad=0),
            Relu(),
            Conv2D(in_channels=16, num_filters=16, filter_size=5, stride=1, pad=0),
            Relu(),
            Flatten(),
            Linear(input_size=9216, hidden_size=120, reg=reg),
            Relu(),
            Linear(input_size=120, hidden_size=84, reg=reg),
            Relu(),
            Linear(input_size=84, hidden_size=10, reg=reg),
            Softmax()
        ]
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = np.array([3, 7])
    before = [p.data.copy() for layer in model for p in layer.parameters()]

    losses = []
    for step in range(3):
        x = x0
        for layer in model:
            x = layer(x)
        assert x.shape == (2, 10) and x.dtype == np.float32
        np.testing.assert_allclose(x.sum(axis=1), 1.0, rtol=1e-5)
        losses.append(model[-1].NLLloss(y))
        dout = model[-1].backward(y)
        for layer in reversed(model[:-1]):
            dout = layer.backward(dout)
            for p in layer.parameters():
                assert p.grad is not None and p.grad.shape == p.data.shape
                assert p.grad.dtype == np.float32
            layer.update()
            layer.zero_grad()
        assert dout.shape == (2, 3, 32, 32) and dout.dtype == np.float32

    after = [p.data for layer in model for p in layer.parameters()]
    assert len(after) == 10
    assert all(not np.array_equal(a, b) for a, b in zip(after, before))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
