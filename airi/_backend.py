"""The one place that decides which kernels run.

Layers call the functions of this module (``im2col``, ``col2im``, ``maxpool_forward``
...) and never ask which implementation is behind them. Two implementations exist:

* ``"cython"``: the compiled kernels of ``airi/_ext`` (OpenMP, float32/float64);
* ``"numpy"``: their vectorised twins in :mod:`airi._numpy_kernels`, same numbers.

The compiled kernels are used when they import. ``AIRI_BACKEND=numpy`` or
``airi.set_backend("numpy")`` forces the fallback; ``AIRI_REQUIRE_COMPILED=1`` turns a
missing extension into an error instead of a warning.

Every function validates its arguments here, once, for both implementations, so bad
input gets the same clear ``ValueError`` whichever backend runs.

Shapes (NCHW; ``kernel``, ``stride``, ``pad`` are ``(h, w)`` pairs of ints)::

    im2col(x (N, C, H, W))                  -> cols (N, C*kh*kw, Ho*Wo)
    col2im(cols (N, C*kh*kw, Ho*Wo), x_shape) -> dx (N, C, H, W)
    maxpool_forward(x)                      -> out (N, C, Ho, Wo), argmax (N, C, Ho, Wo)
    maxpool_backward(dout, argmax, x_shape) -> dx (N, C, H, W)
    avgpool_forward(x)                      -> out (N, C, Ho, Wo)
    avgpool_backward(dout, x_shape)         -> dx (N, C, H, W)

with Ho = (H + 2*ph - kh) // sh + 1 and Wo likewise. ``argmax`` holds, for each
window, the tap ``q = i * kw + j`` (window row i, column j) of its first maximum, as
np.uint8 for windows of up to 256 elements and np.intp beyond (``maxpool_tap_dtype``).
It is an internal contract between maxpool_forward and maxpool_backward: the layer only
keeps it for the backward pass.
"""
import os
import warnings

import numpy as np

from . import _numpy_kernels
from . import _parallel

