"""Collectives on the whole world: barrier, broadcasts and sums (each a no-op or the
identity in one process).

Every collective airi runs during training waits with a deadline: MPI's blocking calls
have no time limit, so a rank stuck inside a step (not dead, not raising) would leave
the others waiting forever. Each collective is preceded by a non-blocking barrier
(:func:`arrive`) that :func:`wait` polls (``Testall``: 50 ms of spinning, then sleeps
of at most a millisecond) until it completes or ``init(timeout=...)`` seconds have
passed. Then the ranks that are waiting tell each
other so (point-to-point messages on a second communicator), the lowest of them prints
one message naming the ranks that did not arrive, and ``MPI_Abort`` stops the job.
"""
import sys
import time

import numpy as np


from .startup import _world, rank, size

#: The exit status of a job stopped because a rank did not arrive in time.
TIMEOUT_STATUS = 1
_TIMEOUT_TAG = 16016
_SPIN_SECONDS = 0.05     # poll without sleeping this long (as MPI's blocking calls do)
_MAX_PAUSE = 1e-3        # seconds: then sleep between polls, at most this long


# ------------------------------------------------------------------ waiting, bounded
def wait(requests, what):
    """Wait for MPI ``requests`` (one or a list) to complete, at most the timeout.

    Parameters
    ----------
    requests : mpi4py.MPI.Request or list of them
    what : str
        The collective, for the message (e.g. "allreduce of the gradients").
    """
    MPI = _world.MPI
    if not isinstance(requests, list):
        requests = [requests]
    if MPI.Request.Testall(requests):
        return
    start = time.monotonic()
    deadline = start + _world.timeout
    spin_until = start + _SPIN_SECONDS
    pause = 0.0
    polls = 0
    while not MPI.Request.Testall(requests):
        polls += 1
        if polls % 64:
            continue                     # the clock is read every 64 polls only
        now = time.monotonic()
        if now > deadline:
            _stop_stalled_job(what)
        if now > spin_until:             # a long wait: stop burning the core
            pause = min(_MAX_PAUSE, pause * 2 or 1e-5)
            time.sleep(pause)


def _stop_stalled_job(what):
    """This rank waited ``timeout`` seconds in a collective: find out which ranks are
    waiting too (each tells the others), let the lowest of them name the others, and
    stop every rank."""
    MPI, comm = _world.MPI, _world.notes
    me, n = _world.rank, _world.size
    note = np.array([me], dtype=np.int64)
    sends = [comm.Isend(note, dest=r, tag=_TIMEOUT_TAG) for r in range(n) if r != me]
    waiting = {me}
    grace = min(10.0, max(1.0, 0.1 * _world.timeout))
    end = time.monotonic() + grace
    status, incoming = MPI.Status(), np.empty(1, dtype=np.int64)
    while time.monotonic() < end and len(waiting) < n:
        while comm.Iprobe(source=MPI.ANY_SOURCE, tag=_TIMEOUT_TAG, status=status):
            comm.Recv(incoming, source=status.Get_source(), tag=_TIMEOUT_TAG)
            waiting.add(int(incoming[0]))
        time.sleep(0.01)
    missing = sorted(set(range(n)) - waiting)
    if me == min(waiting):
        if missing:
            who = ("rank " if len(missing) == 1 else "ranks ") + \
                ", ".join(map(str, missing))
            why = f"{who} did not arrive"
        else:
            why = "every rank waited, each in a different collective"
        print(f"[rank {me} of {n}] airi: stopping every rank: the {what} waited "
              f"{_world.timeout:g} s (the rank timeout: init(timeout=...), "
              f"--rank-timeout) and {why}; the last checkpoint written is intact",
              file=sys.stderr, flush=True)
    else:
        time.sleep(2.0)   # the reporting rank aborts first: one message
    del sends
    _world.comm.Abort(TIMEOUT_STATUS)


