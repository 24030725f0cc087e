"""The NumPy twins of the compiled kernels in ``airi/_ext``.

A real product path, not a test oracle: each function is vectorised over samples,
channels and pixels and loops over the (few) kernel offsets at most. The arguments are
already validated by :mod:`airi._backend`; shapes and layouts are documented there.
"""
import numpy as np


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _pad(x, ph, pw):
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def im2col(x, kernel, stride, pad):
    """(N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo); row index is (c, i, j), C order."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    Ho, Wo = _out_size(H, kh, sh, ph), _out_size(W, kw, sw, pw)
    xp = _pad(x, ph, pw)
    cols = np.empty((N, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
    return cols.reshape(N, C * kh * kw, Ho * Wo)


def col2im(cols, x_shape, kernel, stride, pad):
    """Adjoint of :func:`im2col`: cols (N, C*kh*kw, Ho*Wo) -> (N, C, H, W), summing
    the contributions of overlapping windows."""
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    Ho, Wo = _out_size(H, kh, sh, ph), _out_size(W, kw, sw, pw)
    cols = cols.reshape(N, C, kh, kw, Ho, Wo)
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw] += cols[:, :, i, j]
    if ph == 0 and pw == 0:
        return dxp
    return np.ascontiguousarray(dxp[:, :, ph:ph + H, pw:pw + W])


def _windows(x, kernel, stride):
    """A read-only strided view (N, C, Ho, Wo, kh, kw) of the pooling windows."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = _out_size(H, kh, sh, 0), _out_size(W, kw, sw, 0)
    s0, s1, s2, s3 = x.strides
    return np.lib.stride_tricks.as_strided(
        x, shape=(N, C, Ho, Wo, kh, kw),
        strides=(s0, s1, s2 * sh, s3 * sw, s2, s3), writeable=False)


def maxpool_forward(x, kernel, stride):
    """(N, C, H, W) -> out (N, C, Ho, Wo) and argmax (N, C, Ho, Wo), the flat index
    (row * W + col) within the H x W plane of each window's first maximum."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    win = _windows(x, kernel, stride)
    Ho, Wo = win.shape[2], win.shape[3]
    flat = win.reshape(N, C, Ho, Wo, kh * kw)  # copies: windows are not a plain view
    k = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, k[..., None], axis=-1)[..., 0]
    rows = (np.arange(Ho) * sh)[:, None] + k // kw
    cols = (np.arange(Wo) * sw)[None, :] + k % kw
    return out, (rows * W + cols).astype(np.intp)


def maxpool_backward(dout, argmax, x_shape, kernel, stride):
    """Send each dout to the input position its window's maximum came from."""
    N, C, H, W = x_shape
    (kh, kw), (sh, sw) = kernel, stride
    plane = np.arange(N * C, dtype=np.intp).reshape(N, C, 1, 1) * (H * W)
    index = (argmax + plane).ravel()
    if sh >= kh and sw >= kw:  # windows do not overlap: each input gets at most one
        dx = np.zeros(N * C * H * W, dtype=dout.dtype)
        dx[index] = dout.ravel()
    else:
        dx = np.bincount(index, weights=dout.ravel(), minlength=N * C * H * W)
        dx = dx.astype(dout.dtype, copy=False)
    return dx.reshape(N, C, H, W)


def avgpool_forward(x, kernel, stride):
    """(N, C, H, W) -> (N, C, Ho, Wo), the mean of each window."""
    (kh, kw), (sh, sw) = kernel, stride
    N, C, H, W = x.shape
    Ho, Wo = _out_size(H, kh, sh, 0), _out_size(W, kw, sw, 0)
    out = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += x[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
    out *= x.dtype.type(1.0 / (kh * kw))
    return out


def avgpool_backward(dout, x_shape, kernel, stride):
    """Spread each dout evenly over its window (overlaps add up)."""
    N, C, H, W = x_shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = dout.shape[2], dout.shape[3]
    share = dout * dout.dtype.type(1.0 / (kh * kw))
    dx = np.zeros((N, C, H, W), dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw] += share
    return dx
