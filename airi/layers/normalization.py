"""Batch normalisation: ``BatchNorm1D`` on (N, F) and ``BatchNorm2D`` on (N, C, H, W).

Training mode normalises each feature/channel with the statistics of the batch and
updates running estimates (PyTorch's convention: the biased batch variance normalises,
the unbiased one enters ``running_var``; momentum 0.1). Eval mode normalises with the
running estimates, so a prediction does not depend on the rest of the batch.

Distributed training (global-batch BatchNorm)
---------------------------------------------
Every quantity that couples the samples of a batch is a per-channel *sum*, and every
such sum goes through one function, the statistics reduction hook. It is the identity
for a single process; ``airi.distributed`` installs an MPI allreduce (sum over ranks)
with :func:`set_stats_allreduce`, and each rank then normalises with the statistics of
the global batch. The hook is called with a fresh, C-contiguous float64 array of shape
``(k, C)`` and must return an array of that shape holding the elementwise sum over all
ranks (reducing in place and returning the argument is fine):

* train-mode ``forward``: ``k = 3``, rows ``[count, sum(x), sum(x**2)]`` per channel;
* train-mode ``backward``: ``k = 2``, rows ``[sum(dout), sum(dout * xhat)]``.

Eval mode never calls it. Every rank must therefore run the same BatchNorm layers, in
the same order, in train mode, for every step (a collective's usual rule).

Numerics: ``sum(x**2)`` is not formed naively. Each rank centres its shard on its own
mean ``m_k`` (in the input dtype) and reports ``n_k * m_k`` and
``sum((x - m_k)**2) + n_k * m_k**2`` in float64; the global variance
``(Q - S**2 / n) / n`` is then a float64 difference, which loses only about
``1e-16 * mean**2 / var`` (relative), far below float32 precision, instead of the
``1e-7 * mean**2 / var`` of a float32 one-pass formula. For one process the shift
cancels exactly and the result is the two-pass variance.

Gradients: ``gamma.grad`` and ``beta.grad`` are this rank's *local* sums (the gradient
allreduce averages them like any other parameter); only the two sums that ``dx`` needs
are reduced. The reduced backward sums add each rank's ``dout`` as given: for results
equal to one process on the global batch, every rank's ``dout`` must be the gradient
of the same global loss up to a common factor (true for equal shards with per-rank mean
losses; with unequal shards, scale rank k's loss by ``n_k / n * K``).
"""
import numpy as np

from .. import functional as F
from .._config import resolve_dtype
from .base import Layer, StateChecker, _positive_int

__all__ = ["BatchNorm1D", "BatchNorm2D", "set_stats_allreduce", "get_stats_allreduce"]


def _local_stats(stats):
    """The single-process reduction: the local sums are the global sums."""
    return stats


_allreduce_stats = _local_stats


def set_stats_allreduce(fn):
    """Install ``fn(stats) -> summed stats`` as BatchNorm's statistics reduction.

    ``fn`` receives a float64 array of shape (k, C) and returns the elementwise sum over
    all processes (see the module docstring). ``None`` restores the single-process
    identity. Returns the previously installed function.
    """
    global _allreduce_stats
    previous = _allreduce_stats
    if fn is None:
        fn = _local_stats
    if not callable(fn):
        raise TypeError(f"set_stats_allreduce: expected a callable or None, got {fn!r}")
    _allreduce_stats = fn
    return previous


def get_stats_allreduce():
    """The statistics reduction currently installed."""
    return _allreduce_stats


def _reduce(stats):
    """Run the installed hook on ``stats`` (k, C) and check what it returns."""
    reduced = np.asarray(_allreduce_stats(stats), dtype=np.float64)
    if reduced.shape != stats.shape:
        raise RuntimeError(f"BatchNorm statistics hook returned shape {reduced.shape}, "
                           f"expected {stats.shape}")
    return reduced


