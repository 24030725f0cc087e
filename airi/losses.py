"""Loss functions: ``CrossEntropyLoss``, ``NLLLoss``, ``MSELoss``, ``BCEWithLogitsLoss``
and ``BCELoss`` (PyTorch's names and semantics).

A loss is called on a prediction and a target and returns a Python float; it caches
what its gradient needs, and ``backward()`` returns d(loss)/d(prediction), an array of the
prediction's shape and dtype, to feed the last layer's ``backward``::

    loss_fn = CrossEntropyLoss()
    loss = loss_fn(scores, y)        # scores (N, C) float, y (N,) int -> float
    dscores = loss_fn.backward()     # (N, C)
"""
import numpy as np

from .layers.softmax import check_labels, log_softmax

__all__ = ["Loss", "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss", "BCELoss"]

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


def _class_weight(owner, weight):
    """``weight`` as a 1-D float64 array of finite values (None stays None)."""
    if weight is None:
        return None
    w = np.array(weight, dtype=np.float64)   # a copy: later changes to the input don't leak
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"{owner}: weight must be a 1-D array with one weight per class, "
                         f"got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{owner}: weight must be finite")
    return w


def _weights_of_labels(owner, weight, target, num_classes):
    """Each sample's class weight ``weight[target]`` (N,), float64, after checking that
    ``weight`` has one entry per class."""
    if weight.shape != (num_classes,):
        raise ValueError(f"{owner}: weight has {weight.size} entries but the input has "
                         f"{num_classes} classes")
    return weight[target]