def arrive(what, comm=None):
    """Wait, at most the timeout, until every rank has reached this point (a
    non-blocking barrier, polled). airi calls it before each blocking collective: once
    every rank has passed it, none can stall before the collective (nothing runs in
    between), so the collective itself needs no deadline. Measured on 2 ranks, a
    barrier and then the blocking call costs 3-50 us more than the blocking call alone,
    while Open MPI's non-blocking Iallreduce ran 2-3x slower than its blocking one
    (256 KB-2 MB; see benchmarks/README.md)."""
    wait((_world.comm if comm is None else comm).Ibarrier(), what)


def _bcast_buffer(buffer, root, what):
    arrive(what)
    _world.comm.Bcast(buffer, root=root)


def allreduce_inplace(buffer, op, what, comm=None):
    """``buffer`` (contiguous ndarray) reduced over the ranks with ``op``, in place,
    waiting at most the timeout for the other ranks to arrive."""
    comm = _world.comm if comm is None else comm
    arrive(what, comm)
    comm.Allreduce(_world.MPI.IN_PLACE, buffer, op=op)
    return buffer


def bcast_object(obj, root, what):
    """Rank ``root``'s picklable ``obj`` on every rank (mpi4py's ``bcast``: the ranks of
    one job trust each other's pickles), after every rank has arrived."""
    arrive(what)
    return _world.comm.bcast(obj, root=root)


def allgather_object(obj, what):
    """Every rank's picklable ``obj``, as a list by rank, on every rank."""
    arrive(what)
    return _world.comm.allgather(obj)


#: Gradients are packed into contiguous buffers of about this many bytes; one allreduce
#: per buffer. Large enough that per-call latency does not matter, small enough that a
#: non-blocking reduction of the last layers can start while earlier ones still run.
DEFAULT_BUCKET_BYTES = 2 * 1024 * 1024


def _as_params(params):
    """A list of Parameters from a model/layer, a dict or an iterable of Parameters."""
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    elif isinstance(params, dict):
        params = params.values()
    params = list(params)
    for p in params:
        if not (hasattr(p, "data") and hasattr(p, "grad")):
            raise TypeError(f"expected airi Parameters, got {type(p).__name__}")
    return params


def _buckets(arrays, bucket_bytes):
    """Group array positions into lists of the same dtype of about ``bucket_bytes``.

    Parameters
    ----------
    arrays : list of (dtype, size)
    bucket_bytes : int

    Returns
    -------
    list of (dtype, [positions])
        Consecutive positions only (the order of ``arrays`` is kept), so buckets fill
        up in the order gradients become ready.
    """
    buckets = []
    for i, (dtype, n) in enumerate(arrays):
        last = buckets[-1] if buckets else None
        if (last is None or last[0] != dtype
                or (last[2] > 0 and last[2] + n * dtype.itemsize > bucket_bytes)):
            buckets.append([dtype, [], 0])
            last = buckets[-1]
        last[1].append(i)
        last[2] += n * dtype.itemsize
    return [(dtype, positions) for dtype, positions, _ in buckets]


# ------------------------------------------------------------------ collectives
def barrier():
    """Wait until every rank has called it (a no-op without MPI). Takes no argument
    and returns None."""
    if size() > 1:
        arrive("barrier")


def broadcast_object(obj, root=0):
    """Send a picklable object from rank ``root`` to every rank.

    Parameters
    ----------
    obj : object
        The object on rank ``root`` (ignored elsewhere). Pickled by mpi4py: the ranks of
        one job trust each other.
    root : int
        The sending rank.

    Returns
    -------
    object
        Rank ``root``'s ``obj`` on every rank; ``obj`` itself without MPI.
    """
    if size() == 1:
        return obj
    return bcast_object(obj, root, "broadcast of an object")


