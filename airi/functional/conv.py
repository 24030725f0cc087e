"""2-D convolution (cross-correlation, as in PyTorch) on NCHW arrays, stateless.

The textbook algorithm, im2col + one matrix product::

    cols = im2col(x)                 (N, C*kh*kw, Ho*Wo)   every window as a column
    out  = W2 @ cols + b             (N, F, Ho*Wo)         W2 = W.reshape(F, C*kh*kw)
backward:
    dW   = sum_n dout[n] @ cols[n].T (F, C*kh*kw)
    db   = dout.sum((0, 2, 3))       (F,)
    dx   = col2im(W2.T @ dout)       (N, C, H, W)          col2im adds overlapping windows

:func:`conv2d_forward` and :func:`conv2d_backward` compute exactly this, faster: the
batch is cut into chunks of a few samples whose columns fit a core's L2 cache, each
chunk one GEMM ``(F, K) @ (K, n*P)`` written into reused scratch buffers, the chunks run
on airi's threads (:mod:`airi._parallel`). :mod:`airi._planner` may pick another
algorithm for a pass, with the same result to rounding:

* ``"pointwise"`` (1x1, stride 1, no padding): the input is its own columns;
* ``"direct"``: the compiled direct convolution (airi/_ext/src), computed from the
  padded input with a block of output pixels x 16 filters in vector registers::

      forward  out[n] = conv(x[n], W) + b                 W as (C, kh, kw, F)
      dx       dx[n]  = conv(pad(dout[n], k-1-p), flip(W)) W flipped as (F, kh, kw, C)
      dW       dW^T  += correlation of pad(x[n]) with dout[n]   -> (C, kh, kw, F)

* ``"winograd"`` (opt-in): F(2x2, 3x3) tiles, 16 GEMMs per chunk (:mod:`.winograd`).

:func:`conv2d_plan` says which algorithm each pass will use.
"""
import numpy as np

from .. import _backend, _parallel, _planner
from ._checks import conv_output_shape, float_array, pair, x_shape_of
from .winograd import winograd_filters, winograd_tiles

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_plan", "im2col", "col2im",
           "conv_output_shape"]


# ------------------------------------------------------------ im2col / col2im
def im2col(x, kernel, stride=1, pad=0):
    """Unfold every window of ``x`` into a column.

    Parameters
    ----------
    x : ndarray (N, C, H, W), float32 or float64
    kernel, stride, pad : int or (int, int)

    Returns
    -------
    cols : ndarray (N, C*kh*kw, Ho*Wo)
        ``cols[n, (c*kh + i)*kw + j, oh*Wo + ow] = xpad[n, c, oh*sh + i, ow*sw + j]``,
        with ``Ho = (H + 2*ph - kh) // sh + 1`` (``Wo`` likewise) and ``xpad`` the
        zero-padded input.
    """
    x = float_array(x, "im2col input", 4)
    kernel, stride, pad = pair(kernel, "kernel"), pair(stride, "stride"), pair(pad, "pad")
    N, C, H, W = x.shape
    Ho, Wo = conv_output_shape(H, W, kernel, stride, pad)
    cols = np.empty((N, C * kernel[0] * kernel[1], Ho * Wo), dtype=x.dtype)
    kernels = _backend.kernels()
    _parallel.run(lambda worker, a, b: kernels.im2col_into(x[a:b], cols[a:b], kernel,
                                                           stride, pad),
                  N, _planner.elementwise_chunk(N, cols.size))
    return cols


def col2im(cols, x_shape, kernel, stride=1, pad=0):
    """Fold columns back onto the image, adding the overlaps (the adjoint of im2col).

    Parameters
    ----------
    cols : ndarray (N, C*kh*kw, Ho*Wo), float32 or float64
    x_shape : (N, C, H, W)
    kernel, stride, pad : int or (int, int)

    Returns
    -------
    dx : ndarray (N, C, H, W)
        Contributions that fall on the padding are dropped.
    """
    cols = float_array(cols, "col2im input", 3)
    x_shape = x_shape_of(x_shape)
    kernel, stride, pad = pair(kernel, "kernel"), pair(stride, "stride"), pair(pad, "pad")
    N, C, H, W = x_shape
    Ho, Wo = conv_output_shape(H, W, kernel, stride, pad)
    expected = (N, C * kernel[0] * kernel[1], Ho * Wo)
    if cols.shape != expected:
        raise ValueError(f"col2im: cols must have shape {expected} for x_shape {x_shape}, "
                         f"got {cols.shape}")
    dx = np.empty(x_shape, dtype=cols.dtype)
    kernels = _backend.kernels()
    _parallel.run(lambda worker, a, b: kernels.col2im_into(cols[a:b], dx[a:b], kernel,
                                                           stride, pad),
                  N, _planner.elementwise_chunk(N, cols.size))
    return dx


