"""airi.losses: values, gradients (gradcheck), stability, dtypes and label validation."""
import pickle

import numpy as np
import pytest

import airi
from airi.layers import LogSoftmax, Softmax
from airi.losses import CrossEntropyLoss, MSELoss, NLLLoss

TOL = 1e-6


def labels(rng, n, c):
    return rng.integers(0, c, size=n)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("n,c", [(4, 3), (1, 5), (7, 2)])
def test_cross_entropy_gradcheck(rng, n, c, reduction):
    errors = airi.gradcheck(CrossEntropyLoss(reduction=reduction),
                            (rng.standard_normal((n, c)) * 2, labels(rng, n, c)))
    assert set(errors) == {"input0"} and errors["input0"] < TOL


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_loss_gradcheck(rng, reduction):
    log_probs = np.log(rng.dirichlet(np.ones(5), size=4))
    errors = airi.gradcheck(NLLLoss(reduction=reduction), (log_probs, labels(rng, 4, 5)))
    assert errors["input0"] < TOL


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 2, 2)])
def test_mse_gradcheck(rng, shape, reduction):
    errors = airi.gradcheck(MSELoss(reduction=reduction),
                            (rng.standard_normal(shape), rng.standard_normal(shape)))
    assert errors["input0"] < TOL


def test_cross_entropy_value_and_gradient(rng):
    logits = rng.standard_normal((5, 4))
    y = np.array([0, 3, 2, 2, 1])
    loss_fn = CrossEntropyLoss()
    loss = loss_fn(logits, y)
    assert isinstance(loss, float)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(probs[np.arange(5), y]).mean(), rel=1e-12)
    np.testing.assert_allclose(loss_fn.backward(), (probs - np.eye(4)[y]) / 5, rtol=1e-12)


def test_cross_entropy_equals_log_softmax_plus_nll(rng):
    logits = rng.standard_normal((6, 3))
    y = labels(rng, 6, 3)
    ce = CrossEntropyLoss()
    nll = NLLLoss()
    log_softmax = LogSoftmax()
    assert ce(logits, y) == pytest.approx(nll(log_softmax(logits), y), rel=1e-12)
    np.testing.assert_allclose(ce.backward(), log_softmax.backward(nll.backward()),
                               rtol=1e-10, atol=1e-14)
    softmax = Softmax()
    softmax(logits)
    assert softmax.NLLloss(y) == pytest.approx(ce(logits, y), rel=1e-10)
    np.testing.assert_allclose(softmax.backward(y), ce.backward(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_extreme_logits_are_finite(dtype):
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]], dtype=dtype)
    loss_fn = CrossEntropyLoss()
    loss = loss_fn(logits, np.array([0, 2]))
    assert np.isfinite(loss)
    # Sample 0 is right with certainty (loss 0); sample 1 is 1 below the best score.
    assert loss == pytest.approx((0.0 + (1.0 + np.log1p(np.exp(-1.0)))) / 2, rel=1e-5)
    grad = loss_fn.backward()
    assert np.all(np.isfinite(grad)) and grad.dtype == dtype
    wrong = loss_fn(logits, np.array([1, 0]))  # confidently wrong by about 2000 each
    expected = (2000.0 + (2000.0 + np.log1p(np.exp(-1.0)))) / 2
    assert np.isfinite(wrong) and wrong == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_keep_prediction_dtype(rng, dtype):
    logits = rng.standard_normal((3, 4)).astype(dtype)
    y = labels(rng, 3, 4)
    for loss_fn, args in [(CrossEntropyLoss(), (logits, y)), (NLLLoss(), (logits, y)),
                          (MSELoss(), (logits, rng.standard_normal((3, 4))))]:
        assert isinstance(loss_fn(*args), float)
        grad = loss_fn.backward()
        assert grad.dtype == dtype and grad.shape == logits.shape


def test_mse_value_and_integer_target(rng):
    pred = np.array([[1.0, 2.0], [3.0, 5.0]], dtype=np.float32)
    target = np.array([[1, 2], [3, 3]])
    loss_fn = MSELoss()
    assert loss_fn(pred, target) == pytest.approx(1.0)  # 4 / 4 elements
    np.testing.assert_allclose(loss_fn.backward(), [[0, 0], [0, 1.0]])
    assert MSELoss(reduction="sum")(pred, target) == pytest.approx(4.0)


def test_label_validation(rng):
    logits = rng.standard_normal((3, 4))
    for loss_fn in (CrossEntropyLoss(), NLLLoss()):
        name = type(loss_fn).__name__
        with pytest.raises(ValueError, match=rf"{name}: labels must be integer"):
            loss_fn(logits, np.array([0.0, 1.0, 2.0]))
        with pytest.raises(ValueError, match=rf"{name}: expected labels of shape \(3,\)"):
            loss_fn(logits, np.array([[0, 1, 2]]))
        with pytest.raises(ValueError, match=rf"{name}: labels must be in \[0, 4\)"):
            loss_fn(logits, np.array([0, 4, 1]))
        with pytest.raises(ValueError, match="one-hot"):
            loss_fn(logits, np.eye(4)[[0, 1, 2]])
        with pytest.raises(ValueError, match=rf"{name}: expected logits|{name}: expected log"):
            loss_fn(logits[0], np.array([0]))
        with pytest.raises(ValueError, match=rf"{name}: .* must be a float array"):
            loss_fn(np.zeros((3, 4), dtype=int), np.array([0, 1, 2]))


def test_bad_arguments_and_backward_before_call(rng):
    with pytest.raises(ValueError, match=r"MSELoss: target shape \(4,\) does not match"):
        MSELoss()(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(ValueError, match="reduction"):
        CrossEntropyLoss(reduction="none")
    for loss_fn in (CrossEntropyLoss(), NLLLoss(), MSELoss()):
        with pytest.raises(RuntimeError, match=type(loss_fn).__name__):
            loss_fn.backward()


def test_loss_pickles_without_cache(rng):
    loss_fn = CrossEntropyLoss()
    loss_fn(rng.standard_normal((2, 3)), np.array([0, 1]))
    clone = pickle.loads(pickle.dumps(loss_fn))
    assert clone.log_probs is None
    with pytest.raises(RuntimeError):
        clone.backward()
