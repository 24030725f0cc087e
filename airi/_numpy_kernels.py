"""The NumPy twins of the compiled kernels in ``airi/_ext``.

A real product path, not a test oracle: each function is vectorised over samples,
channels and pixels and loops over the (few) kernel offsets at most. The arguments are
already validated by :mod:`airi.functional`; :class:`airi._backend.NumpyKernels` puts
them behind the same signatures as the compiled kernels (documented there).

They give the same numbers as the compiled kernels: im2col, max-pooling (values and
argmax taps, ties and NaN included) and average-pooling forward are bit-identical; col2im
and the pooling backward passes add overlapping contributions in another order, so
they agree to rounding.

Speed notes (why the code looks the way it does):

* padding is never materialised: each kernel offset copies (or adds) only the
  rectangle of windows that falls inside the image, and the padding stays zero;
* max-pooling compares kh*kw strided slices (one per window offset) instead of copying
  every window and calling ``argmax`` on a tiny last axis, which is ~10x slower;
* a window offset ``(i, j)`` reads ``x[..., i::sh, j::sw]`` cut to Ho x Wo rows/cols.
"""
import numpy as np


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _inside(offset, stride, size, n_out):
    """Output indices o (a range ``lo:hi``) whose input position ``o*stride + offset``
    lies inside ``[0, size)``; ``offset`` is a kernel index minus the padding."""
    lo = 0 if offset >= 0 else -(offset // stride)  # ceil(-offset / stride)
    last = size - 1 - offset
    hi = 0 if last < 0 else min(n_out, last // stride + 1)
    return lo, max(lo, hi)


def _taps(x_hw, kernel, stride, pad, out_hw):
    """For each kernel offset (i, j) with some window inside the image, yield
    ``(i, j, out_slices, in_slices)``: the (rows, cols) slices of the output grid whose
    windows put tap (i, j) on the image, and the matching strided input slices."""
    (H, W), (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = x_hw, kernel, stride, pad, out_hw
    for i in range(kh):
        r_lo, r_hi = _inside(i - ph, sh, H, Ho)
        if r_hi == r_lo:
            continue
        r0 = r_lo * sh + i - ph
        rows_in = slice(r0, r0 + (r_hi - r_lo - 1) * sh + 1, sh)
        for j in range(kw):
            c_lo, c_hi = _inside(j - pw, sw, W, Wo)
            if c_hi == c_lo:
                continue
            c0 = c_lo * sw + j - pw
            cols_in = slice(c0, c0 + (c_hi - c_lo - 1) * sw + 1, sw)
            yield i, j, (slice(r_lo, r_hi), slice(c_lo, c_hi)), (rows_in, cols_in)


def _grid(x, kernel_offset, stride, out_hw):
    """The strided (N, C, Ho, Wo) slice of x read by window tap (i, j) (no padding)."""
    (i, j), (sh, sw), (Ho, Wo) = kernel_offset, stride, out_hw
    return x[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]


# ------------------------------------------------------------------ convolution
def im2col(x, kernel, stride, pad):
    """(N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo); row index is (c, i, j), C order."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    Ho, Wo = _out_size(H, kh, sh, ph), _out_size(W, kw, sw, pw)
    padded = ph > 0 or pw > 0
    # np.zeros costs nothing extra for big arrays (calloc): the padding stays zero.
    cols = (np.zeros if padded else np.empty)((N, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for i, j, (ro, co), (ri, ci) in _taps((H, W), kernel, stride, pad, (Ho, Wo)):
        cols[:, :, i, j, ro, co] = x[:, :, ri, ci]
    return cols.reshape(N, C * kh * kw, Ho * Wo)


def col2im(cols, x_shape, kernel, stride, pad):
    """Adjoint of :func:`im2col`: cols (N, C*kh*kw, Ho*Wo) -> (N, C, H, W), summing
    the contributions of overlapping windows (those on the padding are dropped)."""
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    Ho, Wo = _out_size(H, kh, sh, ph), _out_size(W, kw, sw, pw)
    cols = cols.reshape(N, C, kh, kw, Ho, Wo)
    dx = np.zeros((N, C, H, W), dtype=cols.dtype)
    disjoint = sh >= kh and sw >= kw  # each pixel is in one window at most: assign
    for i, j, (ro, co), (ri, ci) in _taps((H, W), kernel, stride, pad, (Ho, Wo)):
        if disjoint:
            dx[:, :, ri, ci] = cols[:, :, i, j, ro, co]
        else:
            dx[:, :, ri, ci] += cols[:, :, i, j, ro, co]
    return dx


# ---------------------------------------------------------------------- pooling
def _pool_hw(x_hw, kernel, stride):
    (H, W), (kh, kw), (sh, sw) = x_hw, kernel, stride
    return _out_size(H, kh, sh, 0), _out_size(W, kw, sw, 0)


def _window_origins(W, stride, out_hw):
    """(Ho, Wo) flat index ``row * W + col`` of each window's top-left pixel."""
    (sh, sw), (Ho, Wo) = stride, out_hw
    return (np.arange(Ho) * (sh * W))[:, None] + (np.arange(Wo) * sw)[None, :]


# Windows of up to this many elements store their taps as np.uint8 (taps 0..255).
MAX_UINT8_WINDOW = 256


def maxpool_tap_dtype(kernel):
    """The dtype of max-pool taps for a (kh, kw) window, on both backends: np.uint8
    when the window has at most 256 elements, else np.intp."""
    kh, kw = kernel
    return np.dtype(np.uint8) if kh * kw <= MAX_UINT8_WINDOW else np.dtype(np.intp)


def _first_max(x, kernel, stride, out_hw, nan_aware):
    """Running max over the window taps in row-major order, keeping the first maximum.

    Returns best (N, C, Ho, Wo) and tap (N, C, Ho, Wo) of ``maxpool_tap_dtype``: the
    index q = i*kw + j of the winning tap. A later tap wins only when strictly larger,
    so ties keep the first; with ``nan_aware`` a NaN also wins over a number, and nothing
    beats a NaN (as ``np.argmax``).

    Only contiguous, SIMD-friendly ufuncs run here (``np.where``, ``np.copyto(where=)``
    and fancy indexing are 10-50x slower on these sizes). ``np.maximum`` gives the
    right values even with NaN (it propagates them), and since the taps come in
    increasing order, "tap = q where the new value wins" is ``max(tap, wins * q)``."""
    kh, kw = kernel
    best = _grid(x, (0, 0), stride, out_hw).copy()
    tap_dtype = maxpool_tap_dtype(kernel)
    tap = np.zeros(best.shape, dtype=tap_dtype)
    wins = np.empty(best.shape, dtype=bool)
    scratch = np.empty(best.shape, dtype=tap_dtype)
    for q in range(1, kh * kw):
        v = _grid(x, divmod(q, kw), stride, out_hw)
        if nan_aware:  # not (v <= best) is "greater, or v or best is NaN"
            np.logical_and(np.logical_not(np.less_equal(v, best)),
                           np.equal(best, best), out=wins)
        else:
            np.greater(v, best, out=wins)
        np.maximum(best, v, out=best)
        np.multiply(wins.view(np.uint8), tap_dtype.type(q), out=scratch, casting="unsafe")
        np.maximum(tap, scratch, out=tap)
    return best, tap


def maxpool_forward(x, kernel, stride):
    """(N, C, H, W) -> out (N, C, Ho, Wo) and argmax (N, C, Ho, Wo), the tap
    q = i*kw + j (window row i, column j) of each window's first maximum, of
    ``maxpool_tap_dtype(kernel)``."""
    out_hw = _pool_hw(x.shape[2:], kernel, stride)
    # x.max() is one fast pass, NaN exactly when x holds a NaN: then take the slower,
    # NaN-aware comparisons.
    has_nan = x.size > 0 and bool(np.isnan(x.max()))
    return _first_max(x, kernel, stride, out_hw, nan_aware=has_nan)


def maxpool_backward(dout, argmax, x_shape, kernel, stride):
    """Send each dout to the input position of its window's tap in argmax (taps
    outside the window raise ValueError)."""
    N, C, H, W = x_shape
    (kh, kw), (sh, sw) = kernel, stride
    if argmax.size and (argmax.min() < 0 or argmax.max() >= kh * kw):
        bad = np.count_nonzero((argmax < 0) | (argmax >= kh * kw))
        raise ValueError(f"maxpool_backward: {bad} argmax entries lie outside their "
                         f"{kh}x{kw} window (taps must be 0..{kh * kw - 1}; argmax must "
                         f"come from maxpool_forward)")
    # tap q = i*kw + j lies i*W + j = q + i*(W - kw) after the window's origin
    index = argmax.astype(np.intp)
    if kh > 1:
        index += (argmax // kw).astype(np.intp) * (W - kw)
    index += _window_origins(W, stride, dout.shape[2:])
    index += np.arange(N * C, dtype=np.intp).reshape(N, C, 1, 1) * (H * W)
    index = index.ravel()
    dx = np.zeros(N * C * H * W, dtype=dout.dtype)
    if sh >= kh and sw >= kw:  # windows do not overlap: each input gets at most one
        dx[index] = dout.ravel()
    else:  # unbuffered add: repeated indices accumulate (fast in NumPy >= 1.25)
        np.add.at(dx, index, dout.ravel())
    return dx.reshape(N, C, H, W)


def avgpool_forward(x, kernel, stride):
    """(N, C, H, W) -> (N, C, Ho, Wo), the mean of each window."""
    (kh, kw) = kernel
    out_hw = _pool_hw(x.shape[2:], kernel, stride)
    out = _grid(x, (0, 0), stride, out_hw).copy()
    for q in range(1, kh * kw):
        out += _grid(x, divmod(q, kw), stride, out_hw)
    out *= x.dtype.type(1.0 / (kh * kw))
    return out


def avgpool_backward(dout, x_shape, kernel, stride):
    """Spread each dout evenly over its window (overlaps add up)."""
    N, C, H, W = x_shape
    (kh, kw), (sh, sw) = kernel, stride
    out_hw = dout.shape[2:]
    share = dout * dout.dtype.type(1.0 / (kh * kw))
    dx = np.zeros((N, C, H, W), dtype=dout.dtype)
    disjoint = sh >= kh and sw >= kw
    for q in range(kh * kw):
        target = _grid(dx, divmod(q, kw), stride, out_hw)
        if disjoint:
            target[...] = share
        else:
            target += share
    return dx


def direct_conv(x, wt, bias, pad):
    """Twin of the compiled direct convolution (stride 1), as im2col + matmul.

    x (n, C, H, W); wt (C, kh, kw, F), the weights W (F, C, kh, kw) transposed;
    bias (F,) or None; pad (ph, pw) -> out (n, F, Ho, Wo), Ho = H + 2*ph - kh + 1.
    """
    n, C, H, W = x.shape
    _, kh, kw, F = wt.shape
    Ho, Wo = H + 2 * pad[0] - kh + 1, W + 2 * pad[1] - kw + 1
    cols = im2col(x, (kh, kw), (1, 1), pad)                    # (n, C*kh*kw, Ho*Wo)
    out = np.matmul(wt.reshape(C * kh * kw, F).T, cols)        # (n, F, Ho*Wo)
    if bias is not None:
        out += bias[:, None]
    return out.reshape(n, F, Ho, Wo)


def direct_conv_dw(xp, dT, kernel):
    """Twin of the compiled direct weight gradient (stride 1), as im2col + matmul.

    xp (n, C, Hp, Wp) zero-padded input; dT (n, Ho, Wo, F) = dout.transpose(0, 2, 3, 1);
    kernel (kh, kw) -> dW transposed, (C, kh, kw, F), summed over the n samples.
    """
    n, C = xp.shape[:2]
    F = dT.shape[3]
    cols = im2col(xp, kernel, (1, 1), (0, 0))                  # (n, C*kh*kw, Ho*Wo)
    dwt = np.matmul(cols, dT.reshape(n, -1, F)).sum(axis=0)    # (C*kh*kw, F)
    return dwt.reshape((C,) + tuple(kernel) + (F,))


# ------------------------------------------------------------- batch normalisation
# Planes: x (N, C, P), one plane of P values per sample and channel. Same contracts as
# the compiled airi/_ext/_norm.pyx; results agree to rounding (sum orders differ).
def batchnorm_moments(x):
    """x (N, C, P) -> mean (N, C), m2 (N, C) float64: each plane's mean (rounded to x's
    dtype) and sum of squared deviations from it."""
    P = x.shape[2]
    mean = (x.sum(axis=2, dtype=np.float64) / max(P, 1)).astype(x.dtype)
    centered = x - mean[:, :, None]
    m2 = np.vecdot(centered, centered).astype(np.float64)
    return mean.astype(np.float64), m2


def batchnorm_normalize(x, shift, invstd, gamma, beta):
    """x (N, C, P), vectors (C,) -> xhat = (x - shift) * invstd, out = xhat * gamma +
    beta, both (N, C, P)."""
    xhat = x - shift[:, None]
    xhat *= invstd[:, None]
    out = xhat * gamma[:, None]
    out += beta[:, None]
    return xhat, out


def batchnorm_grad_sums(dout, xhat):
    """dout, xhat (N, C, P) -> per plane sum(dout), sum(dout * xhat), (N, C) float64."""
    return (dout.sum(axis=2, dtype=np.float64),
            np.vecdot(dout, xhat).astype(np.float64))


def batchnorm_input_grad(dout, xhat, k_xhat, mean_dout, scale):
    """dx = (dout - mean_dout + k_xhat * xhat) * scale, per channel; (N, C, P)."""
    dx = xhat * k_xhat[:, None]
    dx += dout
    dx -= mean_dout[:, None]
    dx *= scale[:, None]
    return dx


# ------------------------------------------------------ Winograd F(2x2, 3x3) transforms
# Same contracts as airi/_ext/_wino.pyx (see there for the algebra and the layouts).
def winograd_input(x, V, pad):
    """x (n, C, H, W) -> V (16, C, n*th*tw), the transformed 4x4 input tiles."""
    n, C, H, W = x.shape
    ph, pw = pad
    Ho, Wo = H + 2 * ph - 2, W + 2 * pw - 2
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    xp = np.zeros((n, C, 2 * th + 2, 2 * tw + 2), dtype=x.dtype)
    rows, cols = min(H, 2 * th + 2 - ph), min(W, 2 * tw + 2 - pw)
    xp[:, :, ph:ph + rows, pw:pw + cols] = x[:, :, :rows, :cols]
    # d[i][j] (n, C, th, tw): element (i, j) of every tile
    d = [[xp[:, :, i:i + 2 * th:2, j:j + 2 * tw:2] for j in range(4)] for i in range(4)]
    t = [[d[0][j] - d[2][j] for j in range(4)], [d[1][j] + d[2][j] for j in range(4)],
         [d[2][j] - d[1][j] for j in range(4)], [d[1][j] - d[3][j] for j in range(4)]]
    for i in range(4):
        for j, value in enumerate((t[i][0] - t[i][2], t[i][1] + t[i][2],
                                   t[i][2] - t[i][1], t[i][1] - t[i][3])):
            V[4 * i + j] = value.transpose(1, 0, 2, 3).reshape(C, n * th * tw)


def winograd_output(M, out, bias):
    """M (16, F, n*th*tw) -> out (n, F, Ho, Wo) (+ bias (F,) or None)."""
    n, F, Ho, Wo = out.shape
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    m = M.reshape(4, 4, F, n, th, tw)
    r = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])                     # A^T m
    full = np.empty((n, F, 2 * th, 2 * tw), dtype=out.dtype)
    for a in range(2):
        y0 = r[a][0] + r[a][1] + r[a][2]                             # (F, n, th, tw)
        y1 = r[a][1] - r[a][2] - r[a][3]
        full[:, :, a::2, 0::2] = y0.transpose(1, 0, 2, 3)
        full[:, :, a::2, 1::2] = y1.transpose(1, 0, 2, 3)
    if bias is not None:
        full += bias[:, None, None]
    out[...] = full[:, :, :Ho, :Wo]
