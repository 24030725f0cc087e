"""Winograd F(2x2, 3x3) transforms for 3x3, stride-1 convolutions (private: call them
through the kernel namespaces of :mod:`airi._backend`).

A 3x3 convolution computed on 2x2 output tiles needs 16 multiplications per tile and
channel pair instead of 36 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016). Per tile: ``Y = A^T [(G g G^T) * (B^T d B)] A`` with d the 4x4 input
patch, g the 3x3 filter and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

Summed over the input channels, the element-wise product becomes 16 GEMMs
``M[xi] = U[xi] (F, C) @ V[xi] (C, tiles)``, which BLAS runs (airi.functional.conv). This
module holds the two memory-bound halves around them::

    winograd_input_into(x (n, C, H, W), V (16, C, n*th*tw), ph, pw)
        V[4*i + j, c, s*th*tw + ty*tw + tx] = (B^T d B)[i, j] of the patch of the
        zero-padded x[s, c] whose top-left corner is (2*ty - ph, 2*tx - pw)
    winograd_output_into(M (16, F, n*th*tw), out (n, F, Ho, Wo), bias (F,) or None)
        out[s, f, 2*ty + a, 2*tx + b] = (A^T m A)[a, b] + bias[f], cut to Ho x Wo

with th = ceil(Ho / 2), tw = ceil(Wo / 2), Ho = H + 2*ph - 2, Wo = W + 2*pw - 2.
"""
from cython cimport floating

import numpy as np

# Bumped whenever a signature or a result convention changes (see airi._backend).
API_VERSION = 5


cdef inline floating _at(const floating* plane, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t r, Py_ssize_t c) noexcept nogil:
    """plane[r, c], zero outside the H x W plane (the padding)."""
    if r < 0 or r >= H or c < 0 or c >= W:
        return 0
    return plane[r * W + c]


cdef void _input_plane(const floating* plane, floating* V, Py_ssize_t xi_step,
                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t th, Py_ssize_t tw) noexcept nogil:
    """The th*tw tiles of one channel plane: V[xi * xi_step + t] for xi in 0..15."""
    cdef floating d[4][4]
    cdef floating t[4][4]
    cdef Py_ssize_t ty, tx, i, j, r0, c0, tile
    cdef bint inside
    for ty in range(th):
        r0 = 2 * ty - ph
        for tx in range(tw):
            c0 = 2 * tx - pw
            inside = r0 >= 0 and c0 >= 0 and r0 + 4 <= H and c0 + 4 <= W
            for i in range(4):
                for j in range(4):
                    if inside:
                        d[i][j] = plane[(r0 + i) * W + c0 + j]
                    else:
                        d[i][j] = _at(plane, H, W, r0 + i, c0 + j)
            for j in range(4):          # t = B^T d
                t[0][j] = d[0][j] - d[2][j]
                t[1][j] = d[1][j] + d[2][j]
                t[2][j] = d[2][j] - d[1][j]
                t[3][j] = d[1][j] - d[3][j]
            tile = ty * tw + tx
            for i in range(4):          # V = t B
                V[(4 * i + 0) * xi_step + tile] = t[i][0] - t[i][2]
                V[(4 * i + 1) * xi_step + tile] = t[i][1] + t[i][2]
                V[(4 * i + 2) * xi_step + tile] = t[i][2] - t[i][1]
                V[(4 * i + 3) * xi_step + tile] = t[i][1] - t[i][3]


cdef void _output_plane(const floating* M, Py_ssize_t xi_step, floating* plane,
                        Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                        floating bias) noexcept nogil:
    """One output plane from its th*tw tiles M[xi * xi_step + t]."""
    cdef floating m[4][4]
    cdef floating r[2][4]
    cdef floating y[2][2]
    cdef Py_ssize_t ty, tx, i, j, a, b, tile, row, col
    for ty in range(th):
        for tx in range(tw):
            tile = ty * tw + tx
            for i in range(4):
                for j in range(4):
                    m[i][j] = M[(4 * i + j) * xi_step + tile]
            for j in range(4):          # r = A^T m
                r[0][j] = m[0][j] + m[1][j] + m[2][j]
                r[1][j] = m[1][j] - m[2][j] - m[3][j]
            for a in range(2):          # y = r A
                y[a][0] = r[a][0] + r[a][1] + r[a][2] + bias
                y[a][1] = r[a][1] - r[a][2] - r[a][3] + bias
            for a in range(2):
                row = 2 * ty + a
                if row < Ho:
                    for b in range(2):
                        col = 2 * tx + b
                        if col < Wo:
                            plane[row * Wo + col] = y[a][b]