# ----------------------------------------------------------------- the plan
def _checked(x, W, stride, pad, name):
    """Validated (x, W, stride, pad, (Ho, Wo)) of a convolution call."""
    x = float_array(x, f"{name}: x", 4)
    if not isinstance(W, np.ndarray) or W.ndim != 4 or W.dtype.kind != "f":
        raise ValueError(f"{name}: W must be a float array (F, C, kh, kw), got "
                         f"{getattr(W, 'shape', type(W).__name__)}")
    if W.shape[1] != x.shape[1]:
        raise ValueError(f"{name}: x has {x.shape[1]} channels but W {W.shape} expects "
                         f"{W.shape[1]}")
    stride, pad = pair(stride, f"{name}: stride"), pair(pad, f"{name}: pad")
    Ho, Wo = conv_output_shape(x.shape[2], x.shape[3], W.shape[2:], stride, pad)
    return x, W, stride, pad, (Ho, Wo)


def conv2d_plan(x, W, stride=1, pad=0, dout=None):
    """Which algorithm each pass of this convolution runs (see :mod:`airi._planner`).

    Parameters
    ----------
    x : ndarray (N, C, H, W)
    W : ndarray (F, C, kh, kw)
    stride, pad : int or (int, int)
    dout : ndarray (N, F, Ho, Wo), optional
        For the backward passes: its dtype joins the computation's.

    Returns
    -------
    ConvPlan
        ``(forward, dx, dw)``, each ``"gemm"``, ``"pointwise"``, ``"direct"`` or
        ``"winograd"``.
    """
    stride, pad = pair(stride, "stride"), pair(pad, "pad")
    dtypes = [x.dtype, W.dtype] + ([dout.dtype] if dout is not None else [])
    return _planner.conv_plan(np.result_type(*dtypes), x.shape[1], W.shape[0],
                              W.shape[2:], stride, pad, x.shape[2], x.shape[3])


# ------------------------------------------------------------------ forward
def conv2d_forward(x, W, b=None, stride=1, pad=0, *, return_cols=False):
    """Convolve (cross-correlate) a batch with a bank of filters.

    Parameters
    ----------
    x : ndarray (N, C, H, W), float32 or float64
    W : ndarray (F, C, kh, kw)
    b : ndarray (F,) or None
    stride, pad : int or (int, int)
        Zero padding is added on both sides of each spatial axis.
    return_cols : bool
        Also return the columns when the GEMM algorithm made them and they are small
        (the planner's rule), for :func:`conv2d_backward` to reuse; else None.

    Returns
    -------
    out : ndarray (N, F, Ho, Wo)
        ``Ho = (H + 2*ph - kh) // sh + 1``, ``Wo`` likewise; dtype of x promoted with W.
    cols : ndarray (C*kh*kw, N, Ho*Wo) or None
        Only with ``return_cols=True``.
    """
    x, W, stride, pad, (Ho, Wo) = _checked(x, W, stride, pad, "conv2d_forward")
    N, C, H, Wd = x.shape
    F = W.shape[0]
    out = np.empty((N, F, Ho, Wo), dtype=np.result_type(x.dtype, W.dtype))
    plan = _planner.conv_plan(out.dtype, C, F, W.shape[2:], stride, pad, H, Wd)
    cols = None
    if plan.forward == "direct":
        _direct_forward(x, W, b, pad, out)
    elif plan.forward == "winograd":
        _winograd_conv(x, winograd_filters(W), b, out, pad)
    elif plan.forward == "pointwise":
        _pointwise_forward(x, W, b, out)
    else:
        keep = return_cols and _planner.keep_columns(x.shape[0] * C * W.shape[2] *
                                                     W.shape[3] * Ho * Wo * x.itemsize)
        cols = _gemm_forward(x, W, b, stride, pad, out, keep)
    return (out, cols) if return_cols else out


