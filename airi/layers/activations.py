"""Element-wise activations: ``Relu`` (alias ``ReLU``), ``LeakyRelu``, ``Sigmoid``, ``Tanh``.

All accept any shape; ``backward(dout)`` takes and returns arrays of the input's shape.
None of them modifies its input or ``dout`` in place (a ``dout`` may be a view of an
array that another layer still needs).
"""
import numpy as np

from .. import _parallel
from .base import Layer, StateChecker

__all__ = ["Relu", "ReLU", "LeakyRelu", "Sigmoid", "Tanh"]


class _Elementwise(Layer):
    """Caches one array (``self.cache``) in training and checks ``dout`` against it."""

    _cache_names = ("cache",)

    def __init__(self):
        super().__init__()
        self.cache = None

    def _keep(self, array, training):
        self.cache = array if self._is_training(training) else None

    def _cached_for(self, dout):
        cache = self._cached("cache")
        self._check_dout(dout, cache.shape)
        return cache


class Relu(_Elementwise):
    """Rectified linear unit: ``out = max(x, 0)``.

    Shapes
    ------
    forward: x (any shape) -> out (same shape);
    backward: dout (same shape) -> dx = dout where x > 0, else 0.
    """

    def forward(self, x, training=None):
        """x (...) -> max(x, 0) (...). Caches the output (its sign is the mask)."""
        x = self._check_input(x)
        out = np.empty(x.shape, dtype=np.result_type(x.dtype, 0))
        if x.ndim == 0:
            np.maximum(x, 0, out=out)
        else:  # big batches: one slice per thread (NumPy releases the GIL)
            _parallel.over_batch(lambda a, b: np.maximum(x[a:b], 0, out=out[a:b]),
                                 len(x), x.size)
        self._keep(out, training)
        return out

    def backward(self, dout):
        """dout (...) -> dx (...)."""
        out = self._cached_for(dout)
        if out.ndim == 0:
            return np.multiply(dout, out > 0)
        dx = np.empty(out.shape, dtype=dout.dtype)
        # 6x faster than np.where(out > 0, dout, 0): one SIMD pass, no 0 to promote
        _parallel.over_batch(
            lambda a, b: np.multiply(dout[a:b], out[a:b] > 0, out=dx[a:b]),
            len(out), out.size)
        return dx


ReLU = Relu


class LeakyRelu(_Elementwise):
    """Leaky ReLU: ``out = x`` where x > 0, else ``alpha * x``.

    Parameters
    ----------
    alpha : float
        Slope for negative inputs.

    Shapes
    ------
    forward: x (any shape) -> out (same shape); backward: dout -> dx (same shape).
    """

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = float(alpha)

    def check_state(self):
        """The checks of the constructor, on attributes read from a model file."""
        check = StateChecker(self)
        check.boolean("training")
        check.real("alpha")
        check.params({})

    def forward(self, x, training=None):
        """x (...) -> out (...). Caches the input."""
        x = self._check_input(x)
        out = np.where(x > 0, x, self.alpha * x)
        self._keep(x, training)
        return out

    def backward(self, dout):
        """dout (...) -> dx (...): dout where x > 0, else alpha * dout."""
        x = self._cached_for(dout)
        return np.where(x > 0, dout, self.alpha * dout)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Sigmoid(_Elementwise):
    """Logistic sigmoid: ``out = 1 / (1 + exp(-x))``.

    Computed as ``0.5 * (1 + tanh(x / 2))``, the same function without the overflow
    of ``exp(-x)`` for very negative x.

    Shapes
    ------
    forward: x (any shape) -> out (same shape), values in (0, 1);
    backward: dout -> dx = dout * out * (1 - out).
    """

    def forward(self, x, training=None):
        """x (...) -> sigmoid(x) (...). Caches the output."""
        x = self._check_input(x)
        out = np.tanh(0.5 * x)
        out += 1
        out *= 0.5
        self._keep(out, training)
        return out

    def backward(self, dout):
        """dout (...) -> dx (...)."""
        out = self._cached_for(dout)
        return dout * out * (1 - out)


class Tanh(_Elementwise):
    """Hyperbolic tangent.

    Shapes
    ------
    forward: x (any shape) -> out (same shape), values in (-1, 1);
    backward: dout -> dx = dout * (1 - out**2).
    """

    def forward(self, x, training=None):
        """x (...) -> tanh(x) (...). Caches the output."""
        x = self._check_input(x)
        out = np.tanh(x)
        self._keep(out, training)
        return out

    def backward(self, dout):
        """dout (...) -> dx (...)."""
        out = self._cached_for(dout)
        return dout * (1 - out * out)