def _check_tile_layout(name, row_stride, col_stride, rows, cols, itemsize):
    """Each of the 16 matrices must be C-contiguous; the stride between them is free
    (strides along an axis of length 1 do not matter)."""
    if (cols > 1 and col_stride != itemsize) or (rows > 1 and row_stride != cols * itemsize):
        raise ValueError(f"{name}: each of the 16 matrices must be C-contiguous "
                         f"(strides {(row_stride, col_stride)}, {cols} columns)")


def tiles(Py_ssize_t Ho, Py_ssize_t Wo):
    """(th, tw): 2x2 output tiles per column and row."""
    return (Ho + 1) // 2, (Wo + 1) // 2


def winograd_input_into(const floating[:, :, :, ::1] x, floating[:, :, :] V,
                        Py_ssize_t ph, Py_ssize_t pw):
    """Transformed input tiles of x (n, C, H, W) into V (16, C, n*th*tw) (see module)."""
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho = H + 2 * ph - 2, Wo = W + 2 * pw - 2, th, tw, T, s, c
    if Ho < 1 or Wo < 1 or ph < 0 or pw < 0:
        raise ValueError(f"winograd_input_into: a 3x3 window does not fit {H}x{W} "
                         f"with padding {(ph, pw)}")
    th, tw = tiles(Ho, Wo)
    T = th * tw
    if (V.shape[0], V.shape[1], V.shape[2]) != (16, C, n * T):
        raise ValueError(f"winograd_input_into: V has shape {tuple(V.shape)[:3]}, "
                         f"expected {(16, C, n * T)}")
    _check_tile_layout("winograd_input_into: V", V.strides[1], V.strides[2], V.shape[1],
                       V.shape[2], sizeof(floating))
    if n == 0 or C == 0:
        return
    # the distance between the 16 tile elements: V's own stride, which the caller pads
    # away from a power of two (16 store streams 2^k floats apart thrash the L1 sets)
    cdef Py_ssize_t xi_step = V.strides[0] // sizeof(floating)
    with nogil:
        for s in range(n):
            for c in range(C):
                _input_plane(&x[s, c, 0, 0], &V[0, c, s * T], xi_step, H, W, ph, pw,
                             th, tw)


def winograd_output_into(const floating[:, :, :] M, floating[:, :, :, ::1] out, bias):
    """out (n, F, Ho, Wo) from the GEMM products M (16, F, n*th*tw), plus bias (F,) or
    None (see module)."""
    cdef Py_ssize_t n = out.shape[0], F = out.shape[1], Ho = out.shape[2]
    cdef Py_ssize_t Wo = out.shape[3], th, tw, T, s, f
    cdef const floating[::1] b
    cdef bint has_bias = bias is not None
    th, tw = tiles(Ho, Wo)
    T = th * tw
    if (M.shape[0], M.shape[1], M.shape[2]) != (16, F, n * T):
        raise ValueError(f"winograd_output_into: M has shape {tuple(M.shape)[:3]}, "
                         f"expected {(16, F, n * T)}")
    if has_bias:
        b = bias
        if b.shape[0] != F:
            raise ValueError(f"winograd_output_into: bias has {b.shape[0]} values, "
                             f"F = {F}")
    _check_tile_layout("winograd_output_into: M", M.strides[1], M.strides[2], M.shape[1],
                       M.shape[2], sizeof(floating))
    if n == 0 or F == 0:
        return
    cdef Py_ssize_t xi_step = M.strides[0] // sizeof(floating)
    with nogil:
        for s in range(n):
            for f in range(F):
                _output_plane(&M[0, f, s * T], xi_step, &out[s, f, 0, 0], Ho, Wo, th,
                              tw, b[f] if has_bias else 0)
