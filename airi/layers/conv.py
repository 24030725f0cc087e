"""``Conv2D``: a 2-D convolution (cross-correlation, as in PyTorch) on NCHW tensors.

The work is done by the backend's ``im2col`` / ``col2im`` kernels and BLAS:

forward::

    cols = im2col(x)                  (N, C*kh*kw, Ho*Wo)
    out  = W2 @ cols                  (N, F, Ho*Wo)   one batched GEMM, W2 = W.reshape(F, -1)
         -> reshape (N, F, Ho, Wo)                    free: already NCHW order
    out += b                                          broadcast, in place

backward::

    dW    = sum_n dout[n] @ cols[n].T (F, C*kh*kw)    batched GEMM, then a sum over n
    db    = dout.sum((0, 2, 3))       (F,)
    dcols = W2.T @ dout               (N, C*kh*kw, Ho*Wo)
    dx    = col2im(dcols)             (N, C, H, W)

A 1x1 convolution with stride 1 and no padding skips im2col/col2im: its columns are
just ``x.reshape(N, C, H*W)``.
"""
import numpy as np

from .. import _backend
from .._config import resolve_dtype
from .. import init as initializers
from .base import Layer
from .linear import add_bias, make_weight

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_kernel_dtype(layer, x):
    """The compiled kernels take float32 or float64 (not float16)."""
    if x.dtype not in _KERNEL_DTYPES:
        raise ValueError(f"{layer._name()}: input must be float32 or float64, got dtype "
                         f"{x.dtype} (convert it, e.g. x.astype(np.float32))")

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

    Shapes
    ------
    forward: x (N, C, H, W) -> out (N, F, Ho, Wo) with
    ``Ho = (H + 2*ph - kh) // sh + 1``, ``Wo = (W + 2*pw - kw) // sw + 1``;
    backward: dout (N, F, Ho, Wo) -> dx (N, C, H, W).
    """

    _cache_names = ("cols", "x_shape")

    def __init__(self, in_channels, num_filters, filter_size, stride=1, pad=0, bias=True,
                 dtype=None, init="kaiming"):
        super().__init__()
        self.in_channels, self.num_filters = int(in_channels), int(num_filters)
        if self.in_channels < 1 or self.num_filters < 1:
            raise ValueError(f"Conv2D: in_channels and num_filters must be >= 1, got "
                             f"{in_channels} and {num_filters}")
        self.filter_size = _backend.pair(filter_size, "Conv2D filter_size")
        self.stride = _backend.pair(stride, "Conv2D stride")
        self.pad = _backend.pair(pad, "Conv2D pad")
        if min(self.filter_size) < 1 or min(self.stride) < 1 or min(self.pad) < 0:
            raise ValueError(f"Conv2D: need filter_size >= 1, stride >= 1 and pad >= 0, got "
                             f"filter_size={self.filter_size}, stride={self.stride}, "
                             f"pad={self.pad}")
        self.bias = bool(bias)
        dtype = resolve_dtype(dtype)
        shape = (self.num_filters, self.in_channels) + self.filter_size
        self.add_param("W", make_weight(shape, init, dtype))
        if self.bias:
            self.add_param("b", initializers.zeros((self.num_filters,), dtype=dtype))
        self.cols = None
        self.x_shape = None

    # ----------------------------------------------------------------- helpers
    def output_shape(self, x_shape):
        """The output shape (N, F, Ho, Wo) for an input of shape (N, C, H, W)."""
        N, _, H, W = x_shape
        try:
            Ho, Wo = _backend.conv_output_shape(H, W, self.filter_size, self.stride,
                                                self.pad)
        except ValueError as exc:
            raise ValueError(f"Conv2D: input of shape {tuple(x_shape)} does not fit the "
                             f"filter: {exc}") from None
        return N, self.num_filters, Ho, Wo

    def _is_pointwise(self):
        """1x1 kernel, stride 1, no padding: the columns are the input itself."""
        return self.filter_size == (1, 1) and self.stride == (1, 1) and self.pad == (0, 0)

    def _to_cols(self, x):
        """x (N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo)."""
        if self._is_pointwise():
            N, C, H, W = x.shape
            return x.reshape(N, C, H * W)  # a view when x is contiguous
        return _backend.im2col(x, self.filter_size, self.stride, self.pad)

    def _from_cols(self, dcols, x_shape):
        """dcols (N, C*kh*kw, Ho*Wo) -> dx (N, C, H, W), summing overlapping windows."""
        if self._is_pointwise():
            return dcols.reshape(x_shape)
        return _backend.col2im(dcols, x_shape, self.filter_size, self.stride, self.pad)

    # ---------------------------------------------------------- forward/back
    def forward(self, x, training=None):
        """x (N, C, H, W) -> out (N, F, Ho, Wo). Caches the columns when training."""
        x = self._check_input(x, ndim=4, dims={1: self.in_channels})
        check_kernel_dtype(self, x)
        out_shape = self.output_shape(x.shape)
        cols = self._to_cols(x)
        W2 = self.W.data.reshape(self.num_filters, -1)
        out = np.matmul(W2, cols)  # (F, K) @ (N, K, P) -> (N, F, P): NCHW order already
        if self.bias:
            out = add_bias(out, self.b.data[:, None])
        if self._is_training(training):
            self.cols, self.x_shape = cols, x.shape
        else:
            self.cols = self.x_shape = None
        return out.reshape(out_shape)

    def backward(self, dout):
        """dout (N, F, Ho, Wo) -> dx (N, C, H, W); sets W.grad (F, C, kh, kw) and
        b.grad (F,)."""
        cols = self._cached("cols")
        x_shape = self.x_shape
        dout = self._check_dout(dout, self.output_shape(x_shape))
        N, F = dout.shape[:2]
        dout2 = dout.reshape(N, F, -1)                          # (N, F, P)
        W2 = self.W.data.reshape(F, -1)                         # (F, K)
        # (N, F, P) @ (N, P, K) -> (N, F, K); the transposed operand is a view that
        # BLAS reads as is, then the small per-sample results are summed.
        dW = np.matmul(dout2, cols.transpose(0, 2, 1)).sum(axis=0)
        self.W.set_grad(dW)
        if self.bias:
            self.b.set_grad(dout2.sum(axis=(0, 2)))
        dcols = np.matmul(W2.T, dout2)                          # (N, K, P)
        return self._from_cols(dcols, x_shape)

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, num_filters={self.num_filters}, "
                f"filter_size={self.filter_size}, stride={self.stride}, pad={self.pad}, "
                f"bias={self.bias}")
