"""Compiled im2col and col2im, and the direct convolution (private: airi reaches them
through the kernel namespaces of :mod:`airi._backend`).

Shapes::

    im2col_into(x (n, C, H, W), cols (n, C*kh*kw, Ho*Wo), kh, kw, sh, sw, ph, pw)
    col2im_from(cols (n, C*kh*kw, Ho*Wo), dx (n, C, H, W), kh, kw, sh, sw, ph, pw)

with Ho = (H + 2*ph - kh) // sh + 1 and Wo likewise. Every kernel runs on the calling
thread and releases the GIL: airi's thread owner (airi/_parallel.py) calls them on
chunks of the batch from its threads. ``cols`` may be a view of any strides: Conv2D
passes a transposed view of its (C*kh*kw, n, Ho*Wo) chunk buffer, and
benchmarks/bench_layout.py tries other layouts with the very same kernels (their
measurements are in benchmarks/README.md).
"""
from cython cimport floating
from libc.string cimport memset, memcpy

import numpy as np

# Bumped whenever a signature or a result convention changes; airi._backend refuses a
# compiled module (e.g. a stale one from an installed copy) whose version differs.
API_VERSION = 5



# ------------------------------------------------------------------ index helpers
cdef inline Py_ssize_t _first_inside(Py_ssize_t offset, Py_ssize_t step) noexcept nogil:
    """Smallest o >= 0 with o*step + offset >= 0 (offset may be negative: padding).

    cdivision is on, so only non-negative numbers are ever divided here."""
    if offset >= 0:
        return 0
    return (-offset + step - 1) // step


cdef inline Py_ssize_t _end_inside(Py_ssize_t offset, Py_ssize_t step, Py_ssize_t size,
                                   Py_ssize_t n_out) noexcept nogil:
    """One past the largest o < n_out with o*step + offset < size (0 if there is none)."""
    cdef Py_ssize_t last = size - 1 - offset
    if last < 0:
        return 0
    last = last // step + 1
    return last if last < n_out else n_out


