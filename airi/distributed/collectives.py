"""Collectives on the whole world: barrier, broadcasts and sums (each a no-op or the
identity in one process)."""

import numpy as np


from .startup import _world, rank, size

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
        _world.comm.Barrier()


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
    return _world.comm.bcast(obj, root=root)


def _broadcast_arrays(arrays, root):
    """Overwrite every array in place with rank ``root``'s values, a few buffers at a
    time (one Bcast per bucket instead of one per array)."""
    arrays = [a for a in arrays if a.size]
    for dtype, positions in _buckets([(a.dtype, a.size) for a in arrays],
                                     DEFAULT_BUCKET_BYTES):
        chunk = [arrays[i] for i in positions]
        buffer = np.concatenate([a.reshape(-1) for a in chunk]).astype(dtype, copy=False)
        _world.comm.Bcast(buffer, root=root)
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
    state = _world.comm.bcast(optimizer.state_dict() if rank() == root else None,
                              root=root)
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
        _world.comm.Allreduce(_world.MPI.IN_PLACE, values, op=_world.MPI.SUM)
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
        _world.comm.Allreduce(MPI.IN_PLACE, stats, op=MPI.SUM)
        total = float(stats[0, 0])
        _world.bn_share = local_count / total if total > 0 else 0.0
        return stats
    share = _world.bn_share
    if share > 0:
        stats *= share
    _world.comm.Allreduce(MPI.IN_PLACE, stats, op=MPI.SUM)
    if share > 0:
        stats /= share
    return stats