__all__ = ["backend", "set_backend", "available_backends", "compiled_error",
           "im2col", "col2im", "maxpool_forward", "maxpool_backward",
           "avgpool_forward", "avgpool_backward", "conv_output_shape", "pair"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_KERNEL_API_VERSION = 4  # must equal API_VERSION in every airi/_ext/*.pyx


# --------------------------------------------------------------------- loading
def _load_compiled():
    """Import the compiled kernels; return (module-like namespace, None) or (None, why)."""
    try:
        from ._ext import _conv, _norm, _pool, _wino
    except Exception as exc:  # ImportError, or an ABI mismatch
        return None, f"{type(exc).__name__}: {exc}"
    # airi/_ext/__init__.py may have found the modules of another copy of airi (an
    # older install): only use them if they speak this version's kernel API.
    for module in (_conv, _norm, _pool, _wino):
        found = getattr(module, "API_VERSION", None)
        if found != _KERNEL_API_VERSION:
            return None, (f"{module.__file__} has kernel API_VERSION {found!r}, this airi "
                          f"needs {_KERNEL_API_VERSION} (a stale build: reinstall airi "
                          "or rebuild with `python setup.py build_ext --inplace`)")
    return _CompiledKernels(_conv, _pool, _norm, _wino), None


# The compiled kernels run on airi's own threads (airi/_parallel.py: the batch is cut in
# one slice per thread, each kernel call on one OpenMP thread), never on an OpenMP team:
# libgomp's worker threads spin-wait after a parallel region, and with BLAS and airi's
# threads around that made a LeNet training step 2.3x slower (33 ms against 14.7 ms
# with OMP_WAIT_POLICY=passive). Small calls run on the calling thread alone.
_over_batch = _parallel.over_batch


class _CompiledKernels:
    """Adapts the low-level Cython signatures to the twins' signatures, and runs them
    on slices of the batch on airi's threads."""

    def __init__(self, conv, pool, norm, wino):
        self._conv, self._pool, self._norm, self._wino = conv, pool, norm, wino

    def winograd_input(self, x, V, pad):
        self._wino.winograd_input_into(x, V, *pad)

    def winograd_output(self, M, out, bias):
        self._wino.winograd_output_into(M, out, bias)

    def im2col(self, x, kernel, stride, pad):
        N, C, H, W = x.shape
        Ho, Wo = conv_output_shape(H, W, kernel, stride, pad)
        cols = np.empty((N, C * kernel[0] * kernel[1], Ho * Wo), dtype=x.dtype)
        _over_batch(lambda a, b: self._conv.im2col_into(x[a:b], cols[a:b], *kernel,
                                                        *stride, *pad, 1), N, cols.size)
        return cols

    def col2im(self, cols, x_shape, kernel, stride, pad):
        dx = np.empty(x_shape, dtype=cols.dtype)
        _over_batch(lambda a, b: self._conv.col2im_from(cols[a:b], dx[a:b], *kernel,
                                                        *stride, *pad, 1),
                    x_shape[0], cols.size)
        return dx

    def maxpool_forward(self, x, kernel, stride):
        N, C, H, W = x.shape
        out_shape = (N, C) + conv_output_shape(H, W, kernel, stride, (0, 0))
        out = np.empty(out_shape, dtype=x.dtype)
        argmax = np.empty(out_shape, _numpy_kernels.maxpool_tap_dtype(kernel))
        _over_batch(lambda a, b: self._pool.maxpool_forward_into(
            x[a:b], out[a:b], argmax[a:b], *kernel, *stride, 1), N, x.size)
        return out, argmax

    def maxpool_backward(self, dout, argmax, x_shape, kernel, stride):
        dx = np.empty(x_shape, dtype=dout.dtype)
        _over_batch(lambda a, b: self._pool.maxpool_backward_into(
            dout[a:b], argmax[a:b], dx[a:b], *kernel, *stride, 1), x_shape[0], dx.size)
        return dx

    def avgpool_forward(self, x, kernel, stride):
        N, C, H, W = x.shape
        out = np.empty((N, C) + conv_output_shape(H, W, kernel, stride, (0, 0)),
                       dtype=x.dtype)
        _over_batch(lambda a, b: self._pool.avgpool_forward_into(
            x[a:b], out[a:b], *kernel, *stride, 1), N, x.size)
        return out

    def avgpool_backward(self, dout, x_shape, kernel, stride):
        dx = np.empty(x_shape, dtype=dout.dtype)
        _over_batch(lambda a, b: self._pool.avgpool_backward_into(
            dout[a:b], dx[a:b], *kernel, *stride, 1), x_shape[0], dx.size)
        return dx


    def batchnorm_moments(self, x):
        N, C = x.shape[:2]
        mean, m2 = np.empty((N, C)), np.empty((N, C))
        _over_batch(lambda a, b: self._norm.plane_moments_into(x[a:b], mean[a:b],
                                                               m2[a:b]), N, x.size)
        return mean, m2

    def batchnorm_normalize(self, x, shift, invstd, gamma, beta):
        xhat, out = np.empty_like(x), np.empty_like(x)
        _over_batch(lambda a, b: self._norm.normalize_into(
            x[a:b], shift, invstd, gamma, beta, xhat[a:b], out[a:b]), len(x), x.size)
        return xhat, out

    def batchnorm_grad_sums(self, dout, xhat):
        N, C = dout.shape[:2]
        s1, s2 = np.empty((N, C)), np.empty((N, C))
        _over_batch(lambda a, b: self._norm.plane_grad_sums_into(
            dout[a:b], xhat[a:b], s1[a:b], s2[a:b]), N, dout.size)
        return s1, s2

    def batchnorm_input_grad(self, dout, xhat, k_xhat, mean_dout, scale):
        dx = np.empty_like(xhat)
        _over_batch(lambda a, b: self._norm.input_grad_into(
            dout[a:b], xhat[a:b], k_xhat, mean_dout, scale, dx[a:b]), len(dx), dx.size)
        return dx


class _NumpyInto:
    """``im2col_into`` / ``col2im_into`` for the NumPy twins (which return new arrays)."""

    @staticmethod
    def im2col_into(x, cols, kernel, stride, pad):
        np.copyto(cols, _numpy_kernels.im2col(x, kernel, stride, pad).reshape(cols.shape))

    @staticmethod
    def col2im_into(cols, dx, kernel, stride, pad):
        np.copyto(dx, _numpy_kernels.col2im(cols, dx.shape, kernel, stride, pad))


def _numpy_direct_conv_into(x, wt, bias, out, pad, scratch):
    np.copyto(out, _numpy_kernels.direct_conv(x, wt, bias, pad))


def _numpy_direct_conv_dw_into(xp, dT, dwt):
    dwt += _numpy_kernels.direct_conv_dw(xp, dT, dwt.shape[1:3])


def _compiled_direct_conv_dw_into(xp, dT, dwt):
    _compiled._conv.direct_conv_dw_into(xp, dT, dwt)


def _compiled_direct_conv_into(x, wt, bias, out, pad, scratch):
    _compiled._conv.direct_conv_into(x, wt, bias, out, pad[0], pad[1], scratch)


def _compiled_im2col_into(x, cols, kernel, stride, pad):
    _compiled._conv.im2col_into(x, cols, *kernel, *stride, *pad, 1)


def _compiled_col2im_into(cols, dx, kernel, stride, pad):
    _compiled._conv.col2im_from(cols, dx, *kernel, *stride, *pad, 1)


_compiled, _compiled_error = _load_compiled()
_impls = {"numpy": _numpy_kernels}
if _compiled is not None:
    _impls["cython"] = _compiled


def _env_choice(name, choices, default):
    """The value of environment variable ``name`` (case and spaces ignored), one of
    ``choices``; unset or empty gives ``default``. Anything else stops the program with
    ONE line naming the variable and its valid values (a typo must not silently pick
    another backend, and a traceback at ``import airi`` would bury the reason)."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if not value:
        return default
    if value not in choices:
        raise SystemExit(f"airi: {name}={raw!r} is not valid: use "
                         + ", ".join(repr(c) for c in choices) + " (or leave it unset)")
    return value


def _not_compiled_message():
    """One line: why the compiled kernels are missing and how to fix it. Uses the
    outcome setup.py recorded at install time (airi/_ext/_build_info.py) when the build
    failed, so the user sees the compiler's own error instead of an ImportError."""
    try:
        from ._ext import _build_info
        failed = not _build_info.COMPILED
        error = _build_info.ERROR
    except Exception:  # built by an older setup.py, or never built
        failed, error = False, None
    if failed:
        return ("airi: the compiled kernels were not built when airi was installed "
                f"(compiler error: {error}); running on the slower NumPy kernels. To "
                "fix it, install a C compiler (e.g. `apt install gcc`, `xcode-select "
                "--install`, or Visual Studio Build Tools), then reinstall airi "
                "(`pip install .` in its folder).")
    return ("airi: the compiled kernels could not be imported "
            f"({_compiled_error}); using the slower NumPy kernels. Reinstall with a C "
            "compiler (`pip install .`) to build them.")


def _initial_backend():
    wanted = _env_choice("AIRI_BACKEND", ("auto", "cython", "numpy"), "auto")
    require = _env_choice("AIRI_REQUIRE_COMPILED", ("0", "1"), "0") == "1"
    if _compiled is None and require:
        raise ImportError(
            "AIRI_REQUIRE_COMPILED=1 but airi's compiled kernels cannot be imported "
            f"({_compiled_error}). Build them with `pip install .` (needs a C compiler).")
    if wanted in ("auto", "cython"):
        if _compiled is not None:
            return "cython"
        if wanted == "cython":
            raise ImportError(f"AIRI_BACKEND=cython but the compiled kernels cannot be "
                              f"imported ({_compiled_error})")
        warnings.warn(_not_compiled_message(), RuntimeWarning, stacklevel=3)
        return "numpy"
    return "numpy"


_active = _initial_backend()
_impl = _impls[_active]

# Per backend: the unchecked in-place column kernels and the chunk size the layers use
# (bytes of columns per chunk). Compiled: ~2 MB, a core's L2 cache here, so a chunk's
# columns stay in cache between im2col and the GEMM that reads them (1 MB chunks were
# 15% slower on 2 threads: more hand-offs). NumPy: its im2col loops over the kh*kw
# kernel taps in Python, so larger chunks amortise that loop.
_into = {"numpy": (_NumpyInto.im2col_into, _NumpyInto.col2im_into, 8 << 20,
                   _numpy_direct_conv_into, _numpy_direct_conv_dw_into)}
if _compiled is not None:
    _into["cython"] = (_compiled_im2col_into, _compiled_col2im_into, 2 << 20,
                       _compiled_direct_conv_into, _compiled_direct_conv_dw_into)


def backend():
    """The name of the kernels in use: ``"cython"`` or ``"numpy"``."""
    return _active


def available_backends():
    """The backends that can run here (``"numpy"`` always, ``"cython"`` when built)."""
    return sorted(_impls)


def compiled_error():
    """Why the compiled kernels failed to import (None when they imported)."""
    return _compiled_error


def set_backend(name):
    """Choose the kernels: ``"cython"`` (compiled) or ``"numpy"`` (fallback)."""
    global _active, _impl
    name = str(name).lower()
    if name not in ("cython", "numpy"):
        raise ValueError(f"backend must be 'cython' or 'numpy', got {name!r}")
    if name not in _impls:
        raise RuntimeError(f"the compiled kernels are not available ({_compiled_error})")
    _active, _impl = name, _impls[name]


class use_backend:
    """Context manager that runs a block on a given backend, then restores the old one."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.previous = _active
        set_backend(self.name)
        return self

    def __exit__(self, *exc):
        set_backend(self.previous)
        return False


# ------------------------------------------------------------------ validation
def pair(value, name):
    """``value`` as a pair of Python ints (an int ``k`` means ``(k, k)``)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        h, w = value
    else:
        h = w = value
    try:
        if int(h) != h or int(w) != w:
            raise TypeError
        return int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None


def conv_output_shape(H, W, kernel, stride, pad):
    """Output height and width of a sliding window, validating the arguments."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel size must be >= 1, got {(kh, kw)}")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be >= 1, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {(ph, pw)}")
    if kh > H + 2 * ph or kw > W + 2 * pw:
        raise ValueError(
            f"kernel {kh}x{kw} is larger than the padded input "
            f"{H + 2 * ph}x{W + 2 * pw} (input {H}x{W}, padding {ph}x{pw})")
    return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1


def _check_array(a, name, ndim):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.dtype not in _FLOATS:
        raise ValueError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    return np.ascontiguousarray(a)


def _check_x_shape(x_shape):
    # N or C may be 0 (an empty batch flows through like any other), H and W may not
    if len(x_shape) != 4 or any(int(s) < 0 for s in x_shape) or min(x_shape[2:]) < 1:
        raise ValueError(f"x_shape must be 4 ints (N, C, H, W) with H, W >= 1, "
                         f"got {x_shape}")
    return tuple(int(s) for s in x_shape)


def _check_window(kernel, stride):
    return pair(kernel, "kernel"), pair(stride, "stride")


# --------------------------------------------------------------------- kernels
def im2col(x, kernel, stride=1, pad=0):
    """Unfold the windows of ``x`` (N, C, H, W) into cols (N, C*kh*kw, Ho*Wo)."""
    x = _check_array(x, "im2col input", 4)
    kernel, stride, pad = pair(kernel, "kernel"), pair(stride, "stride"), pair(pad, "pad")
    conv_output_shape(x.shape[2], x.shape[3], kernel, stride, pad)
    return _impl.im2col(x, kernel, stride, pad)


def col2im(cols, x_shape, kernel, stride=1, pad=0):
    """Fold cols (N, C*kh*kw, Ho*Wo) back to (N, C, H, W), adding overlaps."""
    cols = _check_array(cols, "col2im input", 3)
    x_shape = _check_x_shape(x_shape)
    kernel, stride, pad = pair(kernel, "kernel"), pair(stride, "stride"), pair(pad, "pad")
    N, C, H, W = x_shape
    Ho, Wo = conv_output_shape(H, W, kernel, stride, pad)
    expected = (N, C * kernel[0] * kernel[1], Ho * Wo)
    if cols.shape != expected:
        raise ValueError(f"col2im: cols must have shape {expected} for x_shape {x_shape}, "
                         f"got {cols.shape}")
    return _impl.col2im(cols, x_shape, kernel, stride, pad)


def maxpool_forward(x, kernel, stride=None):
    """Max of each window: x (N, C, H, W) -> (out, argmax), both (N, C, Ho, Wo)."""
    x = _check_array(x, "max-pool input", 4)
    kernel = pair(kernel, "kernel")
    stride = kernel if stride is None else pair(stride, "stride")
    conv_output_shape(x.shape[2], x.shape[3], kernel, stride, (0, 0))
    return _impl.maxpool_forward(x, kernel, stride)


def maxpool_backward(dout, argmax, x_shape, kernel, stride=None):
    """Route dout (N, C, Ho, Wo) to the window taps in argmax: -> dx (N, C, H, W)."""
    dout = _check_array(dout, "max-pool gradient", 4)
    x_shape = _check_x_shape(x_shape)
    kernel = pair(kernel, "kernel")
    stride = kernel if stride is None else pair(stride, "stride")
    Ho, Wo = conv_output_shape(x_shape[2], x_shape[3], kernel, stride, (0, 0))
    expected = (x_shape[0], x_shape[1], Ho, Wo)
    if dout.shape != expected or argmax.shape != expected:
        raise ValueError(f"max-pool backward: dout and argmax must have shape {expected}, "
                         f"got {dout.shape} and {argmax.shape}")
    return _impl.maxpool_backward(dout, _maxpool_taps(argmax, kernel), x_shape, kernel,
                                  stride)


def maxpool_tap_dtype(kernel):
    """The dtype of the ``argmax`` taps maxpool_forward returns for a ``kernel`` window:
    np.uint8 for windows of up to 256 elements, np.intp beyond (both backends)."""
    return _numpy_kernels.maxpool_tap_dtype(pair(kernel, "kernel"))


def _maxpool_taps(argmax, kernel):
    """argmax as C-contiguous taps of ``maxpool_tap_dtype(kernel)``. Integers of another
    dtype are converted, but only after checking that they are taps of the window (a
    cast would wrap, say, 260 to a valid uint8 tap 4); the kernels check them too."""
    want = _numpy_kernels.maxpool_tap_dtype(kernel)
    if not isinstance(argmax, np.ndarray) or argmax.dtype.kind not in "iu":
        raise ValueError("max-pool backward: argmax must be the integer array returned "
                         f"by maxpool_forward, got {type(argmax).__name__} of dtype "
                         f"{getattr(argmax, 'dtype', None)}")
    if argmax.dtype != want:
        K = kernel[0] * kernel[1]
        if argmax.size and (argmax.min() < 0 or argmax.max() >= K):
            raise ValueError(f"max-pool backward: argmax entries lie outside the "
                             f"{kernel[0]}x{kernel[1]} window (taps must be 0..{K - 1})")
        argmax = argmax.astype(want)
    return np.ascontiguousarray(argmax)


def avgpool_forward(x, kernel, stride=None):
    """Mean of each window: x (N, C, H, W) -> (N, C, Ho, Wo)."""
    x = _check_array(x, "average-pool input", 4)
    kernel = pair(kernel, "kernel")
    stride = kernel if stride is None else pair(stride, "stride")
    conv_output_shape(x.shape[2], x.shape[3], kernel, stride, (0, 0))
    return _impl.avgpool_forward(x, kernel, stride)


def avgpool_backward(dout, x_shape, kernel, stride=None):
    """Spread dout (N, C, Ho, Wo) evenly over each window: -> dx (N, C, H, W)."""
    dout = _check_array(dout, "average-pool gradient", 4)
    x_shape = _check_x_shape(x_shape)
    kernel = pair(kernel, "kernel")
    stride = kernel if stride is None else pair(stride, "stride")
    Ho, Wo = conv_output_shape(x_shape[2], x_shape[3], kernel, stride, (0, 0))
    expected = (x_shape[0], x_shape[1], Ho, Wo)
    if dout.shape != expected:
        raise ValueError(f"average-pool backward: dout must have shape {expected}, "
                         f"got {dout.shape}")
    return _impl.avgpool_backward(dout, x_shape, kernel, stride)


# ------------------------------------------------- unchecked kernels for the layers
# The layers validate shapes once per call, then run these on chunks of the batch from
# several threads (see airi._parallel): no argument checks here, and one thread each.
def im2col_into(x, cols, kernel, stride, pad):
    """Write im2col(x) into ``cols``. x (n, C, H, W) C-contiguous, cols (n, C*kh*kw,
    Ho*Wo) of x's dtype (any strides); kernel, stride, pad are pairs of ints. Unchecked."""
    _into[_active][0](x, cols, kernel, stride, pad)


def col2im_into(cols, dx, kernel, stride, pad):
    """Overwrite dx (n, C, H, W), C-contiguous, with col2im(cols); cols (n, C*kh*kw,
    Ho*Wo) of dx's dtype. Unchecked."""
    _into[_active][1](cols, dx, kernel, stride, pad)


def chunk_size(n_items, bytes_per_item):
    """How many samples a layer should process per chunk: about the backend's chunk
    budget in bytes, at least 1, at most ``n_items``."""
    return max(1, min(n_items, _into[_active][2] // max(1, bytes_per_item)))


# --------------------------------------------------------- direct convolution
def direct_conv_into(x, wt, bias, out, pad, scratch):
    """out = conv(x, W) + bias with stride 1, without columns. x (n, C, H, W) float32
    C-contiguous; wt (C, kh, kw, F) = W.transpose(1, 2, 3, 0), C-contiguous, F % 16 == 0;
    bias (F,) or None; out (n, F, Ho, Wo) C-contiguous, Ho = H + 2*ph - kh + 1; scratch:
    float32, >= C*(H+2ph)*(W+2pw) elements (one padded sample). Unchecked."""
    _into[_active][3](x, wt, bias, out, pad, scratch)


def direct_conv_dw_into(xp, dT, dwt):
    """dwt += the weight gradient of a stride-1 convolution, transposed: xp (n, C, Hp,
    Wp) the zero-padded input (C-contiguous), dT (n, Ho, Wo, F) = dout.transpose(0, 2,
    3, 1) (C-contiguous), dwt (C, kh, kw, F) float32 with F % 16 == 0 and kw in (3, 5,
    7). Unchecked."""
    _into[_active][4](xp, dT, dwt)


def _direct_level():
    return _compiled._conv.direct_conv_level() if _compiled is not None else -1


# Which parts of a Conv2D use the direct convolution instead of im2col + GEMM: the one
# place that decides. Measured on the 2-core AVX-512 machine of issue 6, float32, ms of
# im2col + GEMM -> direct for (N, C, H=W, F, k, pad), stride 1:
#   forward, 1 thread, whole batch: 64,16,14,32,5,0  2.8 -> 1.0;  128,16,28,16,5,0
#       28 -> 7.6;  128,3,32,16,5,0  4.0 -> 2.4;  128,32,32,32,3,1  46 -> 21;
#       64,64,16,64,3,1  12.6 -> 9.8; but 128,128,8,128,3,1 (Conv2D, 2 threads)
#       13.1 -> 14.3: direct for F <= 64.
#   dx (a full correlation of dout with the flipped filters, vectorised over C), 1
#       thread: 128,16,28,16,5,0  27 -> 11;  128,32,32,32,3,1  43 -> 17;  64,64,16,64,3,1
#       11.4 -> 7.8; slower on small images, where the zero border of dout is a large
#       share: 64,16,14,32,5,0  2.7 -> 3.2, and the 8x8 convs of vgg_small (Conv2D
#       backward, 2 threads, 26.4 -> 30.4): direct for C % 16 == 0, H, W >= 16 and
#       (k-1)*4 <= H, W.
#   dW (x correlated with dout, vectorised over F, the kh x kw outputs in registers),
#       1 thread: 64,16,14,32,5,0  2.7 -> 1.1;  128,16,28,16,5,0  32 -> 10;
#       128,3,32,16,5,0  3.9 -> 3.0;  128,32,32,32,3,1  46 -> 24; Conv2D backward, 2
#       threads: 128,128,8,128,3,1  26.4 -> 20.3;  128,64,8,128,3,1  14.4 -> 11.5;
#       but with C = 3 (a network's first layer) bench_layers.py measured the Conv2D
#       backward slower (128,3,32,16,5,0: 4.9 -> 5.6 and 7.7 ms): direct for kernel
#       widths 3, 5, 7 (the ones compiled), F <= 128 and C >= 16.
# On an AVX2 machine (2-core AMD EPYC, 8-float registers, half the AVX-512 machine's
# FMA width; an A/B script forcing each pass's plan, 2 threads, whole Conv2D, ms im2col +
# GEMM -> direct): forward 128,3,32,16,5,0  5.2 -> 2.9;  128,16,14,16,5,0  4.3 -> 2.0;
#   64,16,14,32,5,0  3.4 -> 1.9;  128,32,32,32,3,1  24.5 -> 23.1;  64,64,16,64,3,1
#   10.8 -> 10.3; 128,128,8,128,3,1  22.8 -> 32.6: the same F <= 64 rule.
#   Backward (dx, dW) follow the GEMM they replace, whose inner or outer size is F:
#   with F = 16 both win (128,16,28,16,5,0  26.4 -> 15.6;  128,16,32,16,3,1  18.0 ->
#   12.5;  128,16,16,16,5,0  7.8 -> 5.0). dx also for 3x3 with F = 32
#   (128,16,32,32,3,1  25.8 -> 21.7;  128,32,32,32,3,1  48.9 -> 45.3) but not 5x5
#   (128,32,28,32,5,0  71.9 -> 75.5;  64,16,14,32,5,0  5.0 -> 6.7) nor F >= 64
#   (128,128,8,128,3,1  46.5 -> 63.4). dW also for 5x5 (128,32,28,32,5,0  71.9 ->
#   61.4;  64,16,14,32,5,0  5.0 -> 4.1) and small images (Ho*Wo <= 256:
#   128,32,16,32,3,1  13.6 -> 12.5;  128,128,8,128,3,1  46.5 -> 43.5) but not 3x3
#   with F = 32 on 32x32 (48.9 -> 52.9). Once the GEMM path ran one GEMM per chunk
#   (see layers/conv.py), the direct dW lost for F >= 64 (128,128,8,128,3,1  54.3 ->
#   58.6;  128,64,8,128,3,1  25.4 -> 30.8;  64,64,16,64,3,1  29.4 -> 32.3): F <= 32.
#   (The AVX-512 rule above was measured before that change.)
# Only with AVX2 or AVX-512 (the baseline SSE build of the kernels was not measured to
# win). The NumPy backend always uses im2col (its direct twins are im2col + matmul).
_direct_enabled = _env_choice("AIRI_DIRECT_CONV", ("0", "1"), "1") == "1"


def set_direct_conv(enabled):
    """Allow (True, the default) or forbid the direct convolution kernels; returns the
    previous setting. ``AIRI_DIRECT_CONV=0`` forbids them from the start. For
    benchmarks (im2col + GEMM against direct) and as an escape hatch."""
    global _direct_enabled
    previous, _direct_enabled = _direct_enabled, bool(enabled)
    return previous


def direct_conv_plan(dtype, C, F, kernel, stride, pad, H, W):
    """(forward, dx, dW): which passes of a Conv2D with these sizes use the direct
    convolution (``direct_conv_into`` / ``direct_conv_dw_into``) on the active backend."""
    if not _direct_enabled or _active != "cython" or _direct_level() < 1 \
            or np.dtype(dtype) != np.float32 \
            or tuple(stride) != (1, 1) or F % 16 != 0 or F > 128:
        return False, False, False
    (kh, kw), (ph, pw) = kernel, pad
    forward = F <= 64
    if _direct_level() >= 2:       # AVX-512
        dx = C % 16 == 0 and ph <= kh - 1 and pw <= kw - 1 and min(H, W) >= 16 and \
            (kh - 1) * 4 <= H and (kw - 1) * 4 <= W
        dw = kw in (3, 5, 7) and C >= 16
    else:                          # AVX2
        out_pixels = (H + 2 * ph - kh + 1) * (W + 2 * pw - kw + 1)
        dx = C % 16 == 0 and ph <= kh - 1 and pw <= kw - 1 and min(H, W) >= 16 and \
            (F == 16 or (kh, kw) == (3, 3) and F <= 32)
        dw = kw in (3, 5, 7) and C >= 16 and F <= 32 and \
            (F == 16 or kw >= 5 or out_pixels <= 256)
    return forward, dx, dw


# ------------------------------------------------------------- batch normalisation
# BatchNorm's memory-bound passes (see airi/_ext/_norm.pyx). The layer views its input
# as planes (N, C, P) and passes arrays of one float dtype (vectors (C,) included).
def _check_planes(name, *arrays):
    dtype = arrays[0].dtype
    if dtype not in _FLOATS or any(a.dtype != dtype for a in arrays):
        raise ValueError(f"{name}: arrays must share one float dtype, got "
                         f"{[str(a.dtype) for a in arrays]}")
    return [np.ascontiguousarray(a) for a in arrays]


def batchnorm_moments(x):
    """x (N, C, P) -> per-plane mean (N, C) and sum of squared deviations m2 (N, C),
    float64."""
    (x,) = _check_planes("batchnorm_moments", _check_array(x, "batchnorm input", 3))
    return _impl.batchnorm_moments(x)


def batchnorm_normalize(x, shift, invstd, gamma, beta):
    """x (N, C, P), vectors (C,) -> (xhat, out): xhat = (x - shift) * invstd and out =
    gamma * xhat + beta per channel."""
    x = _check_array(x, "batchnorm input", 3)
    x, shift, invstd, gamma, beta = _check_planes("batchnorm_normalize", x, shift,
                                                  invstd, gamma, beta)
    return _impl.batchnorm_normalize(x, shift, invstd, gamma, beta)


def batchnorm_grad_sums(dout, xhat):
    """dout, xhat (N, C, P) -> per plane sum(dout) and sum(dout * xhat), (N, C) float64."""
    dout = _check_array(dout, "batchnorm gradient", 3)
    dout, xhat = _check_planes("batchnorm_grad_sums", dout, xhat)
    if dout.shape != xhat.shape:
        raise ValueError(f"batchnorm_grad_sums: dout {dout.shape} and xhat {xhat.shape} "
                         "differ")
    return _impl.batchnorm_grad_sums(dout, xhat)


def batchnorm_input_grad(dout, xhat, k_xhat, mean_dout, scale):
    """dout, xhat (N, C, P), vectors (C,) -> dx = (dout - mean_dout + k_xhat * xhat) *
    scale, (N, C, P)."""
    dout = _check_array(dout, "batchnorm gradient", 3)
    dout, xhat, k_xhat, mean_dout, scale = _check_planes(
        "batchnorm_input_grad", dout, xhat, k_xhat, mean_dout, scale)
    if dout.shape != xhat.shape:
        raise ValueError(f"batchnorm_input_grad: dout {dout.shape} and xhat {xhat.shape} "
                         "differ")
    return _impl.batchnorm_input_grad(dout, xhat, k_xhat, mean_dout, scale)


# ------------------------------------------------------ Winograd F(2x2, 3x3) transforms
# For 3x3, stride-1 convolutions: 16 GEMMs on transformed 2x2 output tiles do the work
# of 36 multiplications in 16 (see airi/_ext/_wino.pyx and airi/layers/conv.py).
_WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5],
                        [0.0, 0.0, 1.0]])


