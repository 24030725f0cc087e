"""Checks of user-given arguments, shared by layers, models, data and schedules.

Each returns the value in canonical form or raises one ``ValueError`` that names the
owner (class or function) and the argument, e.g. ``"Linear: input_size must be a
positive integer, got 3.5"``.
"""
import math

import numpy as np

__all__ = ["positive_int", "finite_number"]


def positive_int(value, name, owner):
    """``value`` as an int >= 1, or a ValueError naming ``owner`` and ``name``.

    Sizes, batch sizes and step counts use it (``Linear(3.5, 2)`` is an error, not a
    layer of 3 inputs); bools are rejected, NumPy integers accepted.

    Parameters
    ----------
    value : object
        The value given by the user.
    name : str
        The argument's name, e.g. ``"input_size"``.
    owner : str
        The class or function name for the message, e.g. ``"Linear"``.

    Returns
    -------
    int
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def finite_number(value, name, owner, low=None, high=None, low_open=False):
    """``value`` as a finite float, optionally in ``[low, high]`` (``(low, high]`` with
    ``low_open``), or a ValueError naming ``owner`` and ``name``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}") from None
    ok = math.isfinite(x)
    if low is not None:
        ok = ok and (x > low if low_open else x >= low)
    if high is not None:
        ok = ok and x <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "inf)" if high is None else f"{high}]"
        raise ValueError(f"{owner}: {name} must be a finite number"
                         + (f" in {lo}{hi}" if lo else "") + f", got {value!r}")
    return x
