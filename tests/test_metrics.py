"""airi.metrics, airi.clip_grad_norm_ and airi.viz.plot_confusion_matrix (issue 15)."""
import struct

import numpy as np
import pytest

import airi
from airi import Parameter
from airi.metrics import accuracy, confusion_matrix, top_k_accuracy


SCORES = np.array([[0.1, 0.7, 0.2],     # predicts 1
                   [0.5, 0.3, 0.2],     # predicts 0
                   [0.2, 0.3, 0.5],     # predicts 2
                   [0.4, 0.4, 0.2]])    # tie 0/1 -> 0 (argmax)
LABELS = np.array([1, 2, 2, 1])


def test_accuracy_and_top_k():
    assert accuracy(SCORES, LABELS) == 0.5
    assert accuracy(SCORES.argmax(axis=1), LABELS) == 0.5       # predictions too
    assert top_k_accuracy(SCORES, LABELS, k=1) == accuracy(SCORES, LABELS)
    assert top_k_accuracy(SCORES, LABELS, k=2) == 0.75           # sample 1's 2 is last
    assert top_k_accuracy(SCORES, LABELS, k=3) == 1.0
    assert accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 0.0


def test_top_k_matches_torch_topk():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    scores, y = rng.standard_normal((200, 10)), rng.integers(0, 10, 200)
    for k in (1, 3, 5):
        top = torch.topk(torch.from_numpy(scores), k, dim=1).indices.numpy()
        expected = np.mean((top == y[:, None]).any(axis=1))
        assert top_k_accuracy(scores, y, k=k) == pytest.approx(expected)


def test_metric_errors():
    with pytest.raises(ValueError, match="k=4 but there are only 3 classes"):
        top_k_accuracy(SCORES, LABELS, k=4)
    with pytest.raises(ValueError, match=r"labels of shape \(4,\)"):
        accuracy(SCORES, LABELS[:3])
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        accuracy(SCORES, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="integer"):
        top_k_accuracy(SCORES, LABELS.astype(float))


def test_confusion_matrix():
    cm = confusion_matrix(LABELS, SCORES.argmax(axis=1), num_classes=3)
    assert cm.shape == (3, 3) and cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[0, 0, 0], [1, 1, 0], [1, 0, 1]])   # rows: true
    np.testing.assert_array_equal(confusion_matrix(LABELS, SCORES, 3), cm)  # scores ok
    assert cm.sum() == len(LABELS) and np.trace(cm) == 2
    with pytest.raises(ValueError, match=r"y_pred must be in \[0, 2\)"):
        confusion_matrix([0, 1], [0, 2], num_classes=2)
    with pytest.raises(ValueError, match="y_true has 2 entries, y_pred 3"):
        confusion_matrix([0, 1], [0, 1, 1], num_classes=2)


# ------------------------------------------------------------------ clip_grad_norm_
def _params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    ps = [Parameter(rng.standard_normal(s).astype(dtype)) for s in [(3, 4), (4,), (2, 2)]]
    for p in ps:
        p.grad = rng.standard_normal(p.shape).astype(dtype) * 3
    return ps


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    ps = _params()
    ts = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in ps]
    for p, t in zip(ps, ts):
        t.grad = torch.from_numpy(p.grad.copy())
    total = airi.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    ref = torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(ref.item(), rel=1e-12)
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_rule():
    ps = _params(dtype=np.float32)
    before = np.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in ps))
    total = airi.clip_grad_norm_(ps, 1.0)
    assert total == pytest.approx(before, rel=1e-6)
    after = np.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in ps))
    assert after == pytest.approx(1.0, rel=1e-5)
    assert all(p.grad.dtype == np.float32 for p in ps)
    grads = [p.grad.copy() for p in ps]
    airi.clip_grad_norm_(ps, 10.0)                           # under the limit: unchanged
    for p, g in zip(ps, grads):
        np.testing.assert_array_equal(p.grad, g)
    lone = Parameter(np.zeros(2))
    assert airi.clip_grad_norm_(lone, 1.0) == 0.0            # no gradient: nothing to do
    ps[0].grad[0, 0] = np.nan
    with pytest.raises(RuntimeError, match="nan"):
        airi.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="model.parameters"):
        airi.clip_grad_norm_(airi.Sequential(airi.Linear(2, 2)), 1.0)


# ------------------------------------------------------------------- the picture
def test_plot_confusion_matrix(tmp_path):
    pytest.importorskip("matplotlib")
    cm = np.array([[50, 2, 0], [3, 40, 7], [0, 1, 60]])
    path = tmp_path / "cm" / "confusion.png"
    returned = airi.viz.plot_confusion_matrix(cm, path, class_names=["a", "b", "c"])
    assert returned == str(path) and path.stat().st_size > 1000
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (600, 560)
    with pytest.raises(ValueError, match="2 class names for 3"):
        airi.viz.plot_confusion_matrix(cm, tmp_path / "x.png", class_names=["a", "b"])
    with pytest.raises(ValueError, match="square"):
        airi.viz.plot_confusion_matrix(cm[:2], tmp_path / "x.png")
