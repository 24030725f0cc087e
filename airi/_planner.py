"""Which algorithm runs each pass, and how the batch is cut: every rule in one place.

:mod:`airi.functional` asks; nothing else decides. Each rule is one line; the
measurements behind it are in benchmarks/README.md ("Planner rules"), not here.

Convolution passes (forward, dx, dW) each run one of:

* ``"gemm"``: im2col -> one GEMM per chunk -> bias (col2im for dx), any shape;
* ``"pointwise"``: 1x1, stride 1, no padding: the input is its own columns;
* ``"direct"``: the compiled direct convolution (airi/_ext/src), float32, stride 1,
  F % 16 == 0, an AVX2 or AVX-512 CPU; forward, dx and dW;
* ``"winograd"``: F(2x2, 3x3) tiles and 16 GEMMs (airi/_ext/_wino.pyx), opt-in;
  forward and dx.

``AIRI_DIRECT_CONV=0`` (or :func:`set_direct_conv`) forbids the direct kernels,
``AIRI_WINOGRAD=1`` (or :func:`set_winograd`) allows Winograd.
"""
import os
from collections import namedtuple

import numpy as np

from . import _backend, _parallel

__all__ = ["ConvPlan", "conv_plan", "direct_passes", "winograd_passes",
           "set_direct_conv", "set_winograd", "gemm_chunk", "direct_chunk",
           "winograd_chunk", "keep_columns", "elementwise_chunk", "matmul_parts"]

ConvPlan = namedtuple("ConvPlan", ["forward", "dx", "dw"])
ConvPlan.__doc__ = """The algorithm of each pass of one convolution: ``"gemm"``,
``"pointwise"``, ``"direct"`` or ``"winograd"`` (``dw`` is never ``"winograd"``)."""

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_direct_enabled = os.environ.get("AIRI_DIRECT_CONV", "1").strip() != "0"
_winograd_enabled = os.environ.get("AIRI_WINOGRAD", "0").strip() == "1"


def set_direct_conv(enabled):
    """Allow (True, the default) or forbid the direct convolution kernels; returns the
    previous setting. ``AIRI_DIRECT_CONV=0`` forbids them from the start."""
    global _direct_enabled
    previous, _direct_enabled = _direct_enabled, bool(enabled)
    return previous


def set_winograd(enabled):
    """Allow (True) or forbid (False, the default) Winograd F(2x2, 3x3); returns the
    previous setting. ``AIRI_WINOGRAD=1`` allows it from the start."""
    global _winograd_enabled
    previous, _winograd_enabled = _winograd_enabled, bool(enabled)
    return previous


# ------------------------------------------------------------- convolution rules
def conv_plan(dtype, C, F, kernel, stride, pad, H, W):
    """The :class:`ConvPlan` of a convolution of an (N, C, H, W) input with F filters of
    ``kernel`` (pairs of ints for kernel, stride, pad) computed in ``dtype``."""
    if tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and tuple(pad) == (0, 0):
        return ConvPlan("pointwise", "pointwise", "pointwise")
    direct = direct_passes(dtype, C, F, kernel, stride, pad, H, W)
    wino = winograd_passes(dtype, C, F, kernel, stride, pad)
    return ConvPlan("direct" if direct[0] else "winograd" if wino[0] else "gemm",
                    "direct" if direct[1] else "winograd" if wino[1] else "gemm",
                    "direct" if direct[2] else "gemm")


