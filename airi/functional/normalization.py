"""Batch normalisation's passes, stateless.

An input (N, C, ...) is viewed as planes (N, C, P): one plane of P values per sample
and channel (P = H*W for images, 1 for features). Statistics are per channel.

Channel-level operations (what :class:`airi.layers.BatchNorm2D` calls)::

    batch_norm_stats(x)                       -> (3, C) float64 [count, sum, sum of squares]
    batch_norm_forward(x, mean, invstd, gamma, beta) -> out, xhat       (shape of x)
    batch_norm_grad_sums(dout, xhat)          -> sum(dout), sum(dout * xhat)   (C,) f8
    batch_norm_backward(dout, xhat, scale, mean_dout=None, mean_dout_xhat=None) -> dx

with ``xhat = (x - mean) * invstd``, ``out = gamma * xhat + beta`` and, in training
mode, ``dx = scale * (dout - mean_dout - xhat * mean_dout_xhat)`` (scale = gamma *
invstd; the means taken over the batch); without the means, ``dx = scale * dout``
(statistics that are constants, as in eval mode).

Plane-level kernels (validated; results per plane, for tests and the above)::

    batchnorm_moments(x (N, C, P))            -> mean (N, C), m2 (N, C) float64
    batchnorm_normalize(x, shift, invstd, gamma, beta)  -> xhat, out (N, C, P)
    batchnorm_plane_grad_sums(dout, xhat)     -> (N, C), (N, C) float64
    batchnorm_input_grad(dout, xhat, k_xhat, mean_dout, scale) -> dx (N, C, P)
"""
import math

import numpy as np

from .. import _backend, _parallel, _planner
from ._checks import float_array, same_float_dtype

__all__ = ["batch_norm_stats", "batch_norm_forward", "batch_norm_grad_sums",
           "batch_norm_backward", "batchnorm_moments", "batchnorm_normalize",
           "batchnorm_plane_grad_sums", "batchnorm_input_grad"]


