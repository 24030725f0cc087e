"""airi's layers: Lego blocks with ``forward`` (caches) and ``backward`` (dL/dout -> dL/din).

Every layer derives from :class:`airi.layers.base.Layer`.
"""
from .base import Layer
from .linear import Linear
from .conv import Conv2D
from .pooling import MaxPool2D, AvgPool2D
from .activations import Relu, ReLU, LeakyRelu, Sigmoid, Tanh
from .shape import Flatten
from .softmax import Softmax, LogSoftmax

__all__ = [
    "Layer",
    "Linear",
    "Conv2D",
    "MaxPool2D",
    "AvgPool2D",
    "Relu",
    "ReLU",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Flatten",
    "Softmax",
    "LogSoftmax",
]

# Dropout and batch normalisation (layers part 2)
from .dropout import Dropout  # noqa: E402
from .normalization import BatchNorm1D, BatchNorm2D  # noqa: E402

__all__ += ["Dropout", "BatchNorm1D", "BatchNorm2D"]

# Networks beyond a chain: residual blocks and global pooling (issue 15)
from .residual import Residual  # noqa: E402
from .global_pool import GlobalAvgPool2D  # noqa: E402

__all__ += ["Residual", "GlobalAvgPool2D"]

def __getattr__(name):
    """``airi.layers.Dense`` and friends: say what airi calls the layer."""
    from .base import foreign_layer_error
    raise foreign_layer_error(__name__, name)
