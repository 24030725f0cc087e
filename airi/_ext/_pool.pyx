"""Compiled max- and average-pooling (private: call them through :mod:`airi._backend`).

Shapes (NCHW, no padding)::

    maxpool_forward(x (N, C, H, W), kh, kw, sh, sw, num_threads)
        -> out (N, C, Ho, Wo), argmax (N, C, Ho, Wo) np.intp
    maxpool_backward(dout (N, C, Ho, Wo), argmax, H, W, kh, kw, sh, sw, num_threads)
        -> dx (N, C, H, W)
    avgpool_forward(x, kh, kw, sh, sw, num_threads)          -> out (N, C, Ho, Wo)
    avgpool_backward(dout, H, W, kh, kw, sh, sw, num_threads) -> dx (N, C, H, W)

with Ho = (H - kh) // sh + 1 and Wo likewise. Each has an ``..._into`` twin that writes
into caller-provided C-contiguous arrays instead (``maxpool_forward_into(x, out, argmax,
...)``, ``maxpool_backward_into(dout, argmax, dx, ...)``, ``avgpool_forward_into(x, out,
...)``, ``avgpool_backward_into(dout, dx, ...)``): airi._backend runs them on chunks of
the batch from its own threads (one OpenMP thread each), see airi/_parallel.py. ``argmax`` is the flat index
``row * W + col`` inside the H x W plane of the FIRST maximum of each window in
row-major window order (a NaN counts as a maximum, the first NaN wins), exactly like
``np.argmax`` in the NumPy twin, so ties give the same answer on both backends and the
backward pass routes each gradient to exactly one position.

Each of the N*C planes is independent: ``prange`` splits the planes over the threads
and every thread writes only its own output planes, so there are no races (overlapping
windows only ever overlap inside one plane).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

import numpy as np

# Bumped whenever a signature or a result convention changes; airi._backend refuses a
# compiled module (e.g. a stale one from an installed copy) whose version differs.
API_VERSION = 3


# Below this many elements a call takes some tens of microseconds: starting and joining
# a thread team would cost about what it saves, so small calls stay on one thread.
cdef Py_ssize_t _PARALLEL_MIN_WORK = 1 << 15


cdef inline int _team_size(Py_ssize_t work, int requested) noexcept nogil:
    """Threads for a call touching ``work`` elements (1 for small calls)."""
    if requested < 1 or work < _PARALLEL_MIN_WORK:
        return 1
    return requested


cdef inline bint _beats(floating v, floating best) noexcept nogil:
    """True when v replaces the running maximum: strictly larger (so the first of equal
    values stays), or the first NaN (NaN propagates, as with np.argmax)."""
    return v > best or (v != v and best == best)


cdef bint _has_nan(const floating* img, Py_ssize_t size) noexcept nogil:
    """True when the plane holds a NaN (an OR-reduction gcc vectorises)."""
    cdef Py_ssize_t q
    cdef int found = 0
    for q in range(size):
        found |= img[q] != img[q]
    return found


# -------------------------------------------------------------------- max-pool
# The fast scans below are branch-free: with random activations "is this value the new
# maximum?" is a coin flip, and a mispredicted branch per comparison made them 3-6x
# slower. ``best = v if v > best else best`` compiles to a max instruction and the index
# is updated arithmetically (k += up * (at - k)). They ignore NaN (a NaN never wins), so
# planes that hold a NaN go through the exact, branchy ``_maxpool_plane_exact`` instead.
cdef void _maxpool_plane_2x2(const floating* img, floating* out, Py_ssize_t* arg,
                             Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """Non-overlapping 2x2 windows, stride 2: a tournament (a, b) vs (c, d). A pair's
    later value must be strictly larger to win, so the first maximum always wins."""
    cdef Py_ssize_t oh, ow, base, right, lower, pair_b
    cdef const floating* top
    cdef const floating* bottom
    cdef floating a, b, c, d, m1, m2
    for oh in range(Ho):
        top = img + 2 * oh * W
        bottom = top + W
        base = 2 * oh * W
        for ow in range(Wo):
            a = top[2 * ow]
            b = top[2 * ow + 1]
            c = bottom[2 * ow]
            d = bottom[2 * ow + 1]
            right = b > a
            m1 = b if b > a else a
            pair_b = d > c
            m2 = d if d > c else c
            lower = m2 > m1
            out[oh * Wo + ow] = m2 if m2 > m1 else m1
            # offset in the window: right (0/1) for the top pair, W + pair_b for the bottom
            arg[oh * Wo + ow] = base + 2 * ow + right + lower * (W + pair_b - right)


cdef inline floating _first_max_of_3(const floating* row, Py_ssize_t* where) noexcept nogil:
    """Max of row[0:3] and (in ``where``) the index of its first occurrence."""
    cdef floating m = row[0]
    cdef Py_ssize_t k = 0, up
    up = row[1] > m
    m = row[1] if row[1] > m else m
    k = up
    up = row[2] > m
    m = row[2] if row[2] > m else m
    k = k + up * (2 - k)
    where[0] = k
    return m


cdef void _maxpool_plane_3x3(const floating* img, floating* out, Py_ssize_t* arg,
                             Py_ssize_t W, Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """3x3 windows, any stride: the first maximum of each row, then of the three rows.
    Lexicographic (row, col) order is kept: within a row and between rows a later
    candidate must be strictly larger. The three rows are independent, so the CPU
    works on them in parallel (2.5x faster than one 9-step dependency chain)."""
    cdef Py_ssize_t oh, ow, start, k, k0, k1, k2, up
    cdef floating m0, m1, m2, best
    for oh in range(Ho):
        for ow in range(Wo):
            start = oh * sh * W + ow * sw
            m0 = _first_max_of_3(img + start, &k0)
            m1 = _first_max_of_3(img + start + W, &k1)
            m2 = _first_max_of_3(img + start + 2 * W, &k2)
            best = m0
            k = k0
            up = m1 > best
            best = m1 if m1 > best else best
            k = k + up * (W + k1 - k)
            up = m2 > best
            best = m2 if m2 > best else best
            k = k + up * (2 * W + k2 - k)
            out[oh * Wo + ow] = best
            arg[oh * Wo + ow] = start + k


cdef void _maxpool_plane_fast(const floating* img, floating* out, Py_ssize_t* arg,
                              Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                              Py_ssize_t sh, Py_ssize_t sw,
                              Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """Any window and stride, NaN-free plane: branch-free row-major scan."""
    cdef Py_ssize_t oh, ow, i, j, start, k, at, up
    cdef floating best, v
    for oh in range(Ho):
        for ow in range(Wo):
            start = oh * sh * W + ow * sw
            best = img[start]
            k = start
            for i in range(kh):
                for j in range(kw):
                    at = start + i * W + j
                    v = img[at]
                    up = v > best
                    best = v if v > best else best
                    k = k + up * (at - k)
            out[oh * Wo + ow] = best
            arg[oh * Wo + ow] = k


cdef void _maxpool_plane_exact(const floating* img, floating* out, Py_ssize_t* arg,
                               Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """Any window and stride, NaN-aware (the first NaN of a window wins)."""
    cdef Py_ssize_t oh, ow, i, j, start, k, at
    cdef floating best, v
    for oh in range(Ho):
        for ow in range(Wo):
            start = oh * sh * W + ow * sw
            best = img[start]
            k = start
            for i in range(kh):
                for j in range(kw):
                    at = start + i * W + j
                    v = img[at]
                    if _beats(v, best):
                        best = v
                        k = at
            out[oh * Wo + ow] = best
            arg[oh * Wo + ow] = k


cdef void _maxpool_plane(const floating* img, floating* out, Py_ssize_t* arg,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    if _has_nan(img, H * W):
        _maxpool_plane_exact(img, out, arg, W, kh, kw, sh, sw, Ho, Wo)
    elif kh == 2 and kw == 2 and sh == 2 and sw == 2:
        _maxpool_plane_2x2(img, out, arg, W, Ho, Wo)
    elif kh == 3 and kw == 3:
        _maxpool_plane_3x3(img, out, arg, W, sh, sw, Ho, Wo)
    else:
        _maxpool_plane_fast(img, out, arg, W, kh, kw, sh, sw, Ho, Wo)


cdef Py_ssize_t _maxpool_backward_plane(const floating* dout, const Py_ssize_t* arg,
                                        floating* img, Py_ssize_t HW,
                                        Py_ssize_t HoWo) noexcept nogil:
    """Zero the plane, then add each gradient at its argmax; returns how many argmax
    entries were out of the plane (they are skipped instead of writing out of bounds)."""
    cdef Py_ssize_t q, at, bad = 0
    memset(img, 0, HW * sizeof(floating))
    for q in range(HoWo):
        at = arg[q]
        if at < 0 or at >= HW:
            bad += 1
        else:
            img[at] += dout[q]
    return bad


def maxpool_forward_into(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                         Py_ssize_t[:, :, :, ::1] argmax, Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t sh, Py_ssize_t sw, int num_threads):
    """Write the max of each window of x (N, C, H, W) into out and its flat index into
    argmax, both (N, C, Ho, Wo) and C-contiguous."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho, Wo, plane
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    _check_shape("maxpool_forward_into: out", out.shape, (N, C, Ho, Wo))
    _check_shape("maxpool_forward_into: argmax", argmax.shape, (N, C, Ho, Wo))
    if N * C == 0:
        return
    cdef int nt = _team_size(N * C * H * W, num_threads)
    cdef const floating* src = &x[0, 0, 0, 0]
    cdef floating* dst = &out[0, 0, 0, 0]
    cdef Py_ssize_t* arg = &argmax[0, 0, 0, 0]
    for plane in prange(N * C, nogil=True, schedule="guided", num_threads=nt):
        _maxpool_plane(src + plane * H * W, dst + plane * Ho * Wo, arg + plane * Ho * Wo,
                       H, W, kh, kw, sh, sw, Ho, Wo)


