"""``Softmax`` (also the seed's final layer with its NLL loss) and ``LogSoftmax``.

Both work on class scores of shape (N, C), normalising over the classes (axis 1), and
are numerically stable: the row maximum is subtracted before ``exp`` (on a new array:
the caller's scores are never modified), so scores of +-1000 give finite results.

The helpers :func:`stable_softmax`, :func:`log_softmax` and :func:`check_labels` are
shared with :mod:`airi.losses`.
"""
import numpy as np

from .base import Layer, StateChecker

__all__ = ["Softmax", "LogSoftmax", "stable_softmax", "log_softmax", "check_labels"]


def stable_softmax(scores):
    """Row-wise softmax of scores (N, C) -> probabilities (N, C), rows summing to 1."""
    probs = scores - scores.max(axis=1, keepdims=True)  # new array, largest entry 0
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def log_softmax(scores):
    """Row-wise log-softmax via log-sum-exp: scores (N, C) -> log-probabilities (N, C)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    shifted -= log_sum
    return shifted


def check_labels(y, n, num_classes, who):
    """Validate class labels: an integer array of shape (n,) with values in
    [0, num_classes). Returns it as an ndarray; raises ValueError naming ``who``."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape == (n, num_classes):
        raise ValueError(f"{who}: expected integer class labels of shape ({n},), got an "
                         f"array of shape {y.shape} (one-hot labels? pass y.argmax(axis=1))")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{who}: labels must be integer class indices, got dtype {y.dtype} "
                         "(convert them, e.g. y.astype(np.int64))")
    if y.shape != (n,):
        raise ValueError(f"{who}: expected labels of shape ({n},) (one class index per "
                         f"sample), got shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{who}: labels must be in [0, {num_classes}) for {num_classes} "
                         f"classes, got values from {y.min()} to {y.max()}")
    return y


def _check_scores(layer, x):
    x = layer._check_input(x)
    if x.ndim != 2:
        raise ValueError(f"{layer._name()}: expected scores of shape (N, C) (2-D), got shape "
                         f"{x.shape}; add a Flatten() before it")
    return x


class Softmax(Layer):
    """Softmax over classes; also the seed's final layer with a built-in NLL loss.

    Parameters
    ----------
    loss : str
        The loss used by ``backward(y)`` with integer labels: only ``"NLL"`` (the seed's
        negative log-likelihood).

    Shapes
    ------
    forward: scores (N, C) -> probs (N, C), each row summing to 1.
    ``NLLloss(y)``: labels y (N,) -> float, ``mean(-log(probs[i, y[i]]))``.
    ``backward(y)`` with integer labels y (N,) -> dL/dscores (N, C) of that loss,
    ``(probs - onehot(y)) / N`` (the seed's training loop).
    ``backward(dout)`` with a float dout (N, C) -> dL/dscores (N, C), the ordinary
    vector-Jacobian product ``probs * (dout - sum(dout * probs, axis=1))``.

    Notes
    -----
    Unlike other layers, Softmax keeps its probabilities after an eval-mode forward too,
    so ``NLLloss`` can report a validation loss. The returned array *is* the cache:
    modify a copy of it, not the array itself, before calling ``NLLloss``/``backward``.
    """

    _cache_names = ("probs",)

    def __init__(self, loss="NLL"):
        super().__init__()
        self.loss_function = loss
        self.probs = None

    def check_state(self):
        """The checks of the constructor, on attributes read from a model file."""
        check = StateChecker(self)
        check.boolean("training")
        if type(check.get("loss_function")) is not str:
            check.fail("loss_function", "a str", check.get("loss_function"))
        check.params({})

    @property
    def batch_size(self):
        """N of the last forward pass (the seed's attribute)."""
        return None if self.probs is None else self.probs.shape[0]

    def forward(self, scores, training=None):
        """scores (N, C) -> probs (N, C). The scores are not modified."""
        scores = _check_scores(self, scores)
        self.probs = stable_softmax(scores)
        return self.probs

    def NLLloss(self, y):
        """Mean negative log-likelihood of integer labels y (N,) under the cached
        probabilities; a Python float."""
        probs = self._cached("probs")
        n, c = probs.shape
        y = check_labels(y, n, c, "Softmax.NLLloss")
        picked = probs[np.arange(n), y]
        # A probability that underflowed to 0 would give log(0) = -inf.
        picked = np.maximum(picked, np.finfo(probs.dtype).tiny)
        return float(-np.log(picked).mean())

    def backward(self, dout):
        """Integer labels (N,) -> gradient of ``NLLloss`` w.r.t. the scores (N, C);
        float dout (N, C) -> dL/dscores (N, C)."""
        probs = self._cached("probs")
        n, c = probs.shape
        dout_array = np.asarray(dout)
        if dout_array.dtype.kind == "f" and dout_array.shape == probs.shape:
            return probs * (dout_array - (dout_array * probs).sum(axis=1, keepdims=True))
        if dout_array.dtype.kind not in "iu":
            raise ValueError(
                f"Softmax: backward expects integer labels of shape ({n},) (gradient of "
                f"NLLloss) or a float dout of shape {probs.shape}, got dtype "
                f"{dout_array.dtype} and shape {dout_array.shape}")
        if self.loss_function != "NLL":
            raise NotImplementedError(f"Softmax: unsupported loss {self.loss_function!r}")
        y = check_labels(dout_array, n, c, "Softmax.backward")
        grad = probs.copy()  # the cached probabilities stay valid for NLLloss
        grad[np.arange(n), y] -= 1
        grad /= n
        return grad

    def extra_repr(self):
        return "" if self.loss_function == "NLL" else f"loss={self.loss_function!r}"


class LogSoftmax(Layer):
    """Log-softmax over classes, computed with log-sum-exp (stable for large scores).

    Pair it with :class:`airi.losses.NLLLoss`, or use ``CrossEntropyLoss`` on raw scores.

    Shapes
    ------
    forward: scores (N, C) -> log-probabilities (N, C);
    backward: dout (N, C) -> dx = dout - softmax * sum(dout, axis=1) (N, C).
    """

    _cache_names = ("out",)

    def __init__(self):
        super().__init__()
        self.out = None

    def forward(self, scores, training=None):
        """scores (N, C) -> log-probabilities (N, C). Caches the output when training."""
        scores = _check_scores(self, scores)
        out = log_softmax(scores)
        self.out = out if self._is_training(training) else None
        return out

    def backward(self, dout):
        """dout (N, C) -> dx (N, C)."""
        out = self._cached("out")
        self._check_dout(dout, out.shape)
        return dout - np.exp(out) * dout.sum(axis=1, keepdims=True)
