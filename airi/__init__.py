"""airi: a readable CNN framework on NumPy whose hot loops are compiled with Cython.

Layers are Lego blocks: ``forward`` caches what ``backward`` needs, ``backward`` takes
dL/dout, stores the parameter gradients and returns dL/din.
"""
__version__ = "0.1.0"

from ._config import (get_default_dtype, set_default_dtype, seed, get_num_threads,
                      set_num_threads)
from ._backend import backend, set_backend, available_backends
from .parameter import Parameter
from .gradcheck import gradcheck

# --- exports added by each part of the library (keep one line per module) ---
from . import layers, losses, init  # noqa: E402  (layers part)
from .layers import (Layer, Linear, Conv2D, MaxPool2D, AvgPool2D, Relu, ReLU, LeakyRelu,
                     Sigmoid, Tanh, Flatten, Softmax, LogSoftmax)
from .losses import CrossEntropyLoss, NLLLoss, MSELoss, BCEWithLogitsLoss, BCELoss

from . import viz  # noqa: E402  (pictures; matplotlib is imported lazily inside)
from . import optim, lr_scheduler
from .sequential import Sequential  # noqa: E402
from .layers import Dropout, BatchNorm1D, BatchNorm2D  # noqa: E402
from .data import DataLoader
from . import data, datasets
from . import serialization
from .serialization import save, load, register_safe, ModelFileError, UnsafeModelError
from .trainer import Trainer  # noqa: E402  (training part)
from . import models  # noqa: E402
from . import onnx, interop  # noqa: E402  (ONNX export; the onnx package is imported lazily)
from . import distributed  # noqa: E402  (data-parallel training on MPI; mpi4py imported lazily)
from . import metrics  # noqa: E402  (networks beyond a chain, issue 15)
from .clip_grad import clip_grad_norm_  # noqa: E402
from .layers import Residual, GlobalAvgPool2D  # noqa: E402


def __getattr__(name):
    """``airi.Dense`` and friends: say what airi calls the layer."""
    from .layers.base import foreign_layer_error
    raise foreign_layer_error(__name__, name)
