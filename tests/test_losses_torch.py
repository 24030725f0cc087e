"""Issue 15's losses: class weights, label smoothing, BCE; gradchecked and equal to
PyTorch 2.13 (value and gradient to 1e-8 relative in float64) when torch is installed."""
import pickle

import numpy as np
import pytest

import airi
from airi.losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, NLLLoss


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((7, 4)) * 2
    labels = np.array([0, 1, 2, 3, 3, 1, 0])
    weight = np.array([0.5, 2.0, 1.0, 3.0])
    return logits, labels, weight


CE_CASES = [dict(), dict(weight=True), dict(label_smoothing=0.1),
            dict(weight=True, label_smoothing=0.25), dict(label_smoothing=1.0)]


def _ce_kwargs(case, weight):
    kw = dict(case)
    if kw.get("weight"):
        kw["weight"] = weight
    return kw


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CE_CASES, ids=str)
def test_cross_entropy_gradcheck(data, case, reduction):
    logits, labels, weight = data
    loss = CrossEntropyLoss(**_ce_kwargs(case, weight), reduction=reduction)
    assert airi.gradcheck(loss, (logits, labels))["input0"] < 1e-7


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CE_CASES, ids=str)
def test_cross_entropy_matches_torch(data, case, reduction):
    torch = pytest.importorskip("torch")
    logits, labels, weight = data
    kw = _ce_kwargs(case, weight)
    ours = CrossEntropyLoss(**kw, reduction=reduction)
    tkw = dict(kw)
    if "weight" in tkw:
        tkw["weight"] = torch.from_numpy(weight)
    theirs = torch.nn.CrossEntropyLoss(**tkw, reduction=reduction)
    t = torch.from_numpy(logits.copy()).requires_grad_(True)
    ref = theirs(t, torch.from_numpy(labels))
    ref.backward()
    value = ours(logits, labels)
    assert _rel(value, ref.item()) < 1e-12
    assert _rel(ours.backward(), t.grad.numpy()) < 1e-8


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_matches_torch_and_gradcheck(data, weighted, reduction):
    logits, labels, weight = data
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ours = NLLLoss(weight=weight if weighted else None, reduction=reduction)
    assert airi.gradcheck(ours, (log_probs, labels))["input0"] < 1e-7
    torch = pytest.importorskip("torch")
    theirs = torch.nn.NLLLoss(weight=torch.from_numpy(weight) if weighted else None,
                              reduction=reduction)
    t = torch.from_numpy(log_probs.copy()).requires_grad_(True)
    ref = theirs(t, torch.from_numpy(labels))
    ref.backward()
    assert _rel(ours(log_probs, labels), ref.item()) < 1e-12
    assert _rel(ours.backward(), t.grad.numpy()) < 1e-8


def test_weighted_cross_entropy_is_a_weighted_mean(data):
    logits, labels, weight = data
    plain = CrossEntropyLoss(reduction="sum")
    per_sample = [plain(logits[i:i + 1], labels[i:i + 1]) for i in range(len(labels))]
    w = weight[labels]
    expected = np.dot(w, per_sample) / w.sum()
    assert CrossEntropyLoss(weight=weight)(logits, labels) == pytest.approx(expected)
    # equal weights change nothing
    assert CrossEntropyLoss(weight=np.full(4, 3.0))(logits, labels) == pytest.approx(
        CrossEntropyLoss()(logits, labels))


def test_cross_entropy_and_nll_argument_errors(data):
    logits, labels, _ = data
    with pytest.raises(ValueError, match="weight has 3 entries.*4 classes"):
        CrossEntropyLoss(weight=[1.0, 2.0, 3.0])(logits, labels)
    with pytest.raises(ValueError, match="weight has 3 entries.*4 classes"):
        NLLLoss(weight=[1.0, 2.0, 3.0])(logits, labels)
    with pytest.raises(ValueError, match="1-D"):
        CrossEntropyLoss(weight=np.ones((2, 2)))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        CrossEntropyLoss(label_smoothing=1.5)
    assert "label_smoothing=0.1" in repr(CrossEntropyLoss(label_smoothing=0.1))


