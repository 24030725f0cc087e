"""Classification metrics: accuracy, top-k accuracy and the confusion matrix.

Each takes NumPy arrays: ``scores`` (N, C) are a model's outputs (logits,
probabilities or log-probabilities: only their order matters), ``y`` (N,) the integer
labels::

    scores = trainer.predict(X_test)
    airi.metrics.accuracy(scores, y_test)              # 0.987
    airi.metrics.top_k_accuracy(scores, y_test, k=3)
    cm = airi.metrics.confusion_matrix(y_test, scores.argmax(axis=1), num_classes=10)

Ties between scores are broken toward the lower class index, as ``argmax`` does, so
``top_k_accuracy(scores, y, k=1) == accuracy(scores, y)``.
"""
import numpy as np

from .validators import positive_int

__all__ = ["accuracy", "top_k_accuracy", "confusion_matrix"]


def _scores_and_labels(scores, y, owner):
    scores = np.asarray(scores)
    y = np.asarray(y)
    if scores.ndim != 2:
        raise ValueError(f"{owner}: expected scores of shape (N, C), got shape "
                         f"{scores.shape}")
    n, c = scores.shape
    if y.dtype.kind not in "iu":
        raise ValueError(f"{owner}: labels must be integer class indices, got dtype "
                         f"{y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{owner}: expected labels of shape ({n},) for scores of shape "
                         f"{scores.shape}, got shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"{owner}: labels must be in [0, {c}) for {c} classes, got values "
                         f"from {y.min()} to {y.max()}")
    return scores, y


def _rank_of_labels(scores, y):
    """0-based rank of each sample's true class (0: it is the argmax): the classes
    scoring higher, plus the tied classes with a lower index."""
    n, c = scores.shape
    true = scores[np.arange(n), y][:, None]
    lower_index = np.arange(c)[None, :] < y[:, None]
    return ((scores > true) | ((scores == true) & lower_index)).sum(axis=1)


def accuracy(scores, y):
    """The fraction of samples whose highest score is their label.

    Parameters
    ----------
    scores : array_like (N, C)
        Class scores; or (N,) integer predictions.
    y : array_like (N,), int
        The labels.

    Returns
    -------
    float
        In [0, 1] (0.0 for N = 0).
    """
    scores = np.asarray(scores)
    if scores.ndim == 1 and scores.dtype.kind in "iu":     # predictions already
        y = np.asarray(y)
        if y.shape != scores.shape:
            raise ValueError(f"accuracy: {scores.shape[0]} predictions for labels of "
                             f"shape {y.shape}")
        return float(np.mean(scores == y)) if y.size else 0.0
    scores, y = _scores_and_labels(scores, y, "accuracy")
    if not y.size:
        return 0.0
    return float(np.mean(scores.argmax(axis=1) == y))


def top_k_accuracy(scores, y, k=5):
    """The fraction of samples whose label is among their ``k`` highest scores.

    Parameters
    ----------
    scores : array_like (N, C)
    y : array_like (N,), int
    k : int, default 5
        1 <= k <= C.

    Returns
    -------
    float
        In [0, 1]; ``k=1`` is :func:`accuracy`.
    """
    k = positive_int(k, "k", "top_k_accuracy")
    scores, y = _scores_and_labels(scores, y, "top_k_accuracy")
    if k > scores.shape[1]:
        raise ValueError(f"top_k_accuracy: k={k} but there are only {scores.shape[1]} "
                         "classes")
    if not y.size:
        return 0.0
    return float(np.mean(_rank_of_labels(scores, y) < k))


def confusion_matrix(y_true, y_pred, num_classes):
    """Counts of (true class, predicted class) pairs.

    Parameters
    ----------
    y_true : array_like (N,), int
        The labels.
    y_pred : array_like (N,), int, or (N, C) scores
        The predicted classes (scores are turned into their argmax).
    num_classes : int

    Returns
    -------
    ndarray (num_classes, num_classes), int64
        ``cm[i, j]`` = number of samples of class i predicted as j: rows are the true
        class, the diagonal the correct predictions.
    """
    c = positive_int(num_classes, "num_classes", "confusion_matrix")
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    for what, a in (("y_true", y_true), ("y_pred", y_pred)):
        if a.dtype.kind not in "iu":
            raise ValueError(f"confusion_matrix: {what} must hold integer classes, got "
                             f"dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"confusion_matrix: {what} must be 1-D, got shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= c):
            raise ValueError(f"confusion_matrix: {what} must be in [0, {c}), got values "
                             f"from {a.min()} to {a.max()}")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: y_true has {y_true.size} entries, y_pred "
                         f"{y_pred.size}")
    flat = y_true.astype(np.int64) * c + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=c * c).reshape(c, c)