def _columns(x, cols, kernel, stride, pad):
    """Write the columns of the chunk x (n, C, H, W) into ``cols`` (K, n, P) and return
    them as one matrix (K, n*P): column ``s*P + p`` holds sample s's window p."""
    K, n, P = cols.shape
    # im2col writes (n, K, P) through a transposed view: the same kernel, other strides
    _backend.kernels().im2col_into(x, cols.transpose(1, 0, 2), kernel, stride, pad)
    return cols.reshape(K, n * P)


def _gemm_forward(x, W, b, stride, pad, out, keep):
    """out = W2 @ cols + b chunk by chunk; returns the whole batch's columns (K, N, P)
    when ``keep``, else None."""
    N, F, Ho, Wo = out.shape
    W2 = W.reshape(F, -1)
    K, P = W2.shape[1], Ho * Wo
    out3 = out.reshape(N, F, P)
    bias = None if b is None else b[:, None]                  # (F, 1)
    kept = np.empty((K, N, P), dtype=x.dtype) if keep else None

    def chunk(worker, start, stop):
        n = stop - start
        cols = kept[:, start:stop] if kept is not None else \
            _parallel.workspace(worker, "cols", (K, n, P), x.dtype)
        colsT = _columns(x[start:stop], cols, W.shape[2:], stride, pad)
        # one GEMM for the chunk, (F, K) @ (K, n*P); then to NCHW with the bias
        prod = _parallel.workspace(worker, "prod", (F, n, P), out.dtype)
        np.matmul(W2, colsT, out=prod.reshape(F, n * P))
        if bias is not None:
            np.add(prod.transpose(1, 0, 2), bias, out=out3[start:stop])
        else:
            np.copyto(out3[start:stop], prod.transpose(1, 0, 2))

    _parallel.run(chunk, N, _planner.gemm_chunk(N, K * P * x.itemsize))
    return kept


def _pointwise_forward(x, W, b, out):
    """1x1 convolution: (F, C) @ (n, C, P) per chunk."""
    N, F = out.shape[:2]
    W2 = W.reshape(F, -1)
    K, P = W2.shape[1], out.shape[2] * out.shape[3]
    out3 = out.reshape(N, F, P)

    def chunk(worker, start, stop):
        np.matmul(W2, x[start:stop].reshape(-1, K, P), out=out3[start:stop])
        if b is not None:
            out3[start:stop] += b[:, None]

    _parallel.run(chunk, N, _planner.gemm_chunk(N, K * P * x.itemsize))


def _padded_size(C, H, W, pad):
    """Elements of one zero-padded sample (C, H+2ph, W+2pw)."""
    return C * (H + 2 * pad[0]) * (W + 2 * pad[1])


def _direct_forward(x, W, b, pad, out):
    """out = direct convolution of x with W (float32, stride 1) + b."""
    wt = np.ascontiguousarray(W.transpose(1, 2, 3, 0))        # (C, kh, kw, F)
    _direct_conv(x, wt, b, out, pad)


def _direct_conv(x, wt, bias, out, pad):
    """The direct kernel over the batch: x (N, C', H, W), wt (C', kh, kw, F')."""
    N, F = out.shape[:2]
    padded = _padded_size(*x.shape[1:], pad)
    kernels = _backend.kernels()

    def chunk(worker, start, stop):
        scratch = _parallel.workspace(worker, "pad", (padded,), x.dtype)
        kernels.direct_conv_into(x[start:stop], wt, bias, out[start:stop], pad, scratch)

    _parallel.run(chunk, N, _planner.direct_chunk(N, F * out.shape[2] * out.shape[3]))


def _tile_buffer(worker, slot, rows, cols, dtype):
    """A (16, rows, cols) Winograd scratch array whose 16 matrices lie 64 bytes more
    than rows*cols apart: with the sizes here that product is often a power of two,
    and 16 streams exactly 2^k bytes apart share one set of the L1 cache (the
    transforms ran 2-3x slower)."""
    step = rows * cols + 64 // np.dtype(dtype).itemsize
    buf = _parallel.workspace(worker, slot, (16, step), dtype)
    return buf[:, :rows * cols].reshape(16, rows, cols)