def direct_passes(dtype, C, F, kernel, stride, pad, H, W):
    """(forward, dx, dW): which passes the direct convolution may run."""
    level = _backend.kernels().direct_conv_level()
    if not _direct_enabled or level < 1 or np.dtype(dtype) != np.float32 \
            or tuple(stride) != (1, 1) or F % 16 != 0 or F > 128:
        return False, False, False
    (kh, kw), (ph, pw) = kernel, pad
    out_pixels = (H + 2 * ph - kh + 1) * (W + 2 * pw - kw + 1)
    dx_fits = C % 16 == 0 and ph <= kh - 1 and pw <= kw - 1    # what the kernel takes
    dw_fits = kw in (3, 5, 7)
    forward = F <= 64
    if level >= 2:  # AVX-512
        dx = dx_fits and min(H, W) >= 16 and (kh - 1) * 4 <= H and (kw - 1) * 4 <= W
        dw = dw_fits and C >= 16
    else:           # AVX2
        dx = dx_fits and (F == 16 or (kh, kw) == (3, 3) and F <= 32 and min(H, W) >= 16)
        dw = dw_fits and (F == 16 or F == 32 and C >= 16 and (kw >= 5 or out_pixels <= 256))
    return forward, dx, dw


def winograd_passes(dtype, C, F, kernel, stride, pad):
    """(forward, dx): which passes Winograd F(2x2, 3x3) may run (the direct kernels
    take precedence); at least 16 channels on the side the GEMMs sum over."""
    if not _winograd_enabled or _backend.backend() != "cython" \
            or tuple(kernel) != (3, 3) or tuple(stride) != (1, 1) or max(pad) > 2 \
            or np.dtype(dtype) not in _FLOATS:
        return False, False
    return C >= 16, F >= 16


# ------------------------------------------------------------------ batch chunks
# Bytes of im2col columns per chunk: compiled, about a core's L2 cache (the columns stay
# there from im2col to the GEMM); NumPy, larger (its im2col loops in Python).
_COLUMNS_BUDGET = {"cython": 2 << 20, "numpy": 8 << 20}
# The GEMM path cuts a batch into a multiple of this many chunks.
_CHUNKS_MULTIPLE = 4
# Columns of a whole batch up to this size are kept from forward to backward.
_KEEP_COLUMNS_BYTES = 4 << 20
# Element-wise and memory-bound passes are split over threads from this many elements.
_PARALLEL_MIN_ELEMENTS = 1 << 18
# A GEMM is split over threads from this many multiply-adds per thread.
_PARALLEL_MIN_MACS = 1 << 20


def gemm_chunk(N, bytes_per_sample):
    """Samples per chunk of the GEMM path (columns, or padded input + dout): at most
    the backend's columns budget, and a multiple of 4 chunks, so 1, 2 or 4 threads get
    equal shares. Independent of the thread count, so that per-chunk sums (weight
    gradients) add up in the same order on any number of threads."""
    needed = -(-N * bytes_per_sample // _COLUMNS_BUDGET[_backend.backend()])
    n_chunks = -(-max(1, needed) // _CHUNKS_MULTIPLE) * _CHUNKS_MULTIPLE
    return max(1, -(-N // n_chunks))


def direct_chunk(N, out_per_sample):
    """Samples per chunk of the direct forward kernels (no sums across chunks): four
    chunks per thread, so the threads balance, each at least ~64 kB of output."""
    per_thread = max(1, -(-N // (4 * _parallel.workers_available())))
    return max(per_thread, min(N, (16 << 10) // max(1, out_per_sample)))


def winograd_chunk(N, bytes_per_sample):
    """Samples per Winograd chunk: ~4 MB of tiles, at least two chunks per thread."""
    return max(1, min(-(-N // (2 * _parallel.workers_available())),
                      (4 << 20) // max(1, bytes_per_sample)))


def keep_columns(nbytes):
    """Keep the forward's columns (``nbytes`` for the batch) for the backward pass?"""
    return nbytes <= _KEEP_COLUMNS_BYTES


def elementwise_chunk(n_items, elements):
    """Items per chunk of a memory-bound pass touching ``elements`` in all: one chunk
    per thread when it is big enough to pay for the hand-off, else one chunk."""
    parts = _parallel.workers_available() if elements >= _PARALLEL_MIN_ELEMENTS else 1
    return max(1, -(-n_items // parts))


def matmul_parts(M, K, N):
    """Blocks to cut an (M, K) @ (K, N) product into (one per thread when large)."""
    workers = _parallel.workers_available()
    return workers if M * K * N >= _PARALLEL_MIN_MACS * workers else 1
