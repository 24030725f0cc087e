"""Compiled batch-normalisation passes (private: reached through the kernel namespaces of :mod:`airi._backend`).

The input is viewed as planes: x (N, C, P), one plane of P values per sample and channel
(P = H*W for BatchNorm2D, 1 for BatchNorm1D). Every function works on a slice of the
batch, so airi's thread owner runs them on its threads, one slice each::

    plane_moments_into(x (n, C, P), mean (n, C) f8, m2 (n, C) f8)
        mean[s, c] = mean of plane (s, c);  m2[s, c] = sum of (x - mean)**2 over it
    normalize_into(x, shift (C,), invstd (C,), gamma (C,), beta (C,), xhat, out)
        xhat = (x - shift) * invstd;  out = xhat * gamma + beta     (all (n, C, P))
    plane_grad_sums_into(dout, xhat, sum_dout (n, C) f8, sum_dout_xhat (n, C) f8)
        per plane: sum(dout) and sum(dout * xhat)
    input_grad_into(dout, xhat, k_xhat (C,), mean_dout (C,), scale (C,), dx)
        dx = (dout - mean_dout + k_xhat * xhat) * scale

Why: the NumPy version makes ~9 passes over the activations in forward and ~8 in
backward (temporaries, one operation at a time); here forward is two (moments, then
xhat and out together) and backward two. A plane (a few kB) stays in L1 between the
two moment loops, so centring it costs no extra memory traffic.

The per-plane results are combined per channel by the caller in float64 (Chan's
formula with equal counts), in sample order, so the statistics do not depend on how the
batch was split over threads. Sums inside a plane use 8 independent partial sums:
the compiler can keep them in one vector register without reordering a single chain.
"""
from cython cimport floating

import numpy as np

# Bumped whenever a signature or a result convention changes (see airi._backend).
API_VERSION = 5

cdef enum:
    LANES = 8


