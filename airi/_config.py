"""Global settings: default dtype, random state and thread count.

Everything that airi draws at random (weight initialisation, dropout masks, data
shuffling) comes from one NumPy ``Generator`` owned here, so ``airi.seed(n)`` makes a
whole run reproducible.
"""
import os

import numpy as np

__all__ = [
    "get_default_dtype", "set_default_dtype", "seed", "get_rng", "set_rng_state",
    "get_rng_state", "get_num_threads", "set_num_threads",
]

_default_dtype = np.dtype(np.float32)
_rng = np.random.default_rng()
_num_threads = None


def get_default_dtype():
    """The dtype of newly created parameters.

    Returns
    -------
    numpy.dtype
        float32 unless changed with :func:`set_default_dtype`.
    """
    return _default_dtype


def set_default_dtype(dtype):
    """Set the dtype of parameters created from now on (existing ones keep theirs:
    convert them with ``model.to(dtype)``).

    Parameters
    ----------
    dtype : dtype-like
        ``np.float32`` (the default) or ``np.float64``.

    Raises
    ------
    ValueError
        For any other dtype.
    """
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"default dtype must be float32 or float64, got {dtype}")
    _default_dtype = dtype


def resolve_dtype(dtype):
    """``dtype`` as a float ``np.dtype``; None means the default dtype."""
    if dtype is None:
        return _default_dtype
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"parameters must have a float dtype, got {dtype}")
    return dtype


def seed(n):
    """Seed airi's random generator (initialisation, dropout masks, shuffling).

    Parameters
    ----------
    n : int
        A non-negative integer; the same ``n`` gives the same run.

    Raises
    ------
    ValueError
        If ``n`` is not a non-negative int (bools and floats are refused).
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"airi.seed: n must be a non-negative int, got {n!r}")
    _reseed(int(n))


def _reseed(entropy):
    """Replace airi's generator with ``np.random.default_rng(entropy)``, unchecked
    (:func:`airi.distributed.seed` passes ``[n, rank]``)."""
    global _rng
    _rng = np.random.default_rng(entropy)


def get_rng():
    """airi's shared ``np.random.Generator``."""
    return _rng


def get_rng_state():
    """A picklable snapshot of airi's random generator (for checkpoints)."""
    return _rng.bit_generator.state


def set_rng_state(state):
    """Restore a snapshot taken with :func:`get_rng_state`."""
    _rng.bit_generator.state = state


def _cores_available():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads airi's layers and kernels use (``AIRI_NUM_THREADS``, else all cores).

    airi's functional ops split each batch over this many threads (``airi/_parallel.py``,
    the one owner of threads) and run BLAS single-threaded meanwhile, so BLAS and airi
    never oversubscribe the cores; that needs the optional package ``threadpoolctl`` (without it, layers run on
    one thread and BLAS keeps its own threads)."""
    global _num_threads
    if _num_threads is None:
        env = os.environ.get("AIRI_NUM_THREADS")
        if env:
            try:
                _num_threads = int(env)
            except ValueError:
                raise ValueError(f"AIRI_NUM_THREADS must be a positive integer, got {env!r}")
            if _num_threads < 1:
                raise ValueError(f"AIRI_NUM_THREADS must be a positive integer, got {env!r}")
        else:
            _num_threads = _cores_available()
    return _num_threads


def set_num_threads(n):
    """Set the number of threads of airi's layers and kernels; with ``threadpoolctl``
    installed, also cap BLAS at ``n`` threads for the rest of the process (NumPy code
    outside airi's layers).

    Parameters
    ----------
    n : int
        The number of threads, >= 1 (overrides ``AIRI_NUM_THREADS``).

    Raises
    ------
    ValueError
        If ``n < 1``.
    """
    global _num_threads
    n = int(n)
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _num_threads = n
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n, user_api="blas")
