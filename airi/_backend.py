"""Compiled kernels or their NumPy twins: the one switch, and nothing else.

Two kernel namespaces exist, with the same method names and signatures:

* :class:`CompiledKernels`: the Cython/C kernels of ``airi/_ext`` (float32/float64);
* :class:`NumpyKernels`: their vectorised twins in :mod:`airi._numpy_kernels`, same
  numbers.

:func:`kernels` returns the active one. The compiled kernels are used when they import.
``AIRI_BACKEND=numpy`` or ``airi.set_backend("numpy")`` forces the twins;
``AIRI_REQUIRE_COMPILED=1`` turns a missing extension into an error instead of a
warning.

Every kernel writes into arrays its caller allocated, on the calling thread, for the
samples it is given; it does not validate beyond what keeps memory safe, plan an
algorithm or start threads. Validation lives in :mod:`airi.functional`, the choice of
algorithm and chunks in :mod:`airi._planner`, the threads in :mod:`airi._parallel`.

Signatures (NCHW; ``kernel``, ``stride``, ``pad`` are ``(h, w)`` pairs of ints; inputs
C-contiguous unless said otherwise; outputs of the inputs' float dtype)::

    im2col_into(x (n, C, H, W), cols (n, C*kh*kw, Ho*Wo) any strides, kernel, stride, pad)
    col2im_into(cols (n, C*kh*kw, Ho*Wo) any strides, dx (n, C, H, W), kernel, stride, pad)
    maxpool_forward_into(x, out (n, C, Ho, Wo), argmax (n, C, Ho, Wo) taps, kernel, stride)
    maxpool_backward_into(dout (n, C, Ho, Wo), argmax, dx (n, C, H, W), kernel, stride)
    avgpool_forward_into(x, out, kernel, stride)
    avgpool_backward_into(dout, dx, kernel, stride)
    direct_conv_into(x (n, C, H, W), wt (C, kh, kw, F), bias (F,) or None,
                     out (n, F, Ho, Wo), pad, scratch)      float32, stride 1, F % 16 == 0
    direct_conv_dw_into(xp (n, C, Hp, Wp), dT (n, Ho, Wo, F), dwt (C, kh, kw, F))
    winograd_input_into(x (n, C, H, W), V (16, C, n*th*tw), pad)
    winograd_output_into(M (16, F, n*th*tw), out (n, F, Ho, Wo), bias (F,) or None)
    batchnorm_moments_into(x (n, C, P), mean (n, C) f8, m2 (n, C) f8)
    batchnorm_normalize_into(x, shift, invstd, gamma, beta (C,), xhat, out (n, C, P))
    batchnorm_grad_sums_into(dout, xhat (n, C, P), sum_dout, sum_dout_xhat (n, C) f8)
    batchnorm_input_grad_into(dout, xhat, k_xhat, mean_dout, scale (C,), dx (n, C, P))
    direct_conv_level() -> 2 AVX-512, 1 AVX2, 0 baseline, -1 none (NumPy: always -1)
"""
import os
import warnings

import numpy as np

from . import _numpy_kernels

__all__ = ["backend", "set_backend", "available_backends", "compiled_error",
           "use_backend", "kernels", "CompiledKernels", "NumpyKernels"]

_KERNEL_API_VERSION = 5  # must equal API_VERSION in every airi/_ext/*.pyx


class CompiledKernels:
    """The compiled kernels of ``airi/_ext`` behind the namespace's signatures."""

    name = "cython"

    def __init__(self, conv, pool, norm, wino):
        self._conv, self._pool, self._norm, self._wino = conv, pool, norm, wino

    def im2col_into(self, x, cols, kernel, stride, pad):
        self._conv.im2col_into(x, cols, *kernel, *stride, *pad)

    def col2im_into(self, cols, dx, kernel, stride, pad):
        self._conv.col2im_from(cols, dx, *kernel, *stride, *pad)

    def maxpool_forward_into(self, x, out, argmax, kernel, stride):
        self._pool.maxpool_forward_into(x, out, argmax, *kernel, *stride)

    def maxpool_backward_into(self, dout, argmax, dx, kernel, stride):
        self._pool.maxpool_backward_into(dout, argmax, dx, *kernel, *stride)

    def avgpool_forward_into(self, x, out, kernel, stride):
        self._pool.avgpool_forward_into(x, out, *kernel, *stride)

    def avgpool_backward_into(self, dout, dx, kernel, stride):
        self._pool.avgpool_backward_into(dout, dx, *kernel, *stride)

    def direct_conv_into(self, x, wt, bias, out, pad, scratch):
        self._conv.direct_conv_into(x, wt, bias, out, pad[0], pad[1], scratch)

    def direct_conv_dw_into(self, xp, dT, dwt):
        self._conv.direct_conv_dw_into(xp, dT, dwt)

    def winograd_input_into(self, x, V, pad):
        self._wino.winograd_input_into(x, V, *pad)

    def winograd_output_into(self, M, out, bias):
        self._wino.winograd_output_into(M, out, bias)

    def batchnorm_moments_into(self, x, mean, m2):
        self._norm.plane_moments_into(x, mean, m2)

    def batchnorm_normalize_into(self, x, shift, invstd, gamma, beta, xhat, out):
        self._norm.normalize_into(x, shift, invstd, gamma, beta, xhat, out)

    def batchnorm_grad_sums_into(self, dout, xhat, sum_dout, sum_dout_xhat):
        self._norm.plane_grad_sums_into(dout, xhat, sum_dout, sum_dout_xhat)

    def batchnorm_input_grad_into(self, dout, xhat, k_xhat, mean_dout, scale, dx):
        self._norm.input_grad_into(dout, xhat, k_xhat, mean_dout, scale, dx)

    def direct_conv_level(self):
        return self._conv.direct_conv_level()


