"""Element-wise activations: ``Relu`` (alias ``ReLU``), ``LeakyRelu``, ``Sigmoid``, ``Tanh``.

All accept any shape; ``backward(dout)`` takes and returns arrays of the input's shape.
None of them modifies its input or ``dout`` in place (a ``dout`` may be a view of an
array that another layer still needs). The maths of each is a pair of functions in
:mod:`airi.functional` (``relu_forward`` / ``relu_backward`` ...).
"""
from .. import functional as F
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
        out = F.relu_forward(self._check_input(x))
        self._keep(out, training)
        return out

    def backward(self, dout):
        """dout (...) -> dx (...)."""
        return F.relu_backward(dout, self._cached_for(dout))


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
        self._keep(x, training)
        return F.leaky_relu_forward(x, self.alpha)

    def backward(self, dout):
        """dout (...) -> dx (...): dout where x > 0, else alpha * dout."""
        return F.leaky_relu_backward(dout, self._cached_for(dout), self.alpha)

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
        out = F.sigmoid_forward(self._check_input(x))
        self._keep(out, training)
        return out

    def backward(self, dout):
        """dout (...) -> dx (...)."""
        return F.sigmoid_backward(dout, self._cached_for(dout))


class Tanh(_Elementwise):
    """Hyperbolic tangent.

    Shapes
    ------
    forward: x (any shape) -> out (same shape), values in (-1, 1);
    backward: dout -> dx = dout * (1 - out**2).
    """

    def forward(self, x, training=None):
        """x (...) -> tanh(x) (...). Caches the output."""
        out = F.tanh_forward(self._check_input(x))
        self._keep(out, training)
        return out

    def backward(self, dout):
        """dout (...) -> dx (...)."""
        return F.tanh_backward(dout, self._cached_for(dout))