def _planes(a):
    """a (N, C, ...) viewed as planes (N, C, P), C-contiguous."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def _over_batch(fn, N, elements):
    _parallel.run(lambda worker, a, b: fn(a, b), N,
                  _planner.elementwise_chunk(N, elements))


# ------------------------------------------------------------ plane kernels
def batchnorm_moments(x):
    """x (N, C, P) -> each plane's mean (N, C) and sum of squared deviations from it,
    m2 (N, C), both float64 (the mean rounded to x's dtype, as the centring uses)."""
    (x,) = same_float_dtype("batchnorm_moments", float_array(x, "batchnorm input", 3))
    N, C = x.shape[:2]
    mean, m2 = np.empty((N, C)), np.empty((N, C))
    kernels = _backend.kernels()
    _over_batch(lambda a, b: kernels.batchnorm_moments_into(x[a:b], mean[a:b], m2[a:b]),
                N, x.size)
    return mean, m2


def batchnorm_normalize(x, shift, invstd, gamma, beta):
    """x (N, C, P), vectors (C,) of x's dtype -> (xhat, out): xhat = (x - shift) *
    invstd and out = gamma * xhat + beta per channel."""
    x = float_array(x, "batchnorm input", 3)
    x, shift, invstd, gamma, beta = same_float_dtype("batchnorm_normalize", x, shift,
                                                     invstd, gamma, beta)
    xhat, out = np.empty_like(x), np.empty_like(x)
    kernels = _backend.kernels()
    _over_batch(lambda a, b: kernels.batchnorm_normalize_into(
        x[a:b], shift, invstd, gamma, beta, xhat[a:b], out[a:b]), len(x), x.size)
    return xhat, out


def batchnorm_plane_grad_sums(dout, xhat):
    """dout, xhat (N, C, P) -> per plane sum(dout) and sum(dout * xhat), (N, C) f8."""
    dout = float_array(dout, "batchnorm gradient", 3)
    dout, xhat = same_float_dtype("batchnorm_grad_sums", dout, xhat)
    if dout.shape != xhat.shape:
        raise ValueError(f"batchnorm_grad_sums: dout {dout.shape} and xhat {xhat.shape} "
                         "differ")
    N, C = dout.shape[:2]
    s1, s2 = np.empty((N, C)), np.empty((N, C))
    kernels = _backend.kernels()
    _over_batch(lambda a, b: kernels.batchnorm_grad_sums_into(dout[a:b], xhat[a:b],
                                                              s1[a:b], s2[a:b]),
                N, dout.size)
    return s1, s2


def batchnorm_input_grad(dout, xhat, k_xhat, mean_dout, scale):
    """dout, xhat (N, C, P), vectors (C,) -> dx = (dout - mean_dout + k_xhat * xhat) *
    scale, (N, C, P)."""
    dout = float_array(dout, "batchnorm gradient", 3)
    dout, xhat, k_xhat, mean_dout, scale = same_float_dtype(
        "batchnorm_input_grad", dout, xhat, k_xhat, mean_dout, scale)
    if dout.shape != xhat.shape:
        raise ValueError(f"batchnorm_input_grad: dout {dout.shape} and xhat {xhat.shape} "
                         "differ")
    dx = np.empty_like(xhat)
    kernels = _backend.kernels()
    _over_batch(lambda a, b: kernels.batchnorm_input_grad_into(
        dout[a:b], xhat[a:b], k_xhat, mean_dout, scale, dx[a:b]), len(dx), dx.size)
    return dx


# ---------------------------------------------------------- channel level
def batch_norm_stats(x):
    """The per-channel sums of a batch (or of this process's shard of it).

    Parameters
    ----------
    x : ndarray (N, C, ...), float32 or float64

    Returns
    -------
    stats : ndarray (3, C), float64
        Rows ``[count, sum(x), sum(x**2)]`` per channel; sums of shards add up to the
        sums of the whole batch. ``sum(x**2)`` is formed as ``m2 + count * mean**2``
        around the shard's own mean (per-plane moments combined in sample order by
        Chan's formula), so the variance ``(Q - S**2/n)/n`` loses only ~1e-16
        relative, and does not depend on how threads split the batch.
    """
    planes = _planes(x)
    N, C, P = planes.shape
    count = N * P
    stats = np.zeros((3, C), dtype=np.float64)
    stats[0] = count
    if count:
        plane_mean, plane_m2 = batchnorm_moments(planes)
        mean = plane_mean.mean(axis=0)
        spread = plane_mean - mean
        m2 = plane_m2.sum(axis=0) + P * np.vecdot(spread.T, spread.T)
        stats[1] = count * mean
        stats[2] = m2 + count * mean * mean
    return stats


def batch_norm_forward(x, mean, invstd, gamma, beta):
    """Normalise each channel, then scale and shift.

    Parameters
    ----------
    x : ndarray (N, C, ...)
    mean, invstd : ndarray (C,)
        The statistics to normalise with (batch or running), any float dtype.
    gamma, beta : ndarray (C,)

    Returns
    -------
    out : ndarray, shape of x
        ``gamma * xhat + beta``, in x's dtype.
    xhat : ndarray, shape of x
        ``(x - mean) * invstd``.
    """
    dtype = x.dtype
    xhat, out = batchnorm_normalize(_planes(x), *(np.asarray(v).astype(dtype, copy=False)
                                                  for v in (mean, invstd, gamma, beta)))
    return out.reshape(x.shape), xhat.reshape(x.shape)


def batch_norm_grad_sums(dout, xhat):
    """Per channel ``sum(dout)`` and ``sum(dout * xhat)``, (C,) float64 each: the
    gradients of beta and gamma, and the sums dx needs. Summed per plane, then over
    planes in sample order (independent of the threads)."""
    s1, s2 = batchnorm_plane_grad_sums(_planes(dout), _planes(xhat))
    return s1.sum(axis=0), s2.sum(axis=0)


def batch_norm_backward(dout, xhat, scale, mean_dout=None, mean_dout_xhat=None):
    """dL/dx of batch normalisation.

    Parameters
    ----------
    dout, xhat : ndarray (N, C, ...)
    scale : ndarray (C,)
        ``gamma * invstd``.
    mean_dout, mean_dout_xhat : ndarray (C,), optional
        The batch means of ``dout`` and ``dout * xhat`` (training mode); omitted, the
        statistics are constants and ``dx = scale * dout``.

    Returns
    -------
    dx : ndarray, shape of dout
    """
    dtype = np.result_type(dout.dtype, xhat.dtype)
    if mean_dout is None:
        shape = (1, dout.shape[1]) + (1,) * (dout.ndim - 2)
        return dout * np.asarray(scale).astype(dtype, copy=False).reshape(shape)
    dx = batchnorm_input_grad(
        _planes(dout.astype(dtype, copy=False)), _planes(xhat.astype(dtype, copy=False)),
        (-np.asarray(mean_dout_xhat)).astype(dtype), np.asarray(mean_dout).astype(dtype),
        np.asarray(scale).astype(dtype))
    return dx.reshape(dout.shape)