def _check_weight_state(loss, name, ndim=1):
    """``loss.<name>`` read from a file: None, or a finite float64 array (1-D when
    ``ndim`` is 1), as the constructor makes it."""
    value = vars(loss).get(name, "missing")
    if value is None:
        return
    if type(value) is not np.ndarray or value.dtype != np.float64 or \
            (ndim is not None and value.ndim != ndim) or not np.all(np.isfinite(value)):
        raise ValueError(f"{type(loss).__name__}.{name} must be None or a finite float64 "
                         f"array{' (1-D)' if ndim == 1 else ''}, got "
                         f"{getattr(value, 'dtype', type(value).__name__)}")


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on raw scores (logits) and integer labels
    (``torch.nn.CrossEntropyLoss``), with optional class weights and label smoothing.

    With ``lp = log_softmax(logits)``, ``w`` the class weights (ones when None), ``e``
    the label smoothing and C the number of classes, sample i contributes

    ``l_i = (1 - e) * (-w[y_i] * lp[i, y_i]) + (e / C) * sum_c (-w[c] * lp[i, c])``

    and the loss is ``sum_i l_i / sum_i w[y_i]`` (PyTorch's weighted mean; ``N`` without
    weights) or ``sum_i l_i`` with ``reduction="sum"``. The log-softmax subtracts the row
    maximum, so logits of +-1000 give a finite loss and gradient.

    Parameters
    ----------
    weight : array_like (C,), optional
        A weight per class (e.g. larger for rare classes).
    label_smoothing : float in [0, 1]
        The share of the target spread uniformly over all classes (0: none).
    reduction : {"mean", "sum"}

    Shapes
    ------
    call: logits (N, C) float, target (N,) int in [0, C) -> float;
    backward: -> dlogits (N, C); without weights or smoothing
    ``(softmax(logits) - onehot(y)) / N``.
    """

    _cache_names = ("log_probs", "target", "coef")

    def __init__(self, weight=None, label_smoothing=0.0, reduction="mean"):
        super().__init__(reduction)
        self.weight = _class_weight(self._name(), weight)
        smoothing = float(label_smoothing)
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"{self._name()}: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing!r}")
        self.label_smoothing = smoothing

    def check_state(self):
        """Check attributes read from a model file (``airi.load`` calls it)."""
        super().check_state()
        _check_weight_state(self, "weight")
        smoothing = vars(self).get("label_smoothing")
        if type(smoothing) is not float or not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"{self._name()}.label_smoothing must be a float in [0, 1], "
                             f"got {str(smoothing)[:40]!r}")

    def _coefficients(self, target, n, c):
        """``a`` (N, C) float64 such that loss = -sum(a * lp): the (smoothed, weighted)
        targets divided by the normaliser of the reduction."""
        eps = self.label_smoothing
        w = np.ones(c) if self.weight is None else self.weight
        label_w = (np.ones(n) if self.weight is None
                   else _weights_of_labels(self._name(), self.weight, target, c))
        coef = np.zeros((n, c))
        coef[np.arange(n), target] = (1.0 - eps) * label_w
        if eps:
            coef += (eps / c) * w
        if self.reduction == "mean":
            total = label_w.sum()
            coef /= total if total != 0 else np.nan   # PyTorch: 0/0 is nan
        return coef

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
            The (weighted) mean, or with ``reduction="sum"`` the sum, of the
            per-sample losses.
        """
        logits = self._check_pred(logits, "logits", ndim=2)
        n, c = logits.shape
        target = check_labels(target, n, c, self._name())
        log_probs = log_softmax(logits)
        if self.weight is None and not self.label_smoothing:
            # the plain case, kept exactly as before (and cheaper)
            self.log_probs, self.target, self.coef = log_probs, target, None
            return float(-log_probs[np.arange(n), target].sum() * self._scale(n))
        coef = self._coefficients(target, n, c)
        self.log_probs, self.target, self.coef = log_probs, target, coef
        return float(-np.vdot(coef, log_probs))

    def backward(self):
        """d(loss)/d(logits) of the last call.

        Returns
        -------
        ndarray, shape (N, C)
            ``softmax * sum_c(a) - a`` with ``a`` the normalised targets of the loss
            (``(softmax(logits) - onehot(target)) / N`` in the plain case), in the
            logits' dtype.
        """
        log_probs = self._cached("log_probs")
        n = log_probs.shape[0]
        grad = np.exp(log_probs)  # softmax probabilities, a new array
        if self.coef is None:
            grad[np.arange(n), self.target] -= 1
            grad *= grad.dtype.type(self._scale(n))
            return grad
        coef = self.coef
        grad *= coef.sum(axis=1, keepdims=True).astype(grad.dtype)
        grad -= coef.astype(grad.dtype)
        return grad

    def __repr__(self):
        parts = []
        if self.weight is not None:
            parts.append(f"weight={self.weight.tolist()}")
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        if self.reduction != "mean":
            parts.append(f"reduction={self.reduction!r}")
        return f"{self._name()}({', '.join(parts)})"


