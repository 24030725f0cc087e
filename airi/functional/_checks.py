"""Argument checks shared by the functional ops: each bad input gets one clear
``ValueError`` saying what is wrong, whichever backend runs."""
import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def pair(value, name):
    """``value`` as a pair of Python ints (an int ``k`` means ``(k, k)``)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        h, w = value
    else:
        h = w = value
    try:
        if int(h) != h or int(w) != w:
            raise TypeError
        return int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None


def conv_output_shape(H, W, kernel, stride, pad):
    """(Ho, Wo) of a sliding window over an H x W input, validating the arguments:
    ``Ho = (H + 2*ph - kh) // sh + 1``, ``Wo`` likewise."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel size must be >= 1, got {(kh, kw)}")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be >= 1, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {(ph, pw)}")
    if kh > H + 2 * ph or kw > W + 2 * pw:
        raise ValueError(
            f"kernel {kh}x{kw} is larger than the padded input "
            f"{H + 2 * ph}x{W + 2 * pw} (input {H}x{W}, padding {ph}x{pw})")
    return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1


def float_array(a, name, ndim):
    """``a`` as a C-contiguous float32/float64 array of ``ndim`` dimensions."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.dtype not in FLOATS:
        raise ValueError(f"{name} must be float32 or float64, got dtype {a.dtype} "
                         "(convert it, e.g. x.astype(np.float32))")
    return np.ascontiguousarray(a)


def x_shape_of(x_shape):
    """A 4-D input shape (N, C, H, W) as ints; N or C may be 0, H and W may not."""
    if len(x_shape) != 4 or any(int(s) < 0 for s in x_shape) or min(x_shape[2:]) < 1:
        raise ValueError(f"x_shape must be 4 ints (N, C, H, W) with H, W >= 1, "
                         f"got {x_shape}")
    return tuple(int(s) for s in x_shape)


def same_float_dtype(name, *arrays):
    """C-contiguous copies-if-needed of ``arrays``, which must share one float dtype."""
    dtype = arrays[0].dtype
    if dtype not in FLOATS or any(a.dtype != dtype for a in arrays):
        raise ValueError(f"{name}: arrays must share one float dtype, got "
                         f"{[str(a.dtype) for a in arrays]}")
    return [np.ascontiguousarray(a) for a in arrays]


def require_float(x, owner):
    """Refuse inputs the kernels cannot take (they compute in float32 or float64, not
    float16 or integers), naming ``owner`` (a layer or function) in the message."""
    if x.dtype not in FLOATS:
        raise ValueError(f"{owner}: input must be float32 or float64, got dtype "
                         f"{x.dtype} (convert it, e.g. x.astype(np.float32))")