def _binary_data(shape=(6, 3), seed=4):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape) * 3
    target = (rng.random(shape) > 0.5).astype(np.float64)
    target[0] = [0.3, 0.7, 1.0]                      # soft targets are allowed
    return logits, target


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("pos_weight", [None, [2.0, 0.5, 1.0], 3.0])
def test_bce_with_logits_matches_torch_and_gradcheck(pos_weight, reduction):
    logits, target = _binary_data()
    ours = BCEWithLogitsLoss(pos_weight=pos_weight, reduction=reduction)
    errors = airi.gradcheck(ours, (logits, target))
    assert errors["input0"] < 1e-7
    torch = pytest.importorskip("torch")
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64)
    theirs = torch.nn.BCEWithLogitsLoss(pos_weight=pw, reduction=reduction)
    t = torch.from_numpy(logits.copy()).requires_grad_(True)
    ref = theirs(t, torch.from_numpy(target))
    ref.backward()
    assert _rel(ours(logits, target), ref.item()) < 1e-12
    assert _rel(ours.backward(), t.grad.numpy()) < 1e-8


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_matches_torch_and_gradcheck(reduction):
    logits, target = _binary_data()
    probs = 1 / (1 + np.exp(-logits))
    ours = BCELoss(reduction=reduction)
    assert airi.gradcheck(ours, (probs, target))["input0"] < 1e-6
    torch = pytest.importorskip("torch")
    theirs = torch.nn.BCELoss(reduction=reduction)
    t = torch.from_numpy(probs.copy()).requires_grad_(True)
    ref = theirs(t, torch.from_numpy(target))
    ref.backward()
    assert _rel(ours(probs, target), ref.item()) < 1e-12
    assert _rel(ours.backward(), t.grad.numpy()) < 1e-8


def test_bce_edges_match_torch():
    """Probabilities of exactly 0 and 1 (PyTorch clamps each log at -100)."""
    probs = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 1e-30]])
    target = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    ours = BCELoss()
    value = ours(probs, target)
    assert np.isfinite(value) and np.all(np.isfinite(ours.backward()))
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(probs.copy()).requires_grad_(True)
    ref = torch.nn.BCELoss()(t, torch.from_numpy(target))
    ref.backward()
    assert _rel(value, ref.item()) < 1e-12
    assert _rel(ours.backward(), t.grad.numpy()) < 1e-8


def test_bce_with_logits_extreme_scores_are_finite():
    logits = np.array([[-1000.0, 1000.0], [0.0, 50.0]], dtype=np.float32)
    target = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    loss = BCEWithLogitsLoss()
    value = loss(logits, target)
    assert value == pytest.approx((1000 + 1000 + np.log(2)) / 4, rel=1e-6)
    grad = loss.backward()
    assert grad.dtype == np.float32 and np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, np.array([[-1, 1], [-0.5, 0]]) / 4, atol=1e-7)


def test_binary_losses_reject_bad_input():
    logits, target = _binary_data()
    with pytest.raises(ValueError, match=r"target shape \(6,\).*\(6, 3\)"):
        BCEWithLogitsLoss()(logits, target[:, 0])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        BCEWithLogitsLoss()(logits, target * 2)
    with pytest.raises(ValueError, match="BCELoss.*probabilities.*BCEWithLogitsLoss"):
        BCELoss()(logits, target)
    with pytest.raises(ValueError, match="pos_weight.*broadcast"):
        BCEWithLogitsLoss(pos_weight=[1.0, 2.0])(logits, target)
    with pytest.raises(RuntimeError, match="before"):
        BCELoss().backward()
    loss = BCEWithLogitsLoss(pos_weight=[1.0, 2.0, 3.0])
    loss(logits, target)
    clone = pickle.loads(pickle.dumps(loss))
    assert clone.logits is None and clone.pos_weight.tolist() == [1.0, 2.0, 3.0]