def winograd_tiles(Ho, Wo):
    """(th, tw): the 2x2 output tiles per column and row of an Ho x Wo output."""
    return (Ho + 1) // 2, (Wo + 1) // 2


def winograd_filters(w):
    """w (F, C, 3, 3) -> U (16, F, C) = G g G^T per filter, element (i, j) at 4*i + j,
    in w's dtype (G's entries are exact in binary). As two plain 2-D GEMMs: an einsum,
    or a matmul batched over the F*C little matrices, took ~8 ms for F = C = 128."""
    F, C = w.shape[:2]
    G = _WINOGRAD_G.astype(w.dtype)
    rows = G @ np.moveaxis(w, 2, 0).reshape(3, -1)           # (4, F*C*3): G g
    U = rows.reshape(4 * F * C, 3) @ G.T                     # (4*F*C, 4): (G g) G^T
    return np.ascontiguousarray(U.reshape(4, F, C, 4).transpose(0, 3, 1, 2)
                                .reshape(16, F, C))


def winograd_input_into(x, V, pad):
    """x (n, C, H, W) C-contiguous -> V (16, C, n*th*tw) C-contiguous, same float
    dtype; the transformed input tiles of the zero-padded x (pad = (ph, pw)).
    Unchecked beyond what the kernels check."""
    _impl.winograd_input(x, V, pad)