class NumpyKernels:
    """The NumPy twins of :mod:`airi._numpy_kernels` behind the same signatures."""

    name = "numpy"

    def im2col_into(self, x, cols, kernel, stride, pad):
        np.copyto(cols, _numpy_kernels.im2col(x, kernel, stride, pad).reshape(cols.shape))

    def col2im_into(self, cols, dx, kernel, stride, pad):
        np.copyto(dx, _numpy_kernels.col2im(cols, dx.shape, kernel, stride, pad))

    def maxpool_forward_into(self, x, out, argmax, kernel, stride):
        best, taps = _numpy_kernels.maxpool_forward(x, kernel, stride)
        np.copyto(out, best)
        np.copyto(argmax, taps)

    def maxpool_backward_into(self, dout, argmax, dx, kernel, stride):
        np.copyto(dx, _numpy_kernels.maxpool_backward(dout, argmax, dx.shape, kernel,
                                                      stride))

    def avgpool_forward_into(self, x, out, kernel, stride):
        np.copyto(out, _numpy_kernels.avgpool_forward(x, kernel, stride))

    def avgpool_backward_into(self, dout, dx, kernel, stride):
        np.copyto(dx, _numpy_kernels.avgpool_backward(dout, dx.shape, kernel, stride))

    def direct_conv_into(self, x, wt, bias, out, pad, scratch):
        np.copyto(out, _numpy_kernels.direct_conv(x, wt, bias, pad))

    def direct_conv_dw_into(self, xp, dT, dwt):
        dwt += _numpy_kernels.direct_conv_dw(xp, dT, dwt.shape[1:3])

    def winograd_input_into(self, x, V, pad):
        _numpy_kernels.winograd_input(x, V, pad)

    def winograd_output_into(self, M, out, bias):
        _numpy_kernels.winograd_output(M, out, bias)

    def batchnorm_moments_into(self, x, mean, m2):
        plane_mean, plane_m2 = _numpy_kernels.batchnorm_moments(x)
        np.copyto(mean, plane_mean)
        np.copyto(m2, plane_m2)

    def batchnorm_normalize_into(self, x, shift, invstd, gamma, beta, xhat, out):
        h, o = _numpy_kernels.batchnorm_normalize(x, shift, invstd, gamma, beta)
        np.copyto(xhat, h)
        np.copyto(out, o)

    def batchnorm_grad_sums_into(self, dout, xhat, sum_dout, sum_dout_xhat):
        s1, s2 = _numpy_kernels.batchnorm_grad_sums(dout, xhat)
        np.copyto(sum_dout, s1)
        np.copyto(sum_dout_xhat, s2)

    def batchnorm_input_grad_into(self, dout, xhat, k_xhat, mean_dout, scale, dx):
        np.copyto(dx, _numpy_kernels.batchnorm_input_grad(dout, xhat, k_xhat, mean_dout,
                                                          scale))

    def direct_conv_level(self):
        return -1


# --------------------------------------------------------------------- loading
def _load_compiled():
    """Import the compiled kernels; return (CompiledKernels, None) or (None, why)."""
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
    return CompiledKernels(_conv, _pool, _norm, _wino), None


_compiled, _compiled_error = _load_compiled()
_impls = {"numpy": NumpyKernels()}
if _compiled is not None:
    _impls["cython"] = _compiled


def _initial_backend():
    wanted = os.environ.get("AIRI_BACKEND", "").strip().lower()
    require = os.environ.get("AIRI_REQUIRE_COMPILED", "0") == "1"
    if _compiled is None and require:
        raise ImportError(
            "AIRI_REQUIRE_COMPILED=1 but airi's compiled kernels cannot be imported "
            f"({_compiled_error}). Build them with `pip install .` (needs a C compiler).")
    if wanted in ("", "auto", "cython"):
        if _compiled is not None:
            return "cython"
        if wanted == "cython":
            raise ImportError(f"AIRI_BACKEND=cython but the compiled kernels cannot be "
                              f"imported ({_compiled_error})")
        warnings.warn(
            "airi: the compiled kernels could not be imported "
            f"({_compiled_error}); using the slower NumPy kernels. Reinstall with a C "
            "compiler (`pip install .`) to build them.", RuntimeWarning, stacklevel=3)
        return "numpy"
    if wanted == "numpy":
        return "numpy"
    raise ValueError(f"AIRI_BACKEND must be 'cython' or 'numpy', got {wanted!r}")


_active = _initial_backend()
_impl = _impls[_active]


def kernels():
    """The kernel namespace in use (:class:`CompiledKernels` or :class:`NumpyKernels`)."""
    return _impl


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