class _BatchNorm(Layer):
    """Shared implementation; subclasses fix the input layout.

    ``_ndim`` is the input's number of dimensions; the channel axis is 1 and the
    statistics are taken over every other axis.
    """

    _ndim = None
    _cache_names = ("_xhat", "_invstd", "_count", "_batch_stats")
    _buffer_names = ("running_mean", "running_var")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=None):
        super().__init__()
        name = type(self).__name__
        num_features = _positive_int(num_features, "num_features", name)
        if not eps > 0:
            raise ValueError(f"{name}: eps must be > 0, got {eps!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1], got {momentum!r}")
        dtype = resolve_dtype(dtype)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.add_param("gamma", np.ones(self.num_features, dtype=dtype))
        self.add_param("beta", np.zeros(self.num_features, dtype=dtype))
        # Buffers: model state (saved, pickled, converted by to()), not trained.
        self.running_mean = np.zeros(self.num_features, dtype=dtype)
        self.running_var = np.ones(self.num_features, dtype=dtype)
        self.clear_cache()

    def check_state(self):
        """The checks of the constructor, on attributes read from a model file."""
        check = StateChecker(self)
        check.boolean("training")
        C = check.positive_int("num_features")
        check.real("eps", 0.0, low_open=True)
        check.real("momentum", 0.0, 1.0)
        check.params({"gamma": (C,), "beta": (C,)}, ("num_features",))
        for name in self._buffer_names:
            check.buffer(name, (C,), ("num_features",))

    # ---------------------------------------------------------------- forward
    def forward(self, x, training=None):
        """x (N, C, ...) -> out, same shape; dtype that of x promoted with the params."""
        x = self._check_input(x, ndim=self._ndim, dims={1: self.num_features})
        x = x.astype(np.result_type(x.dtype, self.gamma.data.dtype), copy=False)
        if self._is_training(training):
            mean, invstd = self._batch_statistics(x)
        else:
            mean, invstd = self._running_stats()
        out, self._xhat = F.batch_norm_forward(x, mean, invstd, self.gamma.data,
                                               self.beta.data)
        self._invstd = invstd                            # (C,) float64
        return out

    def _batch_statistics(self, x):
        """Mean and 1/std (float64, (C,)) of the (global) batch, of which x is this
        process's shard; updates the running statistics."""
        count, total, total_sq = _reduce(F.batch_norm_stats(x))
        n = count[0]
        if n < 2:
            raise ValueError(f"{self._name()}: training needs more than 1 value per "
                             f"channel, got input of shape {x.shape}")
        mean = total / n
        var = np.maximum((total_sq - total * mean) / n, 0.0)
        self._count = n
        self._batch_stats = True
        self._update_running_stats(mean, var * (n / (n - 1)))
        return mean, 1.0 / np.sqrt(var + self.eps)

    def _running_stats(self):
        """Eval mode: the running mean and 1/std, float64 (C,)."""
        self._count = None
        self._batch_stats = False
        return (self.running_mean.astype(np.float64),
                1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps))

    def _update_running_stats(self, mean, unbiased_var):
        m = self.momentum
        self.running_mean[...] = (1.0 - m) * self.running_mean + m * mean
        self.running_var[...] = (1.0 - m) * self.running_var + m * unbiased_var

    # --------------------------------------------------------------- backward
    def backward(self, dout):
        """dout (shape of x) -> dx; stores gamma.grad and beta.grad (local sums)."""
        xhat = self._cached("_xhat")
        dout = self._check_dout(dout, xhat.shape)
        dbeta, dgamma = F.batch_norm_grad_sums(dout, xhat)
        self.gamma.set_grad(dgamma)
        self.beta.set_grad(dbeta)
        scale = self.gamma.data.astype(np.float64) * self._invstd
        if not self._batch_stats:
            # Running statistics are constants: the layer is a per-channel affine map.
            return F.batch_norm_backward(dout, xhat, scale)
        # dx = gamma/std * (dout - mean(dout) - xhat * mean(dout * xhat)), the means
        # taken over the global batch.
        stats = np.empty((2, self.num_features), dtype=np.float64)
        stats[0], stats[1] = dbeta, dgamma
        sum_dout, sum_dout_xhat = _reduce(stats)
        return F.batch_norm_backward(dout, xhat, scale, sum_dout / self._count,
                                     sum_dout_xhat / self._count)

    # ------------------------------------------------------------ state/dtype
    def to(self, dtype):
        """Convert gamma, beta and the running statistics to ``dtype``; returns self."""
        dtype = resolve_dtype(dtype)
        super().to(dtype)
        for name in self._buffer_names:
            setattr(self, name, getattr(self, name).astype(dtype, copy=False))
        return self

    def state_dict(self):
        """``gamma``, ``beta``, ``running_mean``, ``running_var`` (copies)."""
        state = super().state_dict()
        for name in self._buffer_names:
            state[name] = getattr(self, name).copy()
        return state

    def load_state_dict(self, state):
        for name in self._buffer_names:
            if name not in state:
                raise KeyError(f"{self._name()}: state has no entry {name!r}")
            value = np.asarray(state[name])
            if value.shape != (self.num_features,):
                raise ValueError(f"{self._name()}: {name} has shape {value.shape}, "
                                 f"expected {(self.num_features,)}")
        super().load_state_dict(state)
        for name in self._buffer_names:
            getattr(self, name)[...] = np.asarray(state[name])

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1D(_BatchNorm):
    """Batch normalisation over the batch axis of (N, F) features.

    ``out = gamma * (x - mean) / sqrt(var + eps) + beta`` per feature, with the batch's
    mean and biased variance in training mode and the running estimates in eval mode.

    Parameters
    ----------
    num_features : int
        F, the number of features.
    eps : float
        Added to the variance for stability.
    momentum : float
        Weight of the new batch in the running estimates:
        ``running = (1 - momentum) * running + momentum * batch`` (unbiased variance).
    dtype : float dtype, optional
        Dtype of gamma, beta and the running statistics (default: airi's default dtype).

    Attributes
    ----------
    gamma, beta : Parameter, shape (F,)
    running_mean, running_var : ndarray, shape (F,)

    Shapes
    ------
    forward:  x (N, F) -> out (N, F)
    backward: dout (N, F) -> dx (N, F)
    """

    _ndim = 2


class BatchNorm2D(_BatchNorm):
    """Batch normalisation of each channel of (N, C, H, W) feature maps.

    Statistics per channel are taken over N, H and W (every position of every image),
    otherwise as :class:`BatchNorm1D`.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps, momentum, dtype
        As for :class:`BatchNorm1D`.

    Attributes
    ----------
    gamma, beta : Parameter, shape (C,)
    running_mean, running_var : ndarray, shape (C,)

    Shapes
    ------
    forward:  x (N, C, H, W) -> out (N, C, H, W)
    backward: dout (N, C, H, W) -> dx (N, C, H, W)
    """

    _ndim = 4
