"""``Flatten``: (N, d1, d2, ...) -> (N, d1*d2*...), the bridge from conv to linear layers."""
import math

from .base import Layer

__all__ = ["Flatten"]


class Flatten(Layer):
    """Flatten every axis but the first (the batch).

    Shapes
    ------
    forward: x (N, d1, ..., dk) -> out (N, d1*...*dk), a view when x is contiguous;
    backward: dout (N, d1*...*dk) -> dx (N, d1, ..., dk).
    """

    _cache_names = ("x_shape",)

    def __init__(self):
        super().__init__()
        self.x_shape = None

    def forward(self, x, training=None):
        """x (N, ...) -> out (N, prod(...)). Caches the input shape."""
        x = self._check_input(x)
        if x.ndim < 2:
            raise ValueError(f"Flatten: expected an input with a batch axis, (N, ...) with "
                             f"at least 2 dimensions, got shape {x.shape}")
        self.x_shape = x.shape if self._is_training(training) else None
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, dout):
        """dout (N, prod(...)) -> dx (N, ...)."""
        x_shape = self._cached("x_shape")
        self._check_dout(dout, (x_shape[0], math.prod(x_shape[1:])))
        return dout.reshape(x_shape)

    def output_shape(self, x_shape):
        """(N, d1, ..., dk) -> (N, d1*...*dk)."""
        return (x_shape[0], math.prod(x_shape[1:]))