class NLLLoss(Loss):
    """Negative log-likelihood of integer labels, given log-probabilities (for example
    the output of :class:`airi.layers.LogSoftmax`) (``torch.nn.NLLLoss``).

    ``loss = -sum_i w[y_i] * log_probs[i, y_i] / sum_i w[y_i]`` (the weighted mean;
    ``w`` = 1 without weights, so ``-mean_i log_probs[i, y_i]``).

    Parameters
    ----------
    weight : array_like (C,), optional
        A weight per class.
    reduction : {"mean", "sum"}

    Shapes
    ------
    call: log_probs (N, C) float, target (N,) int in [0, C) -> float;
    backward: -> dlog_probs (N, C), ``-w[y_i] / sum_j w[y_j]`` at each sample's label
    (``-1/N`` without weights), 0 elsewhere.
    """

    _cache_names = ("shape_dtype", "target", "label_coef")

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.weight = _class_weight(self._name(), weight)

    def check_state(self):
        """Check attributes read from a model file (``airi.load`` calls it)."""
        super().check_state()
        _check_weight_state(self, "weight")

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
            The (weighted) mean of ``-log_probs[i, target[i]]`` (the sum with
            ``reduction="sum"``).
        """
        log_probs = self._check_pred(log_probs, "log-probabilities", ndim=2)
        n, c = log_probs.shape
        target = check_labels(target, n, c, self._name())
        if self.weight is None:
            label_coef = np.full(n, self._scale(n))
        else:
            label_w = _weights_of_labels(self._name(), self.weight, target, c)
            total = label_w.sum() if self.reduction == "mean" else 1.0
            label_coef = label_w / (total if total != 0 else np.nan)
        self.shape_dtype = (log_probs.shape, log_probs.dtype)
        self.target, self.label_coef = target, label_coef
        return float(-np.dot(label_coef, log_probs[np.arange(n), target]))

    def backward(self):
        """d(loss)/d(log_probs) of the last call.

        Returns
        -------
        ndarray, shape (N, C)
            ``-w[y_i] / sum_j w[y_j]`` (``-1/N`` unweighted; without the division for
            "sum") at each sample's label, 0 elsewhere, in the log-probabilities' dtype.
        """
        shape, dtype = self._cached("shape_dtype")
        n = shape[0]
        grad = np.zeros(shape, dtype=dtype)
        grad[np.arange(n), self.target] = -self.label_coef
        return grad

    def __repr__(self):
        parts = [] if self.weight is None else [f"weight={self.weight.tolist()}"]
        if self.reduction != "mean":
            parts.append(f"reduction={self.reduction!r}")
        return f"{self._name()}({', '.join(parts)})"


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


def _check_binary_target(owner, pred, target):
    """Float targets of ``pred``'s shape with values in [0, 1], as ``pred``'s dtype."""
    target = np.asarray(target)
    if target.shape != pred.shape:
        raise ValueError(f"{owner}: target shape {target.shape} does not match the input "
                         f"shape {pred.shape} (one 0/1 target per input value; for one "
                         "output per sample use y.reshape(-1, 1))")
    if target.dtype.kind not in "fiub":
        raise ValueError(f"{owner}: target must be numeric, got dtype {target.dtype}")
    if target.size and (np.min(target) < 0 or np.max(target) > 1 or
                        not np.all(np.isfinite(target))):
        raise ValueError(f"{owner}: targets must be in [0, 1], got values from "
                         f"{np.min(target)} to {np.max(target)}")
    return target.astype(pred.dtype, copy=False)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on raw scores (``torch.nn.BCEWithLogitsLoss``): a sigmoid
    and the binary cross-entropy in one, stable for any score.

    For each element, with ``p = pos_weight`` (1 when None, broadcast along the last
    axis, one weight per output):

    ``l = -(p * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x)))``
    ``  = (1 - y) * x + (1 + (p - 1) * y) * softplus(-x)``

    computed in the second form (``softplus(-x) = log1p(exp(-|x|)) + max(-x, 0)``), so
    scores of +-1000 give a finite loss. The loss is the mean over all elements (the sum
    with ``reduction="sum"``).

    Parameters
    ----------
    pos_weight : array_like, optional
        Weight of the positive targets, one per output (shape (K,) for inputs (N, K)),
        or a scalar; > 1 raises recall.
    reduction : {"mean", "sum"}

    Shapes
    ------
    call: logits (any shape) float, target (same shape) float in [0, 1] -> float;
    backward: -> dlogits (same shape) ``= (1 - y) - (1 + (p - 1) y) * sigmoid(-x)``
    divided by the number of elements (``sigmoid(x) - y`` per element without
    ``pos_weight``).
    """

    _cache_names = ("logits", "target_")

    def __init__(self, pos_weight=None, reduction="mean"):
        super().__init__(reduction)
        if pos_weight is not None:
            pos_weight = np.array(pos_weight, dtype=np.float64)
            if not np.all(np.isfinite(pos_weight)):
                raise ValueError("BCEWithLogitsLoss: pos_weight must be finite")
        self.pos_weight = pos_weight

    def check_state(self):
        """Check attributes read from a model file (``airi.load`` calls it)."""
        super().check_state()
        _check_weight_state(self, "pos_weight", ndim=None)

    def _log_weight(self, target):
        if self.pos_weight is None:
            return None
        try:
            return 1.0 + (self.pos_weight - 1.0) * target
        except ValueError:
            raise ValueError(f"BCEWithLogitsLoss: pos_weight of shape "
                             f"{self.pos_weight.shape} does not broadcast against the "
                             f"input of shape {target.shape} (give one weight per output, "
                             "the input's last axis)") from None

    def forward(self, logits, target):
        """The loss of scores against 0/1 (or soft) targets of the same shape.

        Parameters
        ----------
        logits : ndarray, float, any shape
        target : ndarray, same shape, values in [0, 1]

        Returns
        -------
        float
        """
        logits = self._check_pred(logits, "logits")
        target = _check_binary_target(self._name(), logits, target)
        log_weight = self._log_weight(target)
        softplus_neg = np.logaddexp(0.0, -logits)   # log(1 + exp(-x)), stable
        per_element = (1.0 - target) * logits + (softplus_neg if log_weight is None
                                                 else log_weight * softplus_neg)
        self.logits, self.target_ = logits, target
        return float(np.sum(per_element, dtype=np.float64) * self._scale(logits.size))

    def backward(self):
        """d(loss)/d(logits) of the last call, in the logits' dtype and shape."""
        logits = self._cached("logits")
        target = self.target_
        sig_neg = _sigmoid(-logits)
        log_weight = self._log_weight(target)
        if log_weight is None:
            grad = (1.0 - target) - sig_neg
        else:
            grad = (1.0 - target) - log_weight * sig_neg
        grad = np.asarray(grad * self._scale(logits.size)).astype(logits.dtype, copy=False)
        return grad

    def __repr__(self):
        parts = ([] if self.pos_weight is None
                 else [f"pos_weight={self.pos_weight.tolist()}"])
        if self.reduction != "mean":
            parts.append(f"reduction={self.reduction!r}")
        return f"{self._name()}({', '.join(parts)})"


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow warnings for large |x|."""
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


class BCELoss(Loss):
    """Binary cross-entropy of probabilities (``torch.nn.BCELoss``), e.g. the output of
    a :class:`airi.layers.Sigmoid`.

    ``l = -(y * log(x) + (1 - y) * log(1 - x))`` per element, each log clamped at -100
    as PyTorch does (so x = 0 or 1 gives a finite loss); the mean over all elements (the
    sum with ``reduction="sum"``). :class:`BCEWithLogitsLoss` on the scores before the
    sigmoid is more accurate.

    Parameters
    ----------
    reduction : {"mean", "sum"}

    Shapes
    ------
    call: probs (any shape) float in [0, 1], target (same shape) float in [0, 1] -> float;
    backward: -> dprobs ``= (x - y) / max(x * (1 - x), 1e-12)`` divided by the number of
    elements (PyTorch's formula).
    """

    _cache_names = ("probs", "target_")

    def forward(self, probs, target):
        """The loss of probabilities against 0/1 (or soft) targets of the same shape.

        Parameters
        ----------
        probs : ndarray, float, any shape, values in [0, 1]
        target : ndarray, same shape, values in [0, 1]

        Returns
        -------
        float
        """
        probs = self._check_pred(probs, "input")
        if probs.size and not (np.min(probs) >= 0 and np.max(probs) <= 1):
            raise ValueError(f"BCELoss: the input must hold probabilities in [0, 1], got "
                             f"values from {np.min(probs)} to {np.max(probs)} (for raw "
                             "scores use BCEWithLogitsLoss)")
        target = _check_binary_target(self._name(), probs, target)
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(probs), -100.0)
            log_q = np.maximum(np.log1p(-probs), -100.0)
        per_element = -(target * log_p + (1.0 - target) * log_q)
        self.probs, self.target_ = probs, target
        return float(np.sum(per_element, dtype=np.float64) * self._scale(probs.size))

    def backward(self):
        """d(loss)/d(probs) of the last call, in the input's dtype and shape."""
        probs = self._cached("probs")
        denom = np.maximum(probs * (1.0 - probs), 1e-12)
        grad = (probs - self.target_) / denom * self._scale(probs.size)
        return np.asarray(grad).astype(probs.dtype, copy=False)