def _broadcast_arrays(arrays, root):
    """Overwrite every array in place with rank ``root``'s values, a few buffers at a
    time (one Bcast per bucket instead of one per array)."""
    arrays = [a for a in arrays if a.size]
    for dtype, positions in _buckets([(a.dtype, a.size) for a in arrays],
                                     DEFAULT_BUCKET_BYTES):
        chunk = [arrays[i] for i in positions]
        buffer = np.concatenate([a.reshape(-1) for a in chunk]).astype(dtype, copy=False)
        _bcast_buffer(buffer, root, "broadcast of the parameters")
        offset = 0
        for a in chunk:
            a[...] = buffer[offset:offset + a.size].reshape(a.shape)
            offset += a.size


def broadcast_parameters(params, root=0):
    """Make every rank start from rank ``root``'s weights.

    Parameters
    ----------
    params : model, layer, dict or iterable of Parameter
        A model (anything with ``state_dict``/``load_state_dict``, e.g. ``Sequential``)
        also gets its buffers (BatchNorm running statistics); otherwise each
        ``Parameter.data`` is overwritten in place.
    root : int
        The rank whose values everyone takes.

    Returns
    -------
    None
        The arrays are overwritten in place (nothing happens without MPI).
    """
    if size() == 1:
        return
    if hasattr(params, "state_dict") and hasattr(params, "load_state_dict"):
        state = params.state_dict()
        keys = sorted(state)
        arrays = [np.ascontiguousarray(state[k]) for k in keys]
        _broadcast_arrays(arrays, root)
        params.load_state_dict(dict(zip(keys, arrays)))
        return
    plist = _as_params(params)
    arrays = [np.ascontiguousarray(p.data) for p in plist]
    _broadcast_arrays(arrays, root)
    for p, a in zip(plist, arrays):
        if a is not p.data:
            p.data[...] = a


def broadcast_optimizer_state(optimizer, root=0):
    """Give every rank rank ``root``'s optimizer state (momentum buffers, Adam moments,
    step counts), e.g. after resuming from a checkpoint that only rank 0 read.

    Parameters
    ----------
    optimizer : optimizer from :mod:`airi.optim`
        The same kind of optimizer over the same parameters on every rank; the other
        ranks' state is replaced with ``load_state_dict``.
    root : int
        The rank whose state everyone takes.
    """
    if size() == 1:
        return
    state = bcast_object(optimizer.state_dict() if rank() == root else None, root,
                         "broadcast of the optimizer state")
    if rank() != root:
        optimizer.load_state_dict(state)


def allreduce_sum(values):
    """Element-wise sum over the ranks.

    Parameters
    ----------
    values : array_like
        Any shape, the same on every rank.

    Returns
    -------
    ndarray, float64, shape of ``values``
        A new array holding the sums (a float64 copy of ``values`` without MPI).
    """
    values = np.array(values, dtype=np.float64)   # a fresh, contiguous copy
    if size() > 1:
        allreduce_inplace(values, _world.MPI.SUM, "sum over the ranks")
    return values


def _allreduce_batchnorm_stats(stats):
    """BatchNorm's statistics hook (see :mod:`airi.layers.normalization`).

    Forward passes ``(3, C)`` rows ``[count, sum, sum of squares]``: summed as they are.
    Backward passes ``(2, C)`` rows ``[sum(dout), sum(dout * xhat)]`` in which rank r's
    ``dout`` is ``n / n_r`` times the gradient of the global mean loss (each rank's loss
    is the mean over its own n_r samples). With unequal shards those factors differ, so
    each rank's sums are brought to the common scale (times n_r / n) before summing and
    back to its own scale after: its ``dx`` is then exactly ``n / n_r`` times the
    global one, like every other gradient it computes, and the weighted gradient
    average comes out equal to one process on the whole batch.
    """
    MPI = _world.MPI
    if stats.shape[0] == 3:
        local_count = float(stats[0, 0])
        allreduce_inplace(stats, MPI.SUM, "allreduce of BatchNorm statistics")
        total = float(stats[0, 0])
        _world.bn_share = local_count / total if total > 0 else 0.0
        return stats
    share = _world.bn_share
    if share > 0:
        stats *= share
    allreduce_inplace(stats, MPI.SUM, "allreduce of BatchNorm gradients")
    if share > 0:
        stats /= share
    return stats