def _winograd_conv(x, U, bias, out, pad):
    """out (N, F', Ho, Wo) = 3x3 stride-1 convolution of x (N, C', H, W) whose filters
    are given transformed, U (16, F', C') (:func:`winograd_filters`), + bias."""
    N, Cin = x.shape[:2]
    Fout, Ho, Wo = out.shape[1:]
    th, tw = winograd_tiles(Ho, Wo)
    T = th * tw
    kernels = _backend.kernels()

    def chunk(worker, start, stop):
        n = stop - start
        V = _tile_buffer(worker, "wino_V", Cin, n * T, x.dtype)
        M = _tile_buffer(worker, "wino_M", Fout, n * T, out.dtype)
        kernels.winograd_input_into(x[start:stop], V, pad)
        np.matmul(U, V, out=M)          # 16 GEMMs (F', C') @ (C', n*T)
        kernels.winograd_output_into(M, out[start:stop], bias)

    _parallel.run(chunk, N, _planner.winograd_chunk(
        N, 16 * (Cin + Fout) * T * x.itemsize))


# ----------------------------------------------------------------- backward
def conv2d_backward(dout, x, W, stride=1, pad=0, *, cols=None, input_grad=True,
                    bias=True):
    """Gradients of :func:`conv2d_forward`.

    Parameters
    ----------
    dout : ndarray (N, F, Ho, Wo)
        dL/dout.
    x : ndarray (N, C, H, W)
        The forward's input.
    W : ndarray (F, C, kh, kw)
    stride, pad : int or (int, int)
        As in the forward pass.
    cols : ndarray (C*kh*kw, N, Ho*Wo), optional
        The columns :func:`conv2d_forward` returned (saves recomputing them).
    input_grad : bool
        Compute dx (False for a network's first layer, whose input is data).
    bias : bool
        Compute db.

    Returns
    -------
    dx : ndarray (N, C, H, W) or None
    dW : ndarray (F, C, kh, kw)
    db : ndarray (F,) or None
    """
    x, W, stride, pad, (Ho, Wo) = _checked(x, W, stride, pad, "conv2d_backward")
    dout = float_array(dout, "conv2d_backward: dout", 4)
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    if dout.shape != (N, F, Ho, Wo):
        raise ValueError(f"conv2d_backward: dout must have shape {(N, F, Ho, Wo)}, got "
                         f"{dout.shape}")
    K, P = C * kh * kw, Ho * Wo
    if cols is not None and (cols.shape != (K, N, P) or cols.dtype != x.dtype):
        raise ValueError(f"conv2d_backward: cols must be the ({K}, {N}, {P}) {x.dtype} "
                         f"columns conv2d_forward returned, got {cols.shape} {cols.dtype}")
    plan = _planner.conv_plan(np.result_type(x.dtype, W.dtype, dout.dtype), C, F,
                              (kh, kw), stride, pad, H, Wd)
    dout3 = dout.reshape(N, F, P)
    dx = np.empty(x.shape, dtype=np.result_type(W.dtype, dout.dtype)) \
        if input_grad else None
    dx_algorithm = plan.dx if input_grad else None
    dW = _backward_chunks(dout3, x, W, stride, pad, cols, dx, dx_algorithm, plan.dw)
    if dx_algorithm == "winograd":
        # dx = full correlation of dout with the flipped filters (C "filters" of F
        # channels), padding k-1-p, as Winograd tiles
        wflip = W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        _winograd_conv(dout, winograd_filters(wflip), None, dx, (kh - 1 - pad[0],
                                                                 kw - 1 - pad[1]))
    db = dout3.sum(axis=(0, 2)) if bias else None
    return dx, dW, db