def winograd_output_into(M, out, bias):
    """M (16, F, n*th*tw) -> out (n, F, Ho, Wo) (+ bias (F,) or None), the inverse
    transform of the tiles' products; same float dtype, C-contiguous."""
    _impl.winograd_output(M, out, bias)


# Which passes of a Conv2D use Winograd F(2x2, 3x3) (the one place that decides, after
# the direct convolution, which takes precedence): 3x3 kernels, stride 1, padding <= 2,
# at least 16 channels on the GEMM's inner side (C for the forward pass, F for dx: the
# 16 GEMMs are (F, C) @ (C, tiles) and (C, F) @ (F, tiles)); compiled backend only (the
# NumPy fallback stays on im2col, whose speed it is measured against).
# OFF by default: measured on the 2-core AVX2 machine, Conv2D forward on 1 thread ran
# 1.45x faster than im2col + GEMM (128,128,8,128,3,1: 28.8 -> 41.5 ms; 128,64,16,64,3,1:
# 30.3 -> 44.9 ms), but on airi's 2 threads it was not faster (42.3 vs 31.6 ms; 26.2 vs
# 28.2 ms), for reasons not yet found (see benchmarks/README.md). ``AIRI_WINOGRAD=1`` or
# ``set_winograd(True)`` switches it on.
_winograd_enabled = _env_choice("AIRI_WINOGRAD", ("0", "1"), "0") == "1"


def set_winograd(enabled):
    """Allow (True) or forbid (False, the default) the Winograd convolution; returns
    the previous setting."""
    global _winograd_enabled
    previous, _winograd_enabled = _winograd_enabled, bool(enabled)
    return previous


def winograd_plan(dtype, C, F, kernel, stride, pad):
    """(forward, dx): which passes of a Conv2D with these sizes may use Winograd."""
    if not _winograd_enabled or _active != "cython" or tuple(kernel) != (3, 3) \
            or tuple(stride) != (1, 1) or max(pad) > 2 \
            or np.dtype(dtype) not in _FLOATS:
        return False, False
    return C >= 16, F >= 16