# ---------------------------------------------------------------- plane kernels
cdef void _im2col_plane(const floating* img, floating* rows,
                        Py_ssize_t row_step, Py_ssize_t col_step,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """Unfold one H x W plane into its kh*kw rows of cols.

    Row (i, j) starts at ``rows + (i*kw + j)*row_step``; its element p = oh*Wo + ow
    lives at ``+ p*col_step``. Positions that fall in the zero padding get 0."""
    cdef Py_ssize_t i, j, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi, shift
    cdef floating* out
    cdef floating* line
    cdef const floating* src
    for i in range(kh):
        oh_lo = _first_inside(i - ph, sh)
        oh_hi = _end_inside(i - ph, sh, H, Ho)
        for j in range(kw):
            ow_lo = _first_inside(j - pw, sw)
            ow_hi = _end_inside(j - pw, sw, W, Wo)
            if ow_hi < ow_lo:
                ow_hi = ow_lo
            shift = j - pw
            out = rows + (i * kw + j) * row_step
            for oh in range(Ho):
                line = out + oh * Wo * col_step
                if oh < oh_lo or oh >= oh_hi:
                    for ow in range(Wo):
                        line[ow * col_step] = 0
                    continue
                src = img + (oh * sh + i - ph) * W
                if col_step == 1:
                    # The common case: keep the loops simple so gcc vectorises them.
                    for ow in range(ow_lo):
                        line[ow] = 0
                    if sw == 1:
                        for ow in range(ow_lo, ow_hi):
                            line[ow] = src[ow + shift]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            line[ow] = src[ow * sw + shift]
                    for ow in range(ow_hi, Wo):
                        line[ow] = 0
                else:
                    for ow in range(ow_lo):
                        line[ow * col_step] = 0
                    for ow in range(ow_lo, ow_hi):
                        line[ow * col_step] = src[ow * sw + shift]
                    for ow in range(ow_hi, Wo):
                        line[ow * col_step] = 0


cdef void _col2im_plane(const floating* rows, floating* img,
                        Py_ssize_t row_step, Py_ssize_t col_step,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """Fold the kh*kw rows of one plane back onto its H x W image, adding overlaps.

    Padding positions are simply skipped, so no padded buffer is needed."""
    cdef Py_ssize_t i, j, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi, shift
    cdef const floating* row
    cdef const floating* line
    cdef floating* dst
    memset(img, 0, H * W * sizeof(floating))
    for i in range(kh):
        oh_lo = _first_inside(i - ph, sh)
        oh_hi = _end_inside(i - ph, sh, H, Ho)
        for j in range(kw):
            ow_lo = _first_inside(j - pw, sw)
            ow_hi = _end_inside(j - pw, sw, W, Wo)
            shift = j - pw
            row = rows + (i * kw + j) * row_step
            for oh in range(oh_lo, oh_hi):
                line = row + oh * Wo * col_step
                dst = img + (oh * sh + i - ph) * W
                if col_step == 1 and sw == 1:
                    for ow in range(ow_lo, ow_hi):
                        dst[ow + shift] += line[ow]
                elif col_step == 1:
                    for ow in range(ow_lo, ow_hi):
                        dst[ow * sw + shift] += line[ow]
                else:
                    for ow in range(ow_lo, ow_hi):
                        dst[ow * sw + shift] += line[ow * col_step]


# ------------------------------------------------------------------ drivers
cdef void _im2col_all(const floating[:, :, :, ::1] x, floating[:, :, :] cols,
                      Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Ho, Py_ssize_t Wo
                      ) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t n_step = cols.strides[0] // sizeof(floating)
    cdef Py_ssize_t row_step = cols.strides[1] // sizeof(floating)
    cdef Py_ssize_t col_step = cols.strides[2] // sizeof(floating)
    cdef Py_ssize_t plane, n, c
    cdef const floating* src = &x[0, 0, 0, 0]
    cdef floating* dst = &cols[0, 0, 0]
    for plane in range(N * C):
        n = plane // C
        c = plane - n * C
        _im2col_plane(src + plane * H * W,
                      dst + n * n_step + c * kh * kw * row_step,
                      row_step, col_step, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)


cdef void _col2im_all(const floating[:, :, :] cols, floating[:, :, :, ::1] dx,
                      Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Ho, Py_ssize_t Wo
                      ) noexcept nogil:
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t n_step = cols.strides[0] // sizeof(floating)
    cdef Py_ssize_t row_step = cols.strides[1] // sizeof(floating)
    cdef Py_ssize_t col_step = cols.strides[2] // sizeof(floating)
    cdef Py_ssize_t plane, n, c
    cdef const floating* src = &cols[0, 0, 0]
    cdef floating* dst = &dx[0, 0, 0, 0]
    for plane in range(N * C):
        n = plane // C
        c = plane - n * C
        _col2im_plane(src + n * n_step + c * kh * kw * row_step,
                      dst + plane * H * W,
                      row_step, col_step, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)


cdef tuple _out_hw(Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw):
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0 \
            or kh > H + 2 * ph or kw > W + 2 * pw:
        raise ValueError(f"_conv: invalid window kernel=({kh}, {kw}) stride=({sh}, {sw}) "
                         f"pad=({ph}, {pw}) for a {H}x{W} input")
    return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1


# ------------------------------------------------------------------ Python API
def im2col_into(const floating[:, :, :, ::1] x, floating[:, :, :] cols,
                Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                Py_ssize_t ph, Py_ssize_t pw):
    """Write im2col(x) into ``cols``, any (N, C*kh*kw, Ho*Wo) view of x's dtype."""
    cdef Py_ssize_t Ho, Wo
    Ho, Wo = _out_hw(x.shape[2], x.shape[3], kh, kw, sh, sw, ph, pw)
    if (cols.shape[0], cols.shape[1], cols.shape[2]) != \
            (x.shape[0], x.shape[1] * kh * kw, Ho * Wo):
        raise ValueError(f"im2col_into: cols has shape {tuple(cols.shape)[:3]}, expected "
                         f"{(x.shape[0], x.shape[1] * kh * kw, Ho * Wo)}")
    with nogil:
        _im2col_all(x, cols, kh, kw, sh, sw, ph, pw, Ho, Wo)


def col2im_from(const floating[:, :, :] cols, floating[:, :, :, ::1] dx,
                Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                Py_ssize_t ph, Py_ssize_t pw):
    """Overwrite ``dx`` (N, C, H, W), C-contiguous, with col2im(cols); ``cols`` is any
    (N, C*kh*kw, Ho*Wo) view of dx's dtype."""
    cdef Py_ssize_t Ho, Wo
    Ho, Wo = _out_hw(dx.shape[2], dx.shape[3], kh, kw, sh, sw, ph, pw)
    if (cols.shape[0], cols.shape[1], cols.shape[2]) != \
            (dx.shape[0], dx.shape[1] * kh * kw, Ho * Wo):
        raise ValueError(f"col2im_from: cols has shape {tuple(cols.shape)[:3]}, expected "
                         f"{(dx.shape[0], dx.shape[1] * kh * kw, Ho * Wo)}")
    with nogil:
        _col2im_all(cols, dx, kh, kw, sh, sw, ph, pw, Ho, Wo)


# ------------------------------------------------------------ direct convolution
# The C sources in airi/_ext/src (direct_conv.h states the contract): computed straight
# from the padded input, float32, stride 1, F % 16 == 0; the planner decides when.
cdef extern from "direct_conv.h" nogil:
    int airi_direct_conv_level()
    int airi_direct_conv_force_level(int level)
    void airi_direct_conv_f32(const float* xp, const float* wt, const float* bias,
                              float* out, Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp,
                              Py_ssize_t F, Py_ssize_t kh, Py_ssize_t kw)
    int airi_direct_conv_dw_f32(const float* xp, const float* dT, float* dwt,
                                Py_ssize_t n, Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp,
                                Py_ssize_t F, Py_ssize_t kh, Py_ssize_t kw)


def direct_conv_level():
    """Instruction set of the direct convolution on this CPU: 2 = AVX-512, 1 = AVX2+FMA,
    0 = baseline, -1 = not compiled in (no vector extensions in this compiler)."""
    return airi_direct_conv_level()


def _force_direct_conv_level(int level):
    """Tests only: use instruction-set version ``level`` (0, 1, 2; at most what the CPU
    has; a higher value restores the best one). Returns the previous level."""
    return airi_direct_conv_force_level(level)


def direct_conv_into(const float[:, :, :, ::1] x, const float[:, :, :, ::1] wt, bias,
                     float[:, :, :, ::1] out, Py_ssize_t ph, Py_ssize_t pw,
                     float[::1] scratch):
    """out[n] = conv(x[n], W) + bias, stride 1: x (n, C, H, W), wt = W.transpose(1, 2, 3,
    0) (C, kh, kw, F) C-contiguous with F % 16 == 0, bias (F,) float32 or None, out (n,
    F, Ho, Wo) with Ho = H + 2*ph - kh + 1; ``scratch`` holds C*(H+2ph)*(W+2pw) floats
    (one padded sample) and is used only when ph or pw > 0."""
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t kh = wt.shape[1], kw = wt.shape[2], F = wt.shape[3]
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw, s, c, r
    cdef const float[::1] b
    cdef const float* bp = NULL
    cdef const float* src
    cdef float* pad_buf = NULL
    if airi_direct_conv_level() < 0:
        raise RuntimeError("direct_conv_into: not compiled in")
    if wt.shape[0] != C or F % 16 != 0 or ph < 0 or pw < 0 or kh > Hp or kw > Wp or \
            (out.shape[0], out.shape[1], out.shape[2], out.shape[3]) != \
            (n, F, Hp - kh + 1, Wp - kw + 1):
        raise ValueError(f"direct_conv_into: shapes x {tuple(x.shape)[:4]}, wt "
                         f"{tuple(wt.shape)[:4]}, out {tuple(out.shape)[:4]}, pad "
                         f"{(ph, pw)} do not fit (F % 16 == 0, stride 1)")
    if bias is not None:
        b = bias
        if b.shape[0] != F:
            raise ValueError(f"direct_conv_into: bias has {b.shape[0]} values, F = {F}")
        bp = &b[0]
    if ph or pw:
        if scratch.shape[0] < C * Hp * Wp:
            raise ValueError("direct_conv_into: scratch too small")
        pad_buf = &scratch[0]
    if n == 0:
        return
    with nogil:
        for s in range(n):
            src = &x[s, 0, 0, 0]
            if pad_buf != NULL:
                memset(pad_buf, 0, C * Hp * Wp * sizeof(float))
                for c in range(C):
                    for r in range(H):
                        memcpy(pad_buf + (c * Hp + r + ph) * Wp + pw,
                               src + (c * H + r) * W, W * sizeof(float))
                src = pad_buf
            airi_direct_conv_f32(src, &wt[0, 0, 0, 0], bp, &out[s, 0, 0, 0],
                                 C, Hp, Wp, F, kh, kw)


def direct_conv_dw_into(const float[:, :, :, ::1] xp, const float[:, :, :, ::1] dT,
                        float[:, :, :, ::1] dwt):
    """dwt += dW.transpose(1, 2, 3, 0) of a chunk: xp (n, C, Hp, Wp) the zero-padded
    input, dT (n, Ho, Wo, F) = dout.transpose(0, 2, 3, 1), dwt (C, kh, kw, F), stride 1,
    F % 16 == 0, kw in (3, 5, 7)."""
    cdef Py_ssize_t n = xp.shape[0], C = xp.shape[1], Hp = xp.shape[2], Wp = xp.shape[3]
    cdef Py_ssize_t kh = dwt.shape[1], kw = dwt.shape[2], F = dwt.shape[3]
    cdef int done
    if airi_direct_conv_level() < 0:
        raise RuntimeError("direct_conv_dw_into: not compiled in")
    if dwt.shape[0] != C or F % 16 != 0 or kh > Hp or kw > Wp or \
            (dT.shape[0], dT.shape[1], dT.shape[2], dT.shape[3]) != \
            (n, Hp - kh + 1, Wp - kw + 1, F):
        raise ValueError(f"direct_conv_dw_into: shapes xp {tuple(xp.shape)[:4]}, dT "
                         f"{tuple(dT.shape)[:4]}, dwt {tuple(dwt.shape)[:4]} do not fit")
    if n == 0:
        return
    with nogil:
        done = airi_direct_conv_dw_f32(&xp[0, 0, 0, 0], &dT[0, 0, 0, 0], &dwt[0, 0, 0, 0],
                                       n, C, Hp, Wp, F, kh, kw)
    if not done:
        raise ValueError(f"direct_conv_dw_into: kernel width {kw} not in (3, 5, 7)")
