"""Pooling layers: ``MaxPool2D`` and ``AvgPool2D`` on NCHW tensors (no padding).

The layers keep the window and the cache; the maths is in :mod:`airi.functional`
(``max_pool2d_forward`` ... ``avg_pool2d_backward``).
"""
from .. import functional as F
from ..functional._checks import pair, require_float
from .base import Layer, StateChecker

__all__ = ["MaxPool2D", "AvgPool2D"]


class _Pool2D(Layer):
    """Shared set-up of the pooling layers: window, stride and shape checks."""

    def __init__(self, pool_size=2, stride=None):
        super().__init__()
        self.pool_size = pair(pool_size, f"{self._name()} pool_size")
        self.stride = (self.pool_size if stride is None
                       else pair(stride, f"{self._name()} stride"))
        if min(self.pool_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{self._name()}: pool_size and stride must be >= 1, got "
                             f"pool_size={self.pool_size}, stride={self.stride}")
        self.x_shape = None

    def check_state(self):
        """The checks of the constructor, on attributes read from a model file."""
        check = StateChecker(self)
        check.boolean("training")
        check.int_pair("pool_size", 1)
        check.int_pair("stride", 1)
        check.params({})

    def output_shape(self, x_shape):
        """(N, C, H, W) -> (N, C, Ho, Wo) with Ho = (H - kh) // sh + 1 (Wo likewise)."""
        N, C, H, W = x_shape
        try:
            Ho, Wo = F.conv_output_shape(H, W, self.pool_size, self.stride, (0, 0))
        except ValueError as exc:
            raise ValueError(f"{self._name()}: input of shape {tuple(x_shape)} is smaller "
                             f"than the pooling window: {exc}") from None
        return N, C, Ho, Wo

    def _check(self, x):
        x = self._check_input(x, ndim=4)
        require_float(x, self._name())
        self.output_shape(x.shape)
        return x

    def extra_repr(self):
        return f"pool_size={self.pool_size}, stride={self.stride}"


class MaxPool2D(_Pool2D):
    """Max pooling: each output is the maximum of its ``pool_size`` window.

    Parameters
    ----------
    pool_size : int or (int, int)
        Window (kh, kw).
    stride : int or (int, int), optional
        Defaults to ``pool_size`` (non-overlapping windows).

    Shapes
    ------
    forward: x (N, C, H, W) -> out (N, C, Ho, Wo), ``Ho = (H - kh) // sh + 1``;
    backward: dout (N, C, Ho, Wo) -> dx (N, C, H, W), each gradient routed to the
    position of its window's (first) maximum, zeros elsewhere.
    """

    _cache_names = ("argmax", "x_shape")

    def __init__(self, pool_size=2, stride=None):
        super().__init__(pool_size, stride)
        self.argmax = None

    def forward(self, x, training=None):
        """x (N, C, H, W) -> out (N, C, Ho, Wo). Caches where each max came from."""
        x = self._check(x)
        out, argmax = F.max_pool2d_forward(x, self.pool_size, self.stride)
        if self._is_training(training):
            self.argmax, self.x_shape = argmax, x.shape
        else:
            self.argmax = self.x_shape = None
        return out

    def backward(self, dout):
        """dout (N, C, Ho, Wo) -> dx (N, C, H, W)."""
        argmax = self._cached("argmax")
        dout = self._check_dout(dout, argmax.shape)
        return F.max_pool2d_backward(dout, argmax, self.x_shape, self.pool_size,
                                     self.stride)


class AvgPool2D(_Pool2D):
    """Average pooling: each output is the mean of its ``pool_size`` window.

    Parameters
    ----------
    pool_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``pool_size``.

    Shapes
    ------
    forward: x (N, C, H, W) -> out (N, C, Ho, Wo);
    backward: dout (N, C, Ho, Wo) -> dx (N, C, H, W), each gradient spread evenly over
    its window.
    """

    _cache_names = ("x_shape",)

    def forward(self, x, training=None):
        """x (N, C, H, W) -> out (N, C, Ho, Wo). Caches only the input shape."""
        x = self._check(x)
        out = F.avg_pool2d_forward(x, self.pool_size, self.stride)
        self.x_shape = x.shape if self._is_training(training) else None
        return out

    def backward(self, dout):
        """dout (N, C, Ho, Wo) -> dx (N, C, H, W)."""
        x_shape = self._cached("x_shape")
        dout = self._check_dout(dout, self.output_shape(x_shape))
        return F.avg_pool2d_backward(dout, x_shape, self.pool_size, self.stride)
