"""Consistency and faults: refuse ranks that disagree at start-up, stop every rank
together when one fails."""
import contextlib
import hashlib
import os
import signal
import sys
import traceback

import numpy as np


from .collectives import _as_params, allgather_object
from .startup import DistributedError, _one_line, _world, size


# ------------------------------------------------------------------ consistency, faults
def _model_fingerprint(model):
    """A short hash of the architecture: layer types and settings, parameter names,
    shapes and dtypes (not the values: rank 0's weights are broadcast anyway)."""
    h = hashlib.sha256()
    if hasattr(model, "named_parameters"):
        named = list(model.named_parameters())
    else:
        named = [(str(i), p) for i, p in enumerate(_as_params(model))]
    for name, p in named:
        h.update(f"{name}:{tuple(p.shape)}:{np.dtype(p.dtype).str};".encode())
    h.update(repr(model).encode() if hasattr(model, "layers") else b"")
    return h.hexdigest()[:16]


def data_fingerprint(X):
    """A cheap fingerprint of a data array, to compare data sets across ranks.

    Parameters
    ----------
    X : array_like, shape (N, ...)

    Returns
    -------
    str
        Shape, dtype and a hash of up to 16 evenly spaced samples: it tells apart
        different files of the same size without hashing all of them.
    """
    X = np.asarray(X)
    if X.ndim == 0 or len(X) == 0:
        return f"{X.shape}/{X.dtype}"
    picks = np.unique(np.linspace(0, len(X) - 1, num=min(len(X), 16)).astype(np.int64))
    digest = hashlib.sha256(np.ascontiguousarray(X[picks]).tobytes()).hexdigest()[:12]
    return f"{tuple(X.shape)}/{X.dtype}/{digest}"


def check_consistency(model=None, **facts):
    """Check at start-up that every rank runs the same thing.

    Compares, across ranks, the airi version, the model's architecture (a hash of its
    layers and parameter names/shapes/dtypes) and any ``facts`` given as keywords
    (data set sizes, settings: anything with a ``repr``; a dict is compared entry by
    entry). A collective: every rank must call it.

    Parameters
    ----------
    model : Sequential or iterable of Parameter, optional
        Its architecture is compared (not its weights).
    **facts
        Named values to compare, e.g. ``settings=dict(...)``, ``training_data=...``.

    Raises
    ------
    DistributedError
        On every rank, with the same message naming the ranks that differ from rank 0
        and what they have. Without MPI, never.
    """
    if size() == 1:
        return
    from .. import __version__
    mine = {"airi version": __version__}
    if model is not None:
        mine["model architecture"] = _model_fingerprint(model)
    for key, value in facts.items():
        if isinstance(value, dict):     # e.g. settings: compared (and named) one by one
            mine.update({f"{key} {k}": repr(v) for k, v in value.items()})
        else:
            mine[key] = repr(value)
    everyone = allgather_object(mine, "start-up consistency check")
    reference = everyone[0]
    problems = []
    for r, theirs in enumerate(everyone[1:], start=1):
        for key in sorted(set(reference) | set(theirs)):
            if reference.get(key) != theirs.get(key):
                problems.append(f"rank {r} has {key} {theirs.get(key, 'nothing')}, "
                                f"rank 0 has {reference.get(key, 'nothing')}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DistributedError("the ranks disagree: " + "; ".join(problems[:3]) + more
                               + ". Every rank must run the same airi, model and data")


