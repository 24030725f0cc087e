"""Compiled max- and average-pooling (private: reached through the kernel namespaces
of :mod:`airi._backend`).

Shapes (NCHW, no padding), each writing into caller-provided C-contiguous arrays::

    maxpool_forward_into(x (N, C, H, W), out (N, C, Ho, Wo), argmax (N, C, Ho, Wo), ...)
    maxpool_backward_into(dout (N, C, Ho, Wo), argmax, dx (N, C, H, W), ...)
    avgpool_forward_into(x, out, ...)
    avgpool_backward_into(dout, dx, ...)

with Ho = (H - kh) // sh + 1 and Wo likewise; the trailing arguments are kh, kw, sh,
sw. Each call runs on the calling thread without the GIL; airi's thread owner
(airi/_parallel.py) runs them on slices of the batch from its threads.

``argmax`` holds, for each window, the *tap* ``q = i * kw + j`` of its FIRST maximum
(window row i, column j) in row-major window order (a NaN counts as a maximum, the first
NaN wins), exactly like the NumPy twin, so ties give the same answer on both backends and
the backward pass routes each gradient to exactly one position. A tap is np.uint8 when
the window has at most 256 elements (1 byte per output instead of 8 for a flat index:
the cache the layer keeps, and the traffic of both passes, shrink 8x), np.intp for
bigger windows (``airi.functional.maxpool_tap_dtype`` is the rule).

Each of the N*C planes is independent (overlapping windows only ever overlap inside
one plane), so slices of the batch can run on different threads without races.
"""
from cython cimport floating
from libc.stdint cimport uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

import numpy as np

# Bumped whenever a signature or a result convention changes; airi._backend refuses a
# compiled module (e.g. a stale one from an installed copy) whose version differs.
API_VERSION = 5

# Windows of up to this many elements store their taps as np.uint8 (taps 0..255).
MAX_UINT8_WINDOW = 256

# The two tap types: the kernels are compiled for both (and for float32 and float64).
ctypedef fused tap_t:
    uint8_t
    Py_ssize_t



cdef inline bint _beats(floating v, floating best) noexcept nogil:
    """True when v replaces the running maximum: strictly larger (so the first of equal
    values stays), or the first NaN (NaN propagates, as with np.argmax)."""
    return v > best or (v != v and best == best)


cdef bint _has_nan(const floating* img, Py_ssize_t size) noexcept nogil:
    """True when img[:size] holds a NaN (an OR-reduction gcc vectorises)."""
    cdef Py_ssize_t q
    cdef int found = 0
    for q in range(size):
        found |= img[q] != img[q]
    return found


# -------------------------------------------------------------------- max-pool
# The fast kernels below work one output row at a time, in loops over the row's outputs
# that gcc vectorises (-O3, SSE2 on any x86-64): no branch depends on the data (with
# random activations "is this the new maximum?" is a coin flip, and a mispredicted
# branch per comparison made scalar code 3-6x slower), maxima are ``v if v > m else m``
# (one max instruction) and taps come from compare-and-select.
#
# Their taps go to a scratch row of the data's own type first (a tap 0..255 is an exact
# float) and are converted to the caller's tap type in a separate pass over the whole
# plane. A loop that mixes lane widths (4- or 8-byte values, 1-byte taps) is vectorised
# 16 outputs at a time, longer than most rows (14 outputs for a 28-wide input), or not
# at all; its scalar remainder then runs branchy and 3x slower. Integer taps of a
# different width than the data were no better (no 64-bit compares in SSE2), and gcc
# merged several tests of one integer tap into a chain of branches.
#
# The fast kernels do not pick the first NaN of a window (a NaN never wins), but they
# flag it in the window's tap: planes with a flagged window are redone by the exact,
# branchy ``_maxpool_plane_exact``.

# Windows larger than this take the exact path: their taps would not all be exact in a
# float32 scratch row (2**24 elements: no real pooling window comes close).
cdef Py_ssize_t _FAST_MAX_WINDOW = 1 << 24