cdef inline double _plane_sum(const floating* v, Py_ssize_t P) noexcept nogil:
    cdef floating part[LANES]
    cdef Py_ssize_t i, k, body = P - P % LANES
    cdef double total = 0.0
    for k in range(LANES):
        part[k] = 0
    for i in range(body // LANES):
        for k in range(LANES):
            part[k] += v[i * LANES + k]
    for k in range(LANES):
        total += part[k]
    for i in range(body, P):
        total += v[i]
    return total


cdef inline double _plane_centered_sq(const floating* v, Py_ssize_t P,
                                      floating m) noexcept nogil:
    cdef floating part[LANES]
    cdef floating d
    cdef Py_ssize_t i, k, body = P - P % LANES
    cdef double total = 0.0
    for k in range(LANES):
        part[k] = 0
    for i in range(body // LANES):
        for k in range(LANES):
            d = v[i * LANES + k] - m
            part[k] += d * d
    for k in range(LANES):
        total += part[k]
    for i in range(body, P):
        d = v[i] - m
        total += d * d
    return total


cdef inline double _plane_dot(const floating* a, const floating* b,
                              Py_ssize_t P) noexcept nogil:
    cdef floating part[LANES]
    cdef Py_ssize_t i, k, body = P - P % LANES
    cdef double total = 0.0
    for k in range(LANES):
        part[k] = 0
    for i in range(body // LANES):
        for k in range(LANES):
            part[k] += a[i * LANES + k] * b[i * LANES + k]
    for k in range(LANES):
        total += part[k]
    for i in range(body, P):
        total += a[i] * b[i]
    return total


def _check(name, got, expected):
    if tuple(got) != tuple(expected):
        raise ValueError(f"{name}: shape {tuple(got)}, expected {tuple(expected)}")


def _check_vectors(where, C, **vectors):
    """Every per-channel vector has C entries."""
    for name, vec in vectors.items():
        _check(f"{where}: {name}", tuple(vec.shape)[:1], (C,))


def plane_moments_into(const floating[:, :, ::1] x, double[:, ::1] mean,
                       double[:, ::1] m2):
    """mean (n, C) and m2 (n, C), float64: each plane's mean and its sum of squared
    deviations from that mean (the mean rounded to x's dtype, as the caller centres)."""
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], P = x.shape[2], s, c
    cdef const floating* v
    cdef floating m
    _check("plane_moments_into: mean", tuple(mean.shape)[:2], (n, C))
    _check("plane_moments_into: m2", tuple(m2.shape)[:2], (n, C))
    if n == 0 or C == 0 or P == 0:
        return
    with nogil:
        for s in range(n):
            for c in range(C):
                v = &x[s, c, 0]
                m = <floating>(_plane_sum(v, P) / P)
                mean[s, c] = m
                m2[s, c] = _plane_centered_sq(v, P, m)


def normalize_into(const floating[:, :, ::1] x, const floating[::1] shift,
                   const floating[::1] invstd, const floating[::1] gamma,
                   const floating[::1] beta, floating[:, :, ::1] xhat,
                   floating[:, :, ::1] out):
    """xhat = (x - shift) * invstd and out = xhat * gamma + beta, per channel; all of
    x, xhat, out (n, C, P); the vectors (C,)."""
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], P = x.shape[2], s, c, i
    cdef const floating* v
    cdef floating* h
    cdef floating* o
    cdef floating sh, inv, g, b, t
    _check_vectors("normalize_into", C, shift=shift, invstd=invstd, gamma=gamma,
                   beta=beta)
    _check("normalize_into: xhat", tuple(xhat.shape)[:3], (n, C, P))
    _check("normalize_into: out", tuple(out.shape)[:3], (n, C, P))
    if n == 0 or C == 0 or P == 0:
        return
    with nogil:
        for s in range(n):
            for c in range(C):
                v, h, o = &x[s, c, 0], &xhat[s, c, 0], &out[s, c, 0]
                sh, inv, g, b = shift[c], invstd[c], gamma[c], beta[c]
                for i in range(P):
                    t = (v[i] - sh) * inv
                    h[i] = t
                    o[i] = t * g + b


def plane_grad_sums_into(const floating[:, :, ::1] dout, const floating[:, :, ::1] xhat,
                         double[:, ::1] sum_dout, double[:, ::1] sum_dout_xhat):
    """Per plane (n, C), float64: sum(dout) and sum(dout * xhat)."""
    cdef Py_ssize_t n = dout.shape[0], C = dout.shape[1], P = dout.shape[2], s, c
    _check("plane_grad_sums_into: xhat", tuple(xhat.shape)[:3], (n, C, P))
    _check("plane_grad_sums_into: sum_dout", tuple(sum_dout.shape)[:2], (n, C))
    _check("plane_grad_sums_into: sum_dout_xhat", tuple(sum_dout_xhat.shape)[:2], (n, C))
    if n == 0 or C == 0 or P == 0:
        return
    with nogil:
        for s in range(n):
            for c in range(C):
                sum_dout[s, c] = _plane_sum(&dout[s, c, 0], P)
                sum_dout_xhat[s, c] = _plane_dot(&dout[s, c, 0], &xhat[s, c, 0], P)


def input_grad_into(const floating[:, :, ::1] dout, const floating[:, :, ::1] xhat,
                    const floating[::1] k_xhat, const floating[::1] mean_dout,
                    const floating[::1] scale, floating[:, :, ::1] dx):
    """dx = (dout - mean_dout + k_xhat * xhat) * scale per channel; dout, xhat, dx
    (n, C, P), the vectors (C,)."""
    cdef Py_ssize_t n = dout.shape[0], C = dout.shape[1], P = dout.shape[2], s, c, i
    cdef const floating* d
    cdef const floating* h
    cdef floating* o
    cdef floating k, m, sc
    _check_vectors("input_grad_into", C, k_xhat=k_xhat, mean_dout=mean_dout, scale=scale)
    _check("input_grad_into: xhat", tuple(xhat.shape)[:3], (n, C, P))
    _check("input_grad_into: dx", tuple(dx.shape)[:3], (n, C, P))
    if n == 0 or C == 0 or P == 0:
        return
    with nogil:
        for s in range(n):
            for c in range(C):
                d, h, o = &dout[s, c, 0], &xhat[s, c, 0], &dx[s, c, 0]
                k, m, sc = k_xhat[c], mean_dout[c], scale[c]
                for i in range(P):
                    o[i] = (d[i] - m + k * h[i]) * sc