def run_together(fn, *args, error=DistributedError, **kwargs):
    """``fn(*args, **kwargs)`` on every rank; if it fails on any rank, fail on all.

    For start-up work (reading options, data, checkpoints) that contains no collective:
    every rank runs it, then the ranks compare notes. If one or more ranks raised,
    every rank raises ``error`` with the same message (the shared message once when all
    ranks failed alike, else each failing rank's, named), so the job ends cleanly
    instead of leaving the healthy ranks waiting. Without MPI: just ``fn(...)``.

    Parameters
    ----------
    fn : callable
        Run as ``fn(*args, **kwargs)``; must contain no collective operation.
    *args, **kwargs
        Its arguments.
    error : exception class
        Raised on every rank when any rank failed.

    Returns
    -------
    object
        What ``fn`` returned on this rank.
    """
    if size() == 1:
        return fn(*args, **kwargs)
    try:
        result, failure = fn(*args, **kwargs), None
    except Exception as exc:       # reported below, on every rank
        result, failure = None, exc
    notes = allgather_object(None if failure is None else _one_line(failure),
                             "start-up")
    failed = [(r, note) for r, note in enumerate(notes) if note is not None]
    if not failed:
        return result
    if len(failed) == len(notes) and len({note for _, note in failed}) == 1:
        message = failed[0][1]
    else:
        message = "; ".join(f"rank {r}: {note}" for r, note in failed)
    if isinstance(failure, error) and _one_line(failure) == message:
        raise failure
    raise error(message) from failure


def _describe(exc):
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, SystemExit):
        return f"exited with status {exc.code}"
    name = type(exc).__name__
    text = _one_line(exc)
    return text if name in ("UsageError", "TrainingError") else f"{name}: {text}"


def abort(message, status=1):
    """Print ``message`` naming this rank and stop EVERY rank (``MPI_Abort``).

    For a failure that only this rank knows about: the others may be waiting for it in
    a collective. Without MPI: print ``message`` and ``sys.exit(status)``.

    Parameters
    ----------
    message : str
        Printed on stderr (prefixed with ``[rank r of K]`` under MPI).
    status : int
        The exit status (non-zero; 0 becomes 1 under MPI).
    """
    if size() == 1:
        print(message, file=sys.stderr, flush=True)
        sys.exit(status)
    print(f"[rank {_world.rank} of {_world.size}] {message}", file=sys.stderr, flush=True)
    _world.comm.Abort(int(status) or 1)


def fail(message, status=1):
    """Report a failure of this rank: with one process print it and return ``status``
    (for ``return fail(...)`` in a ``main``); under MPI print it with this rank's
    number and abort every rank.

    Parameters
    ----------
    message : str
        Printed on stderr.
    status : int
        The exit status.

    Returns
    -------
    int
        ``status`` (only without MPI: under MPI the job ends).
    """
    if size() > 1:
        abort(message, status)
    print(message, file=sys.stderr, flush=True)
    return status


@contextlib.contextmanager
def abort_on_failure(prog="airi", ignore=()):
    """Any exception leaving the block on one rank stops every rank.

    The traceback (for unexpected errors) and one line ``[rank r of K] prog: error:
    cause`` are printed on the failing rank, then ``MPI_Abort`` ends the job with a
    non-zero status within seconds; nothing waits forever in a collective. Exceptions
    of the ``ignore`` classes pass through (use it for errors every rank raises
    together, e.g. from :func:`run_together`). ``mpiexec``'s own Ctrl-C (Open MPI sends
    SIGTERM to the ranks, SIGKILL a quarter of a second later) ends the process at once
    (rank 0 says so, if mpiexec still forwards its output). The
    last checkpoint stays intact (``airi.save`` writes atomically). Without MPI: does
    nothing.

    Parameters
    ----------
    prog : str
        The program name that starts the error line.
    ignore : tuple of exception classes
        Exceptions that pass through without aborting.
    """
    if size() == 1:
        yield
        return
    previous = _sigterm_notice(prog)
    try:
        yield
    except ignore:
        raise
    except BaseException as exc:   # noqa: B902  (KeyboardInterrupt and SystemExit too)
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            raise
        if not isinstance(exc, (KeyboardInterrupt, SystemExit, ValueError, OSError,
                                FloatingPointError)):
            traceback.print_exc()
        abort(f"{prog}: error: {_describe(exc)}", 1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_notice(prog):
    """Open MPI's mpiexec answers Ctrl-C by sending SIGTERM to every rank and SIGKILL a
    moment later: say so once (rank 0) and leave at once."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if _world.rank == 0:
            print(f"\n{prog}: stopped by mpiexec (Ctrl-C or SIGTERM); the last "
                  "checkpoint written is intact", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)