cdef inline void _maxpool_row_2x2(const floating* top, const floating* bottom,
                                  floating* out, floating* tap, Py_ssize_t Wo,
                                  Py_ssize_t sw) noexcept nogil:
    """One output row of 2x2 windows: ``top`` and ``bottom`` are the windows' two input
    rows, ``out`` and ``tap`` (Wo,) the results, ``sw`` the column stride (inlined
    with a constant 1 or 2, so gcc knows the access pattern).

    Pair maxima first, ``a`` vs ``b`` and ``c`` vs ``d``, keeping the first of equals;
    then the tap is the first position (in a, b, c, d order) holding the maximum: with
    no NaN, that is exactly the first maximum (every earlier value is smaller)."""
    cdef Py_ssize_t ow
    cdef floating a, b, c, d, m1, m2, m
    for ow in range(Wo):
        a = top[sw * ow]
        b = top[sw * ow + 1]
        c = bottom[sw * ow]
        d = bottom[sw * ow + 1]
        m1 = b if b > a else a
        m2 = d if d > c else c
        m = m2 if m2 > m1 else m1
        out[ow] = m
        # + 0, or NaN when the window holds a NaN (or an infinity): see _maxpool_plane
        tap[ow] = (0 if a == m else (1 if b == m else (2 if c == m else 3))) + \
            ((a - a) + (b - b) + (c - c) + (d - d))


cdef inline floating _max3(floating a, floating b, floating c) noexcept nogil:
    """The first maximum of a, b, c (a later value must be strictly larger)."""
    cdef floating m = b if b > a else a
    return c if c > m else m


cdef inline floating _nan3(floating a, floating b, floating c) noexcept nogil:
    """0, or NaN when a, b or c is NaN or infinite."""
    return (a - a) + (b - b) + (c - c)


cdef inline void _maxpool_row_3x3(const floating* r0, const floating* r1,
                                  const floating* r2, floating* out, floating* tap,
                                  Py_ssize_t Wo, Py_ssize_t sw) noexcept nogil:
    """One output row of 3x3 windows: ``r0``, ``r1``, ``r2`` are the windows' input
    rows, ``out`` and ``tap`` (Wo,) the results, ``sw`` the column stride (inlined
    with a constant 1 or 2).

    The three row maxima are independent (the CPU works on them in parallel), then
    the tap is the first of the nine positions, in row-major order, holding the
    maximum: with no NaN, exactly the first maximum."""
    cdef Py_ssize_t ow
    cdef floating a0, a1, a2, b0, b1, b2, c0, c1, c2, m0, m1, m2, m, k0, k1, k2
    for ow in range(Wo):
        a0 = r0[sw * ow]
        a1 = r0[sw * ow + 1]
        a2 = r0[sw * ow + 2]
        b0 = r1[sw * ow]
        b1 = r1[sw * ow + 1]
        b2 = r1[sw * ow + 2]
        c0 = r2[sw * ow]
        c1 = r2[sw * ow + 1]
        c2 = r2[sw * ow + 2]
        m0 = _max3(a0, a1, a2)
        m1 = _max3(b0, b1, b2)
        m2 = _max3(c0, c1, c2)
        m = _max3(m0, m1, m2)
        out[ow] = m
        # first column holding m in each row, then the first row whose maximum is m
        # (two levels of 3-way selects: gcc does not if-convert one 9-way select)
        k0 = 0 if a0 == m else (1 if a1 == m else 2)
        k1 = 3 if b0 == m else (4 if b1 == m else 5)
        k2 = 6 if c0 == m else (7 if c1 == m else 8)
        # + 0, or NaN when the window holds a NaN (or an infinity): see _maxpool_plane
        tap[ow] = (k0 if m0 == m else (k1 if m1 == m else k2)) + \
            (_nan3(a0, a1, a2) + _nan3(b0, b1, b2) + _nan3(c0, c1, c2))


cdef void _maxpool_row_any(const floating* img, floating* out, floating* tap,
                           Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw,
                           Py_ssize_t Wo) noexcept nogil:
    """One output row of any window: ``img`` points at the first input row of the
    windows, ``out`` and ``tap`` (Wo,) receive the results.

    The window's taps are visited in row-major order, each in one pass over the whole
    output row (so the inner loop runs over outputs, and vectorises); a tap replaces
    the running maximum only when strictly larger, so the first maximum wins. The new
    maximum is written ``m if m >= v else v`` (the same, with no NaN): a second select
    on the same ``v > m`` made gcc branch instead of vectorising. The tap turns NaN
    for good once the window showed a NaN or an infinity (+ ``t - t`` + ``v - v``)."""
    cdef Py_ssize_t ow, i, j
    cdef const floating* row
    cdef floating v, m, q, t
    for ow in range(Wo):
        v = img[ow * sw]
        out[ow] = v
        tap[ow] = v - v
    for i in range(kh):
        row = img + i * W
        for j in range(kw):
            if i == 0 and j == 0:
                continue
            q = i * kw + j
            if sw == 1:  # constant strides: gcc loads whole vectors
                for ow in range(Wo):
                    v = row[ow + j]
                    m = out[ow]
                    t = tap[ow]
                    tap[ow] = (q if v > m else t) + ((t - t) + (v - v))
                    out[ow] = m if m >= v else v
            elif sw == 2:
                for ow in range(Wo):
                    v = row[2 * ow + j]
                    m = out[ow]
                    t = tap[ow]
                    tap[ow] = (q if v > m else t) + ((t - t) + (v - v))
                    out[ow] = m if m >= v else v
            else:
                for ow in range(Wo):
                    v = row[ow * sw + j]
                    m = out[ow]
                    t = tap[ow]
                    tap[ow] = (q if v > m else t) + ((t - t) + (v - v))
                    out[ow] = m if m >= v else v


