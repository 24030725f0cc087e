"""``Conv2D``: a 2-D convolution (cross-correlation, as in PyTorch) on NCHW tensors.

The layer holds the filters, the mode and the cache; the maths is
:func:`airi.functional.conv2d_forward` / :func:`~airi.functional.conv2d_backward`
(im2col + one matrix product, or a faster algorithm chosen per pass with the same
result: see airi/functional/conv.py)::

    forward:   out = W2 @ im2col(x) + b                  W2 = W.reshape(F, C*kh*kw)
    backward:  dW = dout @ im2col(x).T,  db = dout.sum((0, 2, 3)),
               dx = col2im(W2.T @ dout)
"""
import numpy as np

from .. import functional as F
from .. import init as initializers
from .._config import resolve_dtype
from ..functional._checks import pair, require_float
from .base import Layer, StateChecker, _positive_int

__all__ = ["Conv2D"]


class Conv2D(Layer):
    """2-D convolution layer (NCHW, cross-correlation).

    Parameters
    ----------
    in_channels : int
        C, the channels of the input.
    num_filters : int
        F, the number of filters (output channels).
    filter_size : int or (int, int)
        Kernel size k or (kh, kw).
    stride : int or (int, int)
    pad : int or (int, int)
        Zero padding added on both sides of each spatial axis.
    bias : bool
        Learn a bias per filter (zeros at start).
    dtype : dtype, optional
        Parameter dtype; None means the default (float32).
    init : str or callable
        ``"kaiming"`` (He normal, fan_in = C*kh*kw; default), ``"xavier"``, ...

    Attributes
    ----------
    W : Parameter, shape (F, C, kh, kw)
    b : Parameter, shape (F,) (absent when ``bias=False``)
    x : ndarray or None
        The input of the last training-mode forward pass (for backward).
    cols : ndarray (C*kh*kw, N, Ho*Wo) or None
        Its columns, kept only when the im2col algorithm ran and they are small (else
        backward recomputes them).

    Shapes
    ------
    forward: x (N, C, H, W) -> out (N, F, Ho, Wo) with
    ``Ho = (H + 2*ph - kh) // sh + 1``, ``Wo = (W + 2*pw - kw) // sw + 1``;
    backward: dout (N, F, Ho, Wo) -> dx (N, C, H, W).
    """

    _cache_names = ("x", "cols")

    def __init__(self, in_channels, num_filters, filter_size, stride=1, pad=0, bias=True,
                 dtype=None, init="kaiming"):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels", "Conv2D")
        self.num_filters = _positive_int(num_filters, "num_filters", "Conv2D")
        self.filter_size = pair(filter_size, "Conv2D filter_size")
        self.stride = pair(stride, "Conv2D stride")
        self.pad = pair(pad, "Conv2D pad")
        if min(self.filter_size) < 1 or min(self.stride) < 1 or min(self.pad) < 0:
            raise ValueError(f"Conv2D: need filter_size >= 1, stride >= 1 and pad >= 0, got "
                             f"filter_size={self.filter_size}, stride={self.stride}, "
                             f"pad={self.pad}")
        self.bias = bool(bias)
        dtype = resolve_dtype(dtype)
        shape = (self.num_filters, self.in_channels) + self.filter_size
        self.add_param("W", initializers.make_weight(shape, init, dtype))
        if self.bias:
            self.add_param("b", initializers.zeros((self.num_filters,), dtype=dtype))
        self.x = None
        self.cols = None

    def check_state(self):
        """The checks of the constructor, on attributes read from a model file."""
        check = StateChecker(self)
        check.boolean("training")
        C = check.positive_int("in_channels")
        filters = check.positive_int("num_filters")
        kernel = check.int_pair("filter_size", 1)
        check.int_pair("stride", 1)
        check.int_pair("pad", 0)
        shapes = {"W": (filters, C) + kernel}
        if check.boolean("bias"):
            shapes["b"] = (filters,)
        check.params(shapes, ("num_filters", "in_channels", "filter_size"))

    def output_shape(self, x_shape):
        """The output shape (N, F, Ho, Wo) for an input of shape (N, C, H, W)."""
        N, _, H, W = x_shape
        try:
            Ho, Wo = F.conv_output_shape(H, W, self.filter_size, self.stride, self.pad)
        except ValueError as exc:
            raise ValueError(f"Conv2D: input of shape {tuple(x_shape)} does not fit the "
                             f"filter: {exc}") from None
        return N, self.num_filters, Ho, Wo

    def forward(self, x, training=None):
        """x (N, C, H, W) -> out (N, F, Ho, Wo). Keeps x (and small columns) when
        training."""
        x = self._check_input(x, ndim=4, dims={1: self.in_channels})
        require_float(x, self._name())
        self.output_shape(x.shape)
        x = np.ascontiguousarray(x)
        b = self.b.data if self.bias else None
        if self._is_training(training):
            out, self.cols = F.conv2d_forward(x, self.W.data, b, self.stride, self.pad,
                                              return_cols=True)
            self.x = x
        else:
            out = F.conv2d_forward(x, self.W.data, b, self.stride, self.pad)
            self.x = self.cols = None
        return out

    def backward(self, dout):
        """dout (N, F, Ho, Wo) -> dx (N, C, H, W); sets W.grad (F, C, kh, kw) and
        b.grad (F,)."""
        return self._backward(dout, input_grad=True)

    def backward_params(self, dout):
        """dout (N, F, Ho, Wo) -> None; sets W.grad and b.grad without computing dx
        (the first layer of a network: its input is data)."""
        self._backward(dout, input_grad=False)

    def _backward(self, dout, input_grad):
        x = self._cached("x")
        dout = self._check_dout(dout, self.output_shape(x.shape))
        dx, dW, db = F.conv2d_backward(dout, x, self.W.data, self.stride, self.pad,
                                       cols=self.cols, input_grad=input_grad,
                                       bias=self.bias)
        self.W.set_grad(dW)
        if self.bias:
            self.b.set_grad(db)
        return dx

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, num_filters={self.num_filters}, "
                f"filter_size={self.filter_size}, stride={self.stride}, pad={self.pad}, "
                f"bias={self.bias}")