def _backward_chunks(dout3, x, W, stride, pad, kept, dx, dx_algorithm, dw_algorithm):
    """dW (returned) and dx (written, unless its algorithm is Winograd or it is None),
    chunk by chunk. One weight-gradient slot per chunk, summed in chunk order at the
    end: the result does not depend on which thread ran which chunk."""
    N, F, P = dout3.shape
    C, H, Wd = x.shape[1:]
    kh, kw = W.shape[2:]
    (ph, pw), Ho, Wo = pad, H + 2 * pad[0] - kh + 1, Wd + 2 * pad[1] - kw + 1
    W2 = W.reshape(F, -1)
    K = W2.shape[1]
    dW_dtype = np.result_type(dout3.dtype, x.dtype)
    pointwise = dw_algorithm == "pointwise"
    direct_dw = dw_algorithm == "direct"
    needs_dout_rows = not direct_dw or dx_algorithm == "gemm"
    Hp, Wp = H + 2 * ph, Wd + 2 * pw
    itemsize = max(x.itemsize, dx.itemsize if dx is not None else 0)
    if direct_dw and dx_algorithm in ("direct", None):    # no columns: padded input
        chunk = _planner.gemm_chunk(N, (C * Hp * Wp + 2 * F * P) * x.itemsize)
    else:
        chunk = _planner.gemm_chunk(N, K * P * itemsize)
    n_chunks = -(-N // chunk)
    if direct_dw:   # dW^T (C, kh, kw, F), accumulated by the direct kernel
        parts = np.zeros((n_chunks, C, kh, kw, F), dtype=dW_dtype)
    else:           # dW^T (K, F)
        parts = np.empty((n_chunks, K, F), dtype=dW_dtype)
    if dx_algorithm == "direct":
        # dx = full correlation of dout with the flipped filters: a direct convolution
        # with C "filters", padding k-1-p
        wflip = np.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(0, 2, 3, 1))
        dx_pad = (kh - 1 - ph, kw - 1 - pw)
        dx_scratch = _padded_size(F, Ho, Wo, dx_pad)
    kernels = _backend.kernels()

    def weight_grad_direct(worker, start, stop, part):
        n = stop - start
        if ph or pw:
            xp = _parallel.workspace(worker, "xpad", (n, C, Hp, Wp), x.dtype)
            xp[...] = 0
            xp[:, :, ph:ph + H, pw:pw + Wd] = x[start:stop]
        else:
            xp = x[start:stop]
        dT = _parallel.workspace(worker, "doutT", (n, Ho, Wo, F), dout3.dtype)
        np.copyto(dT, dout3[start:stop].reshape(n, F, Ho, Wo).transpose(0, 2, 3, 1))
        kernels.direct_conv_dw_into(xp, dT, part)

    def chunk_grads(worker, start, stop):
        n = stop - start
        d = dout3[start:stop]                                # (n, F, P)
        part = parts[start // chunk]
        if pointwise:
            per_sample = _parallel.workspace(worker, "dWT", (n, K, F), dW_dtype)
            np.matmul(x[start:stop].reshape(n, K, P), d.transpose(0, 2, 1),
                      out=per_sample)                        # (n, K, F)
            per_sample.sum(axis=0, out=part)
            if dx is not None:   # dx is the columns' shape: write it directly
                np.matmul(W2.T, d, out=dx[start:stop].reshape(n, K, P))
            return
        if direct_dw:
            weight_grad_direct(worker, start, stop, part)
        if needs_dout_rows:
            # dout of the chunk as one matrix (F, n*P), the columns' order
            rows = _parallel.workspace(worker, "dout_rows", (F, n, P), dout3.dtype)
            np.copyto(rows, d.transpose(1, 0, 2))
            rows = rows.reshape(F, n * P)
        if not direct_dw:
            # one GEMM with a long inner dimension (n*P) instead of n short ones
            if kept is not None:
                colsT = kept[:, start:stop].reshape(K, n * P)
            else:
                colsT = _columns(x[start:stop], _parallel.workspace(
                    worker, "cols", (K, n, P), x.dtype), (kh, kw), stride, pad)
            np.matmul(colsT, rows.T, out=part)               # (K, F)
        if dx_algorithm == "direct":
            scratch = _parallel.workspace(worker, "pad", (dx_scratch,), dx.dtype)
            kernels.direct_conv_into(d.reshape(n, F, Ho, Wo), wflip, None,
                                     dx[start:stop], dx_pad, scratch)
        elif dx_algorithm == "gemm":
            # dcolsT (K, n*P) goes to the scratch buffer (the columns are used up; kept
            # columns stay intact, so backward may run again)
            dcols = _parallel.workspace(worker, "cols", (K, n, P), dx.dtype)
            np.matmul(W2.T, rows, out=dcols.reshape(K, n * P))
            kernels.col2im_into(dcols.transpose(1, 0, 2), dx[start:stop], (kh, kw),
                                stride, pad)

    _parallel.run(chunk_grads, N, chunk)
    if direct_dw:
        return np.ascontiguousarray(parts.sum(axis=0).transpose(3, 0, 1, 2))
    return parts.sum(axis=0).T.reshape(W.shape)