cdef void _maxpool_plane_exact(const floating* img, floating* out, tap_t* tap,
                               Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """Any window and stride, NaN-aware (the first NaN of a window wins)."""
    cdef Py_ssize_t oh, ow, i, j, start, k
    cdef floating best, v
    for oh in range(Ho):
        for ow in range(Wo):
            start = oh * sh * W + ow * sw
            best = img[start]
            k = 0
            for i in range(kh):
                for j in range(kw):
                    v = img[start + i * W + j]
                    if _beats(v, best):
                        best = v
                        k = i * kw + j
            out[oh * Wo + ow] = best
            tap[oh * Wo + ow] = <tap_t>k


cdef void _maxpool_plane(const floating* img, floating* out, tap_t* tap, floating* scratch,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """One H x W plane -> out and tap (Ho, Wo); ``scratch`` holds Ho*Wo values."""
    cdef Py_ssize_t oh, k
    cdef const floating* rows
    cdef floating* out_row
    cdef floating* tap_row
    if kh * kw > _FAST_MAX_WINDOW:
        _maxpool_plane_exact(img, out, tap, W, kh, kw, sh, sw, Ho, Wo)
        return
    for oh in range(Ho):
        rows = img + oh * sh * W
        out_row = out + oh * Wo
        tap_row = scratch + oh * Wo
        if kh == 2 and kw == 2 and sw == 2:
            _maxpool_row_2x2(rows, rows + W, out_row, tap_row, Wo, 2)
        elif kh == 2 and kw == 2 and sw == 1:
            _maxpool_row_2x2(rows, rows + W, out_row, tap_row, Wo, 1)
        elif kh == 3 and kw == 3 and sw == 2:
            _maxpool_row_3x3(rows, rows + W, rows + 2 * W, out_row, tap_row, Wo, 2)
        elif kh == 3 and kw == 3 and sw == 1:
            _maxpool_row_3x3(rows, rows + W, rows + 2 * W, out_row, tap_row, Wo, 1)
        else:
            _maxpool_row_any(rows, out_row, tap_row, W, kh, kw, sw, Wo)
    # The row kernels add ``x - x`` over the window to each tap: 0, or NaN when the
    # window holds a NaN (or an infinity, which the exact path handles just as well).
    # A NaN tap sends the plane, still in cache, through the exact path. Checking the
    # small tap plane afterwards instead of the whole input beforehand saved a pass
    # over the input (40% of the forward's time).
    if _has_nan(scratch, Ho * Wo):
        _maxpool_plane_exact(img, out, tap, W, kh, kw, sh, sw, Ho, Wo)
        return
    for k in range(Ho * Wo):  # the scratch taps are exact small integers
        tap[k] = <tap_t>scratch[k]


cdef inline Py_ssize_t _outside(Py_ssize_t q, Py_ssize_t K) noexcept nogil:
    """1 when q is not a tap of a K-element window, else 0."""
    return (q < 0) | (q >= K)


cdef Py_ssize_t _taps_to_scratch(const tap_t* tap, floating* scratch, Py_ssize_t n,
                                 Py_ssize_t K) noexcept nogil:
    """Copy n taps to scratch in the data type; returns how many lie outside 0..K-1.

    A bad tap keeps a value that matches no tap of the window (a huge intp rounds to
    a huge float), so it routes its gradient nowhere. Two plain loops, converting and
    counting, so that gcc vectorises both."""
    cdef Py_ssize_t k, bad = 0
    for k in range(n):
        scratch[k] = <floating>tap[k]
    for k in range(n):
        bad += _outside(tap[k], K)
    return bad


cdef void _maxpool_backward_row_2x2(const floating* dout, const floating* tap,
                                    floating* top, floating* bottom,
                                    Py_ssize_t Wo) noexcept nogil:
    """Disjoint 2x2 windows, column stride 2: write the windows' four input positions
    of one output row, dout where the tap points and 0 elsewhere (no prior zeroing)."""
    cdef Py_ssize_t ow
    cdef floating g, q
    for ow in range(Wo):
        g = dout[ow]
        q = tap[ow]
        top[2 * ow] = g if q == 0 else 0
        top[2 * ow + 1] = g if q == 1 else 0
        bottom[2 * ow] = g if q == 2 else 0
        bottom[2 * ow + 1] = g if q == 3 else 0


cdef Py_ssize_t _count_outside(const tap_t* tap, Py_ssize_t n, Py_ssize_t K) noexcept nogil:
    """How many of tap[:n] lie outside 0..K-1: a min/max pass (which gcc vectorises),
    and a count only when that finds one."""
    cdef Py_ssize_t k, bad = 0
    cdef tap_t lo = tap[0], hi = tap[0]
    for k in range(n):
        lo = tap[k] if tap[k] < lo else lo
        hi = tap[k] if tap[k] > hi else hi
    if lo >= 0 and hi < K:
        return 0
    for k in range(n):
        bad += _outside(tap[k], K)
    return bad


cdef void _scatter_add_row(const floating* dout, const tap_t* tap,
                           const Py_ssize_t* offsets, floating* rows, Py_ssize_t Wo,
                           Py_ssize_t sw) noexcept nogil:
    """Overlapping windows: add one output row's gradients at ``offsets[tap]`` from
    each window's origin (``rows`` is the windows' first input row; taps checked)."""
    cdef Py_ssize_t ow
    for ow in range(Wo):
        rows[ow * sw + offsets[tap[ow]]] += dout[ow]


cdef Py_ssize_t _maxpool_backward_plane(const floating* dout, const tap_t* tap,
                                        floating* scratch, const Py_ssize_t* offsets,
                                        floating* img, Py_ssize_t H, Py_ssize_t W,
                                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                                        Py_ssize_t sw, Py_ssize_t Ho,
                                        Py_ssize_t Wo) noexcept nogil:
    """dout and tap (Ho, Wo) -> the gradient plane (H, W); returns how many taps lie
    outside the window (they route their gradient nowhere, never out of the plane).

    Disjoint windows (stride >= window) write every covered input position exactly
    once, window by window: one sequential pass instead of zeroing the plane and then
    scattering into it; only what no window covers is zeroed apart. Overlapping windows
    zero the plane and add each gradient at ``offsets[tap]`` from its window's origin
    (``offsets[q] = (q // kw) * W + q % kw``), in (oh, ow) order like the NumPy twin.
    ``scratch`` holds Ho*Wo values (the 2x2 taps, converted to the data type)."""
    cdef Py_ssize_t oh, ow, i, j, k, q, start, covered_h, covered_w, bad = 0
    cdef Py_ssize_t K = kh * kw
    cdef floating g
    cdef floating* rows
    if sh >= kh and sw >= kw:
        covered_h, covered_w = Ho * sh, Wo * sw
        if sh > kh or sw > kw:  # gaps between windows: zero everything first
            memset(img, 0, H * W * sizeof(floating))
        else:  # the windows tile a covered_h x covered_w corner: zero the rest
            if covered_w < W:
                for i in range(covered_h):
                    memset(img + i * W + covered_w, 0, (W - covered_w) * sizeof(floating))
            memset(img + covered_h * W, 0, (H - covered_h) * W * sizeof(floating))
        if kh == 2 and kw == 2 and sw == 2:
            bad = _taps_to_scratch(tap, scratch, Ho * Wo, 4)
            for oh in range(Ho):
                rows = img + oh * sh * W
                _maxpool_backward_row_2x2(dout + oh * Wo, scratch + oh * Wo, rows,
                                          rows + W, Wo)
            return bad
        for oh in range(Ho):
            for ow in range(Wo):
                g = dout[oh * Wo + ow]
                q = tap[oh * Wo + ow]
                bad += _outside(q, K)
                start = oh * sh * W + ow * sw
                for i in range(kh):
                    for j in range(kw):
                        img[start + i * W + j] = g if q == i * kw + j else 0
        return bad
    memset(img, 0, H * W * sizeof(floating))
    bad = _count_outside(tap, Ho * Wo, K)  # first, so the scatter loop needs no test
    if bad:
        return bad  # (the caller raises: skip the scatter rather than write anywhere)
    for oh in range(Ho):
        _scatter_add_row(dout + oh * Wo, tap + oh * Wo, offsets, img + oh * sh * W,
                         Wo, sw)
    return 0


def maxpool_forward_into(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                         tap_t[:, :, :, ::1] argmax, Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t sh, Py_ssize_t sw):
    """Write the max of each window of x (N, C, H, W) into out and the tap of its first
    maximum into argmax, both (N, C, Ho, Wo) and C-contiguous; argmax is np.uint8 or
    np.intp (``airi.functional.maxpool_tap_dtype``; uint8 needs kh * kw <= 256)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho, Wo, plane
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    _check_shape("maxpool_forward_into: out", out.shape, (N, C, Ho, Wo))
    _check_shape("maxpool_forward_into: argmax", argmax.shape, (N, C, Ho, Wo))
    if tap_t is uint8_t and kh * kw > MAX_UINT8_WINDOW:
        raise ValueError(f"maxpool_forward_into: a {kh}x{kw} window has taps beyond 255: "
                         f"argmax must be np.intp, not np.uint8")
    if N * C == 0:
        return
    cdef const floating* src = &x[0, 0, 0, 0]
    cdef floating* dst = &out[0, 0, 0, 0]
    cdef tap_t* arg = &argmax[0, 0, 0, 0]
    # one Ho*Wo scratch plane
    cdef floating* scratch = <floating*>malloc(Ho * Wo * sizeof(floating))
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            for plane in range(N * C):
                _maxpool_plane(src + plane * H * W, dst + plane * Ho * Wo,
                               arg + plane * Ho * Wo, scratch, H, W, kh, kw, sh, sw,
                               Ho, Wo)
    finally:
        free(scratch)


def maxpool_backward_into(const floating[:, :, :, ::1] dout,
                          const tap_t[:, :, :, ::1] argmax, floating[:, :, :, ::1] dx,
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw):
    """Overwrite dx (N, C, H, W) with dout (N, C, Ho, Wo) routed to the window taps in
    argmax (N, C, Ho, Wo); a tap outside the window raises ValueError."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t Ho, Wo, plane, q, bad = 0, K = kh * kw
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    _check_shape("maxpool_backward_into: dout", dout.shape, (N, C, Ho, Wo))
    _check_shape("maxpool_backward_into: argmax", argmax.shape, (N, C, Ho, Wo))
    if N * C == 0:
        return
    cdef const floating* src = &dout[0, 0, 0, 0]
    cdef const tap_t* arg = &argmax[0, 0, 0, 0]
    cdef floating* dst = &dx[0, 0, 0, 0]
    # one Ho*Wo scratch plane, and the tap -> plane offset table
    cdef floating* scratch = <floating*>malloc(Ho * Wo * sizeof(floating))
    cdef Py_ssize_t* offsets = <Py_ssize_t*>malloc(K * sizeof(Py_ssize_t))
    try:
        if scratch == NULL or offsets == NULL:
            raise MemoryError()
        for q in range(K):
            offsets[q] = (q // kw) * W + q % kw
        with nogil:
            for plane in range(N * C):
                bad += _maxpool_backward_plane(src + plane * Ho * Wo,
                                               arg + plane * Ho * Wo, scratch, offsets,
                                               dst + plane * H * W, H, W, kh, kw, sh,
                                               sw, Ho, Wo)
    finally:
        free(scratch)
        free(offsets)
    if bad:
        raise ValueError(f"maxpool_backward: {bad} argmax entries lie outside their "
                         f"{kh}x{kw} window (taps must be 0..{K - 1}; argmax must come "
                         f"from maxpool_forward)")


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
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw):
    """Write the mean of each window of x (N, C, H, W) into out (N, C, Ho, Wo)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho, Wo, plane
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    _check_shape("avgpool_forward_into: out", out.shape, (N, C, Ho, Wo))
    if N * C == 0:
        return
    cdef const floating* src = &x[0, 0, 0, 0]
    cdef floating* dst = &out[0, 0, 0, 0]
    cdef floating scale = <floating>(1.0 / (kh * kw))
    with nogil:
        for plane in range(N * C):
            _avgpool_plane(src + plane * H * W, dst + plane * Ho * Wo, W, kh, kw, sh,
                           sw, Ho, Wo, scale)


def avgpool_backward_into(const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] dx,
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw):
    """Overwrite dx (N, C, H, W) with dout (N, C, Ho, Wo) spread over the windows."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t Ho, Wo, plane
    Ho, Wo = _out_hw(H, W, kh, kw, sh, sw)
    _check_shape("avgpool_backward_into: dout", dout.shape, (N, C, Ho, Wo))
    if N * C == 0:
        return
    cdef const floating* src = &dout[0, 0, 0, 0]
    cdef floating* dst = &dx[0, 0, 0, 0]
    cdef floating scale = <floating>(1.0 / (kh * kw))
    with nogil:
        for plane in range(N * C):
            _avgpool_backward_plane(src + plane * Ho * Wo, dst + plane * H * W, H, W,
                                    kh, kw, sh, sw, Ho, Wo, scale)


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