def maxpool_forward(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw,
                    Py_ssize_t sh, Py_ssize_t sw, int num_threads):
    """x (N, C, H, W) -> out (N, C, Ho, Wo), argmax (N, C, Ho, Wo) np.intp."""
    cdef Py_ssize_t Ho, Wo
    Ho, Wo = _out_hw(x.shape[2], x.shape[3], kh, kw, sh, sw)
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((x.shape[0], x.shape[1], Ho, Wo), dtype=dtype)
    argmax = np.empty((x.shape[0], x.shape[1], Ho, Wo), dtype=np.intp)
    maxpool_forward_into(x, out, argmax, kh, kw, sh, sw, num_threads)
    return out, argmax


def maxpool_backward_into(const floating[:, :, :, ::1] dout,
                          const Py_ssize_t[:, :, :, ::1] argmax, floating[:, :, :, ::1] dx,
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                          int num_threads):
    """Overwrite dx (N, C, H, W) with dout (N, C, Ho, Wo) routed to the argmax positions."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t Ho, Wo, plane, bad = 0
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    _check_shape("maxpool_backward_into: dout", dout.shape, (N, C, Ho, Wo))
    _check_shape("maxpool_backward_into: argmax", argmax.shape, (N, C, Ho, Wo))
    if N * C == 0:
        return
    cdef int nt = _team_size(N * C * H * W, num_threads)
    cdef const floating* src = &dout[0, 0, 0, 0]
    cdef const Py_ssize_t* arg = &argmax[0, 0, 0, 0]
    cdef floating* dst = &dx[0, 0, 0, 0]
    for plane in prange(N * C, nogil=True, schedule="guided",
                        num_threads=nt):
        bad += _maxpool_backward_plane(src + plane * Ho * Wo, arg + plane * Ho * Wo,
                                       dst + plane * H * W, H * W, Ho * Wo)
    if bad:
        raise ValueError(f"maxpool_backward: {bad} argmax entries lie outside the "
                         f"{H}x{W} plane (argmax must come from maxpool_forward)")


def maxpool_backward(const floating[:, :, :, ::1] dout, const Py_ssize_t[:, :, :, ::1] argmax,
                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                     Py_ssize_t sh, Py_ssize_t sw, int num_threads):
    """dout (N, C, Ho, Wo), argmax (same shape) -> dx (N, C, H, W)."""
    cdef Py_ssize_t N = dout.shape[0], C = dout.shape[1], Ho, Wo
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    if (dout.shape[2], dout.shape[3]) != (Ho, Wo) or \
            tuple(argmax.shape)[:4] != tuple(dout.shape)[:4]:
        raise ValueError(f"maxpool_backward: dout {tuple(dout.shape)[:4]} and argmax "
                         f"{tuple(argmax.shape)[:4]} must both be {(N, C, Ho, Wo)}")
    dtype = np.float32 if floating is float else np.float64
    dx = np.empty((N, C, H, W), dtype=dtype)
    maxpool_backward_into(dout, argmax, dx, kh, kw, sh, sw, num_threads)
    return dx


# ---------------------------------------------------------------- average-pool
cdef void _avgpool_plane(const floating* img, floating* out, Py_ssize_t W,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t Ho, Py_ssize_t Wo, floating scale) noexcept nogil:
    """Sum each window in row-major order, then scale: the NumPy twin's order of
    operations, so both backends round identically."""
    cdef Py_ssize_t oh, ow, i, j, start
    cdef floating acc
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        for oh in range(Ho):
            start = 2 * oh * W
            for ow in range(Wo):
                acc = img[start + 2 * ow] + img[start + 2 * ow + 1]
                acc = acc + img[start + W + 2 * ow]
                acc = acc + img[start + W + 2 * ow + 1]
                out[oh * Wo + ow] = acc * scale
        return
    for oh in range(Ho):
        for ow in range(Wo):
            start = oh * sh * W + ow * sw
            acc = 0
            for i in range(kh):
                for j in range(kw):
                    acc = acc + img[start + i * W + j]
            out[oh * Wo + ow] = acc * scale


cdef void _avgpool_backward_plane(const floating* dout, floating* img, Py_ssize_t H,
                                  Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                                  Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t Ho,
                                  Py_ssize_t Wo, floating scale) noexcept nogil:
    """Zero the plane, then add dout * scale over every window (overlaps add up)."""
    cdef Py_ssize_t oh, ow, i, j, start
    cdef floating share
    memset(img, 0, H * W * sizeof(floating))
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:  # disjoint windows: plain stores
        for oh in range(Ho):
            start = 2 * oh * W
            for ow in range(Wo):
                share = dout[oh * Wo + ow] * scale
                img[start + 2 * ow] = share
                img[start + 2 * ow + 1] = share
                img[start + W + 2 * ow] = share
                img[start + W + 2 * ow + 1] = share
        return
    for oh in range(Ho):
        for ow in range(Wo):
            share = dout[oh * Wo + ow] * scale
            start = oh * sh * W + ow * sw
            for i in range(kh):
                for j in range(kw):
                    img[start + i * W + j] += share


def avgpool_forward_into(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         int num_threads):
    """Write the mean of each window of x (N, C, H, W) into out (N, C, Ho, Wo)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho, Wo, plane
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    _check_shape("avgpool_forward_into: out", out.shape, (N, C, Ho, Wo))
    if N * C == 0:
        return
    cdef int nt = _team_size(N * C * H * W, num_threads)
    cdef const floating* src = &x[0, 0, 0, 0]
    cdef floating* dst = &out[0, 0, 0, 0]
    cdef floating scale = <floating>(1.0 / (kh * kw))
    for plane in prange(N * C, nogil=True, schedule="guided",
                        num_threads=nt):
        _avgpool_plane(src + plane * H * W, dst + plane * Ho * Wo, W, kh, kw, sh, sw,
                       Ho, Wo, scale)


