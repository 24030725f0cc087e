"""Loss functions: ``CrossEntropyLoss``, ``NLLLoss`` and ``MSELoss`` (PyTorch's names).

A loss is called on a prediction and a target and returns a Python float; it caches
what its gradient needs, and ``backward()`` returns d(loss)/d(prediction), an array of the
prediction's shape and dtype, to feed the last layer's ``backward``::

    loss_fn = CrossEntropyLoss()
    loss = loss_fn(scores, y)        # scores (N, C) float, y (N,) int -> float
    dscores = loss_fn.backward()     # (N, C)
"""
import numpy as np

from .layers.softmax import check_labels, log_softmax

__all__ = ["Loss", "CrossEntropyLoss", "NLLLoss", "MSELoss"]

_REDUCTIONS = ("mean", "sum")


class Loss:
    """Base class of the losses.

    Parameters
    ----------
    reduction : {"mean", "sum"}
        Average the per-element losses (default) or add them up.
    """

    _cache_names = ()

    def __init__(self, reduction="mean"):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{self._name()}: reduction must be one of {_REDUCTIONS}, got "
                             f"{reduction!r}")
        self.reduction = reduction
        self.clear_cache()

    def check_state(self):
        """Check attributes read from a model file (``airi.load`` calls it)."""
        reduction = vars(self).get("reduction")
        if type(reduction) is not str or reduction not in _REDUCTIONS:
            raise ValueError(f"{self._name()}.reduction must be one of {_REDUCTIONS}, got "
                             f"{str(reduction)[:40]!r}")
        for name in type(self)._cache_names:     # caches start empty
            self.__dict__[name] = None

    def __call__(self, pred, target):
        """Same as :meth:`forward`: ``loss(pred, target)`` -> float."""
        return self.forward(pred, target)

    def forward(self, pred, target):
        """The loss of ``pred`` against ``target``.

        Parameters
        ----------
        pred : ndarray (N, ...), float
        target : ndarray
            Labels (N,) or targets shaped like ``pred``, depending on the loss.

        Returns
        -------
        float
        """
        raise NotImplementedError

    def backward(self):
        """d(loss)/d(pred) for the last call.

        Returns
        -------
        ndarray
            Shaped and typed like ``pred``.
        """
        raise NotImplementedError

    def zero_grad(self):
        """Drop the cached tensors of the last call."""
        self.clear_cache()

    def clear_cache(self):
        """Drop the tensors cached by the last call (a ``backward`` then raises)."""
        for name in self._cache_names:
            setattr(self, name, None)

    # ---------------------------------------------------------------- helpers
    def _name(self):
        return type(self).__name__

    def _check_pred(self, pred, what, ndim=None):
        if not isinstance(pred, np.ndarray):
            pred = np.asarray(pred)
        if pred.dtype.kind != "f":
            raise ValueError(f"{self._name()}: {what} must be a float array, got dtype "
                             f"{pred.dtype}")
        if ndim is not None and pred.ndim != ndim:
            raise ValueError(f"{self._name()}: expected {what} of shape (N, C) (2-D), got "
                             f"shape {pred.shape}")
        return pred

    def _cached(self, name):
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(f"{self._name()}: backward called before the loss was "
                               "computed (call loss(pred, target) first)")
        return value

    def _scale(self, count):
        """The factor of the reduction: 1/count for "mean", 1 for "sum"."""
        return 1.0 / count if self.reduction == "mean" and count else 1.0

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._cache_names:
            state[name] = None
        return state

    def __repr__(self):
        extra = "" if self.reduction == "mean" else f"reduction={self.reduction!r}"
        return f"{self._name()}({extra})"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on raw scores (logits) and integer labels.

    ``loss = mean_i( logsumexp(logits[i]) - logits[i, y[i]] )``, computed with the row
    maximum subtracted, so logits of +-1000 give a finite loss and gradient.

    Shapes
    ------
    call: logits (N, C) float, target (N,) int in [0, C) -> float;
    backward: -> dlogits (N, C) = (softmax(logits) - onehot(y)) / N.
    """

    _cache_names = ("log_probs", "target")

    def forward(self, logits, target):
        """The loss of scores against integer labels; caches what backward needs.

        Parameters
        ----------
        logits : ndarray, shape (N, C), float
            Raw class scores.
        target : ndarray, shape (N,), int
            Class indices in [0, C).

        Returns
        -------
        float
            The mean (or, with ``reduction="sum"``, the summed) cross-entropy.
        """
        logits = self._check_pred(logits, "logits", ndim=2)
        n, c = logits.shape
        target = check_labels(target, n, c, self._name())
        log_probs = log_softmax(logits)
        self.log_probs, self.target = log_probs, target
        return float(-log_probs[np.arange(n), target].sum() * self._scale(n))

    def backward(self):
        """d(loss)/d(logits) of the last call.

        Returns
        -------
        ndarray, shape (N, C)
            ``(softmax(logits) - onehot(target)) / N`` (no ``/ N`` for "sum"), in the
            logits' dtype.
        """
        log_probs = self._cached("log_probs")
        n = log_probs.shape[0]
        grad = np.exp(log_probs)  # softmax probabilities, a new array
        grad[np.arange(n), self.target] -= 1
        grad *= grad.dtype.type(self._scale(n))
        return grad


class NLLLoss(Loss):
    """Negative log-likelihood of integer labels, given log-probabilities (for example
    the output of :class:`airi.layers.LogSoftmax`).

    ``loss = -mean_i( log_probs[i, y[i]] )``

    Shapes
    ------
    call: log_probs (N, C) float, target (N,) int in [0, C) -> float;
    backward: -> dlog_probs (N, C), ``-1/N`` at each sample's label, 0 elsewhere.
    """

    _cache_names = ("shape_dtype", "target")

    def forward(self, log_probs, target):
        """The negative log-likelihood of integer labels; caches what backward needs.

        Parameters
        ----------
        log_probs : ndarray, shape (N, C), float
            Log-probabilities (e.g. LogSoftmax's output).
        target : ndarray, shape (N,), int
            Class indices in [0, C).

        Returns
        -------
        float
            ``-mean(log_probs[i, target[i]])`` (the sum with ``reduction="sum"``).
        """
        log_probs = self._check_pred(log_probs, "log-probabilities", ndim=2)
        n, c = log_probs.shape
        target = check_labels(target, n, c, self._name())
        self.shape_dtype, self.target = (log_probs.shape, log_probs.dtype), target
        return float(-log_probs[np.arange(n), target].sum() * self._scale(n))

    def backward(self):
        """d(loss)/d(log_probs) of the last call.

        Returns
        -------
        ndarray, shape (N, C)
            ``-1/N`` (``-1`` for "sum") at each sample's label, 0 elsewhere, in the
            log-probabilities' dtype.
        """
        shape, dtype = self._cached("shape_dtype")
        n = shape[0]
        grad = np.zeros(shape, dtype=dtype)
        grad[np.arange(n), self.target] = -self._scale(n)
        return grad


class MSELoss(Loss):
    """Mean squared error over all elements: ``loss = mean((pred - target)**2)``.

    Shapes
    ------
    call: pred (any shape) float, target (same shape) -> float;
    backward: -> dpred (same shape) = 2 * (pred - target) / pred.size.
    """

    _cache_names = ("diff",)

    def forward(self, pred, target):
        """The mean squared error over all elements; caches ``pred - target``.

        Parameters
        ----------
        pred : ndarray, any shape, float
        target : ndarray, same shape as ``pred``, numeric (no broadcasting)

        Returns
        -------
        float
            ``mean((pred - target) ** 2)`` (the sum with ``reduction="sum"``).
        """
        pred = self._check_pred(pred, "prediction")
        target = np.asarray(target)
        if target.shape != pred.shape:
            raise ValueError(f"MSELoss: target shape {target.shape} does not match the "
                             f"prediction shape {pred.shape} (no broadcasting: reshape one "
                             "of them, e.g. y.reshape(-1, 1))")
        if target.dtype.kind not in "fiu":
            raise ValueError(f"MSELoss: target must be numeric, got dtype {target.dtype}")
        diff = pred - target
        self.diff = diff.astype(pred.dtype, copy=False)  # the gradient keeps pred's dtype
        return float(np.vdot(diff, diff) * self._scale(diff.size))

    def backward(self):
        """d(loss)/d(pred) of the last call.

        Returns
        -------
        ndarray, shape of ``pred``
            ``2 * (pred - target) / pred.size`` (no division for "sum"), in pred's dtype.
        """
        diff = self._cached("diff")
        return diff * diff.dtype.type(2.0 * self._scale(diff.size))
