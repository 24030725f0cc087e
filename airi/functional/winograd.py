"""Winograd F(2x2, 3x3): the filter transform and the tile grid (the input and output
transforms are kernels: airi/_ext/_wino.pyx and their NumPy twins).

A 3x3 convolution computed on 2x2 output tiles needs 16 multiplications per tile and
channel pair instead of 36 (Lavin & Gray, 2016): ``Y = A^T [(G g G^T) * (B^T d B)] A``
per tile, which summed over the input channels becomes 16 GEMMs
``M[xi] = U[xi] (F, C) @ V[xi] (C, tiles)`` (see :func:`airi.functional.conv2d_forward`).
"""
import numpy as np

__all__ = ["winograd_filters", "winograd_tiles"]

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def winograd_tiles(Ho, Wo):
    """(th, tw): the 2x2 output tiles per column and row of an Ho x Wo output."""
    return (Ho + 1) // 2, (Wo + 1) // 2


def winograd_filters(w):
    """The transformed filters U = G g G^T.

    Parameters
    ----------
    w : ndarray (F, C, 3, 3)

    Returns
    -------
    U : ndarray (16, F, C)
        Element (i, j) of each 4x4 transform at index ``4*i + j``, in w's dtype (G's
        entries are exact in binary). Computed as two plain 2-D GEMMs: an einsum, or a
        matmul batched over the F*C little matrices, was several times slower.
    """
    F, C = w.shape[:2]
    G = _G.astype(w.dtype)
    rows = G @ np.moveaxis(w, 2, 0).reshape(3, -1)           # (4, F*C*3): G g
    U = rows.reshape(4 * F * C, 3) @ G.T                     # (4*F*C, 4): (G g) G^T
    return np.ascontiguousarray(U.reshape(4, F, C, 4).transpose(0, 3, 1, 2)
                                .reshape(16, F, C))
