"""Weight initialisation schemes.

Every function returns a new array of the requested ``shape`` and ``dtype`` (None means
airi's default dtype, float32 unless changed) drawn from airi's shared random generator,
so ``airi.seed(n)`` makes initialisation reproducible.

Fan-in and fan-out follow airi's weight layouts (pass ``fan_in`` / ``fan_out`` to
override them):

* a 2-D shape ``(in_features, out_features)`` is a ``Linear`` weight (``x @ W``):
  ``fan_in = shape[0]``, ``fan_out = shape[1]``;
* a shape ``(out_channels, in_channels, kh, kw, ...)`` is a convolution weight:
  ``fan_in = in_channels * kh * kw``, ``fan_out = out_channels * kh * kw``;
* a 1-D shape ``(n,)``: ``fan_in = fan_out = n``.
"""
import math

import numpy as np

from . import _config

__all__ = ["compute_fans", "kaiming_normal", "he_normal", "xavier_normal",
           "xavier_uniform", "glorot_normal", "glorot_uniform", "zeros", "get_initializer"]


def compute_fans(shape):
    """Fan-in and fan-out of a weight of ``shape`` (see the module docstring).

    Parameters
    ----------
    shape : tuple of int

    Returns
    -------
    (int, int)
        ``(fan_in, fan_out)``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        raise ValueError("cannot compute the fans of a scalar weight (shape ())")
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _fans(shape, fan_in, fan_out):
    default_in, default_out = compute_fans(shape)
    return (default_in if fan_in is None else int(fan_in),
            default_out if fan_out is None else int(fan_out))


def _normal(shape, std, dtype):
    dtype = _config.resolve_dtype(dtype)
    # Drawn directly in the target dtype: no float64 temporary for float32 weights.
    w = _config.get_rng().standard_normal(tuple(shape), dtype=dtype)
    w *= dtype.type(std)
    return w


def _uniform(shape, limit, dtype):
    dtype = _config.resolve_dtype(dtype)
    w = _config.get_rng().random(tuple(shape), dtype=dtype)  # [0, 1)
    w *= dtype.type(2.0 * limit)
    w -= dtype.type(limit)
    return w


def kaiming_normal(shape, fan_in=None, gain=math.sqrt(2.0), dtype=None):
    """Kaiming (He) normal: N(0, std^2) with ``std = gain / sqrt(fan_in)``.

    The default gain sqrt(2) keeps the activation variance constant through ReLU
    layers (He et al., 2015).

    Parameters
    ----------
    shape : tuple of int
        The weight's shape, e.g. (in_features, out_features) or (F, C, kh, kw).
    fan_in : int, optional
        Overrides the fan-in computed from ``shape``.
    gain : float
        sqrt(2) for ReLU, 1 for linear/tanh-like layers.
    dtype : dtype, optional
        None means the default dtype.

    Returns
    -------
    ndarray of ``shape``
    """
    fan_in, _ = _fans(shape, fan_in, None)
    return _normal(shape, gain / math.sqrt(fan_in), dtype)


he_normal = kaiming_normal


def xavier_normal(shape, fan_in=None, fan_out=None, gain=1.0, dtype=None):
    """Xavier (Glorot) normal: N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Parameters
    ----------
    shape : tuple of int
    fan_in, fan_out : int, optional
        Override the fans computed from ``shape``.
    gain : float
    dtype : dtype, optional

    Returns
    -------
    ndarray of ``shape``
    """
    fan_in, fan_out = _fans(shape, fan_in, fan_out)
    return _normal(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), dtype)


def xavier_uniform(shape, fan_in=None, fan_out=None, gain=1.0, dtype=None):
    """Xavier (Glorot) uniform: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``.

    Parameters
    ----------
    shape : tuple of int
    fan_in, fan_out : int, optional
    gain : float
    dtype : dtype, optional

    Returns
    -------
    ndarray of ``shape``
    """
    fan_in, fan_out = _fans(shape, fan_in, fan_out)
    return _uniform(shape, gain * math.sqrt(6.0 / (fan_in + fan_out)), dtype)


glorot_normal = xavier_normal
glorot_uniform = xavier_uniform


def zeros(shape, dtype=None):
    """An array of zeros (used for biases).

    Parameters
    ----------
    shape : tuple of int
    dtype : dtype, optional

    Returns
    -------
    ndarray of ``shape``
    """
    return np.zeros(tuple(shape), dtype=_config.resolve_dtype(dtype))


_BY_NAME = {
    "kaiming": kaiming_normal, "kaiming_normal": kaiming_normal, "he": kaiming_normal,
    "he_normal": kaiming_normal,
    "xavier": xavier_normal, "xavier_normal": xavier_normal, "glorot": xavier_normal,
    "glorot_normal": xavier_normal,
    "xavier_uniform": xavier_uniform, "glorot_uniform": xavier_uniform,
}


def get_initializer(init):
    """The weight initialiser named ``init`` (``"kaiming"``, ``"xavier"``,
    ``"xavier_uniform"`` ...), or ``init`` itself when it is a callable
    ``init(shape, dtype=...) -> ndarray``."""
    if callable(init):
        return init
    try:
        return _BY_NAME[str(init).lower()]
    except KeyError:
        raise ValueError(f"unknown init {init!r}; choose one of "
                         f"{sorted(_BY_NAME)} or pass a callable") from None


def make_weight(shape, init, dtype):
    """A new weight of ``shape`` from the initialiser ``init`` (a name or a callable
    ``f(shape, dtype=...)``), checked to have that shape, in ``dtype``."""
    w = np.asarray(get_initializer(init)(tuple(shape), dtype=dtype))
    if w.shape != tuple(shape):
        raise ValueError(f"init returned shape {w.shape}, expected {tuple(shape)}")
    return w.astype(dtype, copy=False)