def avgpool_forward(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw,
                    Py_ssize_t sh, Py_ssize_t sw, int num_threads):
    """x (N, C, H, W) -> out (N, C, Ho, Wo), the mean of each window."""
    cdef Py_ssize_t Ho, Wo
    Ho, Wo = _out_hw(x.shape[2], x.shape[3], kh, kw, sh, sw)
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((x.shape[0], x.shape[1], Ho, Wo), dtype=dtype)
    avgpool_forward_into(x, out, kh, kw, sh, sw, num_threads)
    return out


def avgpool_backward_into(const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] dx,
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                          int num_threads):
    """Overwrite dx (N, C, H, W) with dout (N, C, Ho, Wo) spread over the windows."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t Ho, Wo, plane
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    _check_shape("avgpool_backward_into: dout", dout.shape, (N, C, Ho, Wo))
    if N * C == 0:
        return
    cdef int nt = _team_size(N * C * H * W, num_threads)
    cdef const floating* src = &dout[0, 0, 0, 0]
    cdef floating* dst = &dx[0, 0, 0, 0]
    cdef floating scale = <floating>(1.0 / (kh * kw))
    for plane in prange(N * C, nogil=True, schedule="guided",
                        num_threads=nt):
        _avgpool_backward_plane(src + plane * Ho * Wo, dst + plane * H * W, H, W,
                                kh, kw, sh, sw, Ho, Wo, scale)


def avgpool_backward(const floating[:, :, :, ::1] dout, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                     int num_threads):
    """dout (N, C, Ho, Wo) -> dx (N, C, H, W)."""
    cdef Py_ssize_t N = dout.shape[0], C = dout.shape[1], Ho, Wo
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    if (dout.shape[2], dout.shape[3]) != (Ho, Wo):
        raise ValueError(f"avgpool_backward: dout has shape {tuple(dout.shape)[:4]}, "
                         f"expected {(N, C, Ho, Wo)}")
    dtype = np.float32 if floating is float else np.float64
    dx = np.empty((N, C, H, W), dtype=dtype)
    avgpool_backward_into(dout, dx, kh, kw, sh, sw, num_threads)
    return dx


cdef _check_shape(str what, Py_ssize_t* shape, tuple expected):
    if (shape[0], shape[1], shape[2], shape[3]) != expected:
        raise ValueError(f"{what} has shape {(shape[0], shape[1], shape[2], shape[3])}, "
                         f"expected {expected}")


cdef tuple _out_hw(Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                   Py_ssize_t sh, Py_ssize_t sw):
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or kh > H or kw > W:
        raise ValueError(f"_pool: invalid window kernel=({kh}, {kw}) stride=({sh}, {sw}) "
                         f"for a {H}x{W} input")
    return (H - kh) // sh + 1, (W - kw) // sw + 1
