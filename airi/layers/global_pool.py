"""``GlobalAvgPool2D``: the mean of each feature map, (N, C, H, W) -> (N, C)."""
import numpy as np

from .base import Layer, StateChecker

__all__ = ["GlobalAvgPool2D"]


class GlobalAvgPool2D(Layer):
    """Average every channel over all its positions: (N, C, H, W) -> (N, C).

    What ResNets put between the last convolution and the classifier (PyTorch writes
    ``AdaptiveAvgPool2d(1)`` followed by ``flatten``): the network then accepts any
    image size.

    Shapes
    ------
    forward:  x (N, C, H, W) -> out (N, C), ``out[n, c] = mean(x[n, c])``
    backward: dout (N, C) -> dx (N, C, H, W), ``dx[n, c, i, j] = dout[n, c] / (H * W)``
    """

    _cache_names = ("_in_shape",)

    def __init__(self):
        super().__init__()
        self.clear_cache()

    def check_state(self):
        """Check attributes read from a model file: a mode, no parameters."""
        check = StateChecker(self)
        check.boolean("training")
        check.params({})

    def forward(self, x, training=None):
        """x (N, C, H, W) -> (N, C), in x's dtype."""
        x = self._check_input(x, ndim=4)
        if x.shape[2] * x.shape[3] == 0:
            raise ValueError(f"GlobalAvgPool2D: feature maps of shape {x.shape} are empty")
        self._in_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dout):
        """dout (N, C) -> dx (N, C, H, W): each position gets 1/(H*W) of its channel's
        gradient."""
        shape = self._cached("_in_shape")
        dout = self._check_dout(dout, shape[:2])
        scale = dout.dtype.type(1.0 / (shape[2] * shape[3]))
        dx = np.empty(shape, dtype=dout.dtype)
        dx[...] = (dout * scale)[:, :, None, None]
        return dx
