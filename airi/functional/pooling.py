"""Max and average pooling on NCHW arrays (no padding), stateless.

Shapes: x (N, C, H, W) -> out (N, C, Ho, Wo) with ``Ho = (H - kh) // sh + 1`` and
``Wo`` likewise; the stride defaults to the window (non-overlapping windows).

Max pooling also returns ``argmax``: for each window the tap ``q = i*kw + j`` (window
row i, column j) of its FIRST maximum (a NaN counts as a maximum, the first NaN wins),
of :func:`maxpool_tap_dtype` (np.uint8 for windows of up to 256 elements, np.intp
beyond). The backward pass routes each gradient to exactly that position.
"""
import numpy as np

from .. import _backend, _numpy_kernels, _parallel, _planner
from ._checks import conv_output_shape, float_array, pair, x_shape_of

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
           "avg_pool2d_backward", "maxpool_tap_dtype"]


def _window(kernel, stride):
    kernel = pair(kernel, "kernel")
    return kernel, kernel if stride is None else pair(stride, "stride")


def _pooled_shape(x_shape, kernel, stride):
    Ho, Wo = conv_output_shape(x_shape[2], x_shape[3], kernel, stride, (0, 0))
    return (x_shape[0], x_shape[1], Ho, Wo)


def _over_batch(fn, N, elements):
    """Run ``fn(start, stop)`` over slices of the batch (one per thread when large)."""
    _parallel.run(lambda worker, a, b: fn(a, b), N,
                  _planner.elementwise_chunk(N, elements))


def maxpool_tap_dtype(kernel):
    """The dtype of the ``argmax`` taps for a ``kernel`` window: np.uint8 for windows
    of up to 256 elements, np.intp beyond (both backends)."""
    return _numpy_kernels.maxpool_tap_dtype(pair(kernel, "kernel"))


def max_pool2d_forward(x, kernel, stride=None):
    """Maximum of each window.

    Parameters
    ----------
    x : ndarray (N, C, H, W), float32 or float64
    kernel : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel``.

    Returns
    -------
    out : ndarray (N, C, Ho, Wo)
    argmax : ndarray (N, C, Ho, Wo) of :func:`maxpool_tap_dtype`
        The tap of each window's first maximum (see the module docstring).
    """
    x = float_array(x, "max-pool input", 4)
    kernel, stride = _window(kernel, stride)
    shape = _pooled_shape(x.shape, kernel, stride)
    out = np.empty(shape, dtype=x.dtype)
    argmax = np.empty(shape, dtype=_numpy_kernels.maxpool_tap_dtype(kernel))
    kernels = _backend.kernels()
    _over_batch(lambda a, b: kernels.maxpool_forward_into(x[a:b], out[a:b], argmax[a:b],
                                                          kernel, stride),
                x.shape[0], x.size)
    return out, argmax


def max_pool2d_backward(dout, argmax, x_shape, kernel, stride=None):
    """Route each gradient to its window's maximum.

    Parameters
    ----------
    dout : ndarray (N, C, Ho, Wo)
    argmax : ndarray (N, C, Ho, Wo)
        From :func:`max_pool2d_forward`.
    x_shape : (N, C, H, W)
    kernel, stride : as in the forward pass

    Returns
    -------
    dx : ndarray (N, C, H, W)
        dout at each window's tap, zeros elsewhere (overlapping windows add up).
    """
    dout = float_array(dout, "max-pool gradient", 4)
    x_shape = x_shape_of(x_shape)
    kernel, stride = _window(kernel, stride)
    expected = _pooled_shape(x_shape, kernel, stride)
    if dout.shape != expected or getattr(argmax, "shape", None) != expected:
        raise ValueError(f"max-pool backward: dout and argmax must have shape {expected}, "
                         f"got {dout.shape} and {getattr(argmax, 'shape', None)}")
    argmax = _taps(argmax, kernel)
    dx = np.empty(x_shape, dtype=dout.dtype)
    kernels = _backend.kernels()
    _over_batch(lambda a, b: kernels.maxpool_backward_into(dout[a:b], argmax[a:b],
                                                           dx[a:b], kernel, stride),
                x_shape[0], dx.size)
    return dx


def _taps(argmax, kernel):
    """argmax as C-contiguous taps of ``maxpool_tap_dtype(kernel)``. Integers of another
    dtype are converted, but only after checking that they are taps of the window (a
    cast would wrap, say, 260 to a valid uint8 tap 4); the kernels check them too."""
    want = _numpy_kernels.maxpool_tap_dtype(kernel)
    if not isinstance(argmax, np.ndarray) or argmax.dtype.kind not in "iu":
        raise ValueError("max-pool backward: argmax must be the integer array returned "
                         f"by max_pool2d_forward, got {type(argmax).__name__} of dtype "
                         f"{getattr(argmax, 'dtype', None)}")
    if argmax.dtype != want:
        K = kernel[0] * kernel[1]
        if argmax.size and (argmax.min() < 0 or argmax.max() >= K):
            raise ValueError(f"max-pool backward: argmax entries lie outside the "
                             f"{kernel[0]}x{kernel[1]} window (taps must be 0..{K - 1})")
        argmax = argmax.astype(want)
    return np.ascontiguousarray(argmax)


def avg_pool2d_forward(x, kernel, stride=None):
    """Mean of each window: x (N, C, H, W) -> out (N, C, Ho, Wo)."""
    x = float_array(x, "average-pool input", 4)
    kernel, stride = _window(kernel, stride)
    out = np.empty(_pooled_shape(x.shape, kernel, stride), dtype=x.dtype)
    kernels = _backend.kernels()
    _over_batch(lambda a, b: kernels.avgpool_forward_into(x[a:b], out[a:b], kernel,
                                                          stride),
                x.shape[0], x.size)
    return out


def avg_pool2d_backward(dout, x_shape, kernel, stride=None):
    """Spread dout (N, C, Ho, Wo) evenly over each window: -> dx (N, C, H, W)."""
    dout = float_array(dout, "average-pool gradient", 4)
    x_shape = x_shape_of(x_shape)
    kernel, stride = _window(kernel, stride)
    expected = _pooled_shape(x_shape, kernel, stride)
    if dout.shape != expected:
        raise ValueError(f"average-pool backward: dout must have shape {expected}, "
                         f"got {dout.shape}")
    dx = np.empty(x_shape, dtype=dout.dtype)
    kernels = _backend.kernels()
    _over_batch(lambda a, b: kernels.avgpool_backward_into(dout[a:b], dx[a:b], kernel,
                                                           stride),
                x_shape[0], dx.size)
    return dx
