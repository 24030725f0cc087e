"""Data-parallel training on MPI: ``mpiexec -n K python -m airi.train``.

K copies of the same program run at once; each trains on its own 1/K of every global
batch, and before every optimizer step the gradients are averaged across the copies
(an *allreduce*), so all K models stay identical. This is how Horovod and PyTorch's
DistributedDataParallel train. Communication is MPI through mpi4py
(``pip install "airi[mpi]"``); nothing here speaks a protocol of its own.

Without MPI nothing changes: outside an MPI launcher ``init()`` returns ``(0, 1)``,
mpi4py is never imported, and every function below is a no-op (or the identity).

Typical script (``mpiexec -n 2 python train.py``)::

    import airi
    from airi import distributed as dist

    rank, size = dist.init()                 # (0, 1) without mpiexec
    dist.seed(0)                              # rank r > 0 draws its own dropout masks
    model = airi.models.lenet()
    dist.broadcast_parameters(model)          # every rank starts from rank 0's weights
    loader = airi.DataLoader(X, y, batch_size=64, seed=0,   # the GLOBAL batch
                             rank=rank, world_size=size)
    trainer = airi.Trainer(model, airi.CrossEntropyLoss(),
                           airi.optim.Adam(model.parameters()), parallel=dist.context())
    with dist.abort_on_failure("train.py"):   # one rank fails -> every rank stops
        trainer.fit(loader, epochs=5, val=(X_val, y_val))

Semantics
---------
* The batch size is the **global** batch. Rank r trains on a contiguous shard of every
  batch (``DataLoader(rank=..., world_size=...)``: same shuffle on every rank, shards
  differ in size by at most one sample). Rank r's gradient is the mean over its n_r
  samples; :func:`allreduce_gradients` returns ``sum_r (n_r / n) * grad_r``, exactly the
  mean over the n samples of the global batch that one process would compute.
* BatchNorm uses the statistics of the global batch: :func:`init` installs an allreduce
  as the statistics hook of :mod:`airi.layers.normalization`.
* Evaluation shards the data and sums ``(loss * n, correct, n)`` over the ranks.
* Rank 0 (:func:`is_main`) alone prints and writes files.

Faults
------
MPI collectives wait for every rank, so a rank that dies or leaves early would leave the
others waiting forever. Hence: errors that every rank meets together (bad options,
different models or data on different ranks, see :func:`run_together` and
:func:`check_consistency`) end every rank normally with one message; an error in one
rank only (an exception, a NaN loss, a second Ctrl-C) is printed with the rank's number
and then ``MPI_Abort`` stops the whole job (:func:`abort_on_failure`, and the
``sys.excepthook`` that :func:`init` installs).
"""
import contextlib
import hashlib
import os
import signal
import sys
import traceback

import numpy as np

from . import _config

__all__ = [
    "init", "launched", "is_initialized", "rank", "size", "is_main", "world",
    "seed", "context", "MPIContext", "GradientReducer",
    "broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
    "allreduce_gradients", "allreduce_sum", "barrier",
    "check_consistency", "run_together", "abort", "abort_on_failure", "fail",
    "DistributedError", "DEFAULT_BUCKET_BYTES", "LAUNCHER_VARIABLES", "data_fingerprint",
]

#: Environment variables that MPI launchers set in the processes they start: Open MPI
#: (OMPI_*), PMIx launchers (Open MPI 5, ``srun --mpi=pmix``), MPICH / Intel MPI
#: (PMI_SIZE, MPI_LOCALNRANKS), MVAPICH.
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS",
                      "MV2_COMM_WORLD_SIZE")

#: Gradients are packed into contiguous buffers of about this many bytes; one allreduce
#: per buffer. Large enough that per-call latency does not matter, small enough that a
#: non-blocking reduction of the last layers can start while earlier ones still run.
DEFAULT_BUCKET_BYTES = 2 * 1024 * 1024


class DistributedError(RuntimeError):
    """The ranks disagree (versions, model, data) or one of them failed at start-up.
    Raised on every rank with the same message."""


class _World:
    """What :func:`init` found: the communicator, this rank and the number of ranks."""

    def __init__(self):
        self.initialized = False
        self.MPI = None       # the mpi4py.MPI module, once imported
        self.comm = None      # a private duplicate of COMM_WORLD
        self.rank = 0
        self.size = 1
        self.context = None
        self.bn_share = 0.0   # this rank's share of the batch in the last BatchNorm forward


_world = _World()


# ------------------------------------------------------------------ start-up
def launched():
    """Whether an MPI launcher (``mpiexec``, ``mpirun``, ``srun``) started this process.

    Returns
    -------
    bool
        Judged by the environment variables launchers set (MPI is not imported).
    """
    return any(os.environ.get(name) for name in LAUNCHER_VARIABLES)


def _launcher_size():
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def init(threads="auto"):
    """Join the MPI job this process belongs to; returns ``(rank, size)``.

    Outside an MPI launcher this returns ``(0, 1)`` without importing mpi4py. Calling it
    again returns the same values.

    Parameters
    ----------
    threads : "auto", int or None
        Threads of airi's compiled kernels (and BLAS) in this process. "auto": unless
        the user chose already (``airi.set_num_threads``, ``AIRI_NUM_THREADS``), share
        the cores of each machine among the ranks on it: the cores this process may use
        when the launcher bound each rank to its own cores, else cores / ranks on the
        machine. None leaves the setting alone.

    Returns
    -------
    (int, int)
        This process's rank in [0, size) and the number of processes.

    Raises
    ------
    RuntimeError
        Started by ``mpiexec -n K`` with K > 1 but mpi4py is not installed (K copies
        would each train alone and overwrite each other's files).
    """
    if _world.initialized:
        return _world.rank, _world.size
    if not launched():
        _world.initialized = True
        return 0, 1
    try:
        import mpi4py
    except ImportError:
        k = _launcher_size()
        if k is not None and k > 1:
            raise RuntimeError(
                f"this process was started by an MPI launcher with {k} processes, but "
                "mpi4py is not installed: pip install 'airi[mpi]' (or run without "
                "mpiexec)") from None
        _world.initialized = True
        return 0, 1
    if "mpi4py.MPI" not in sys.modules:
        # Only the main thread calls MPI; the kernels' OpenMP threads never do.
        mpi4py.rc.thread_level = "funneled"
    from mpi4py import MPI
    _world.MPI = MPI
    _world.comm = MPI.COMM_WORLD.Dup()     # our own channel: no clash with user code
    _world.rank = _world.comm.Get_rank()
    _world.size = _world.comm.Get_size()
    _world.initialized = True
    if threads == "auto":
        _set_default_threads()
    elif threads is not None:
        _config.set_num_threads(threads)
    if _world.size > 1:
        from .layers import normalization
        normalization.set_stats_allreduce(_allreduce_batchnorm_stats)
        _install_excepthook()
    return _world.rank, _world.size


def is_initialized():
    """Whether :func:`init` has run (with or without MPI).

    Returns
    -------
    bool
    """
    return _world.initialized


def rank():
    """This process's rank; calls :func:`init` if needed.

    Returns
    -------
    int
        In [0, size()); 0 without MPI.
    """
    return init()[0]


def size():
    """The number of processes K; calls :func:`init` if needed.

    Returns
    -------
    int
        1 without MPI.
    """
    return init()[1]


def is_main():
    """Whether this is rank 0, the rank that prints and writes files.

    Returns
    -------
    bool
        True without MPI.
    """
    return rank() == 0


def world():
    """The MPI communicator airi uses.

    Returns
    -------
    mpi4py.MPI.Comm or None
        A duplicate of COMM_WORLD; None without MPI.
    """
    init()
    return _world.comm


def _set_default_threads():
    """cores / ranks-on-this-machine threads, unless the user set a number already."""
    if _config._num_threads is not None or os.environ.get("AIRI_NUM_THREADS"):
        return
    MPI, comm = _world.MPI, _world.comm
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else list(range(os.cpu_count() or 1))
        sets = [set(s) for s in local.allgather(mine)]
    finally:
        local.Free()
    union = set().union(*sets)
    disjoint = sum(len(s) for s in sets) == len(union)
    # Bound to separate cores (Open MPI does this for K <= 2): use our own cores.
    # Sharing the same cores: split them.
    n = len(mine) if disjoint else len(union) // len(sets)
    _config.set_num_threads(max(1, n))


def _install_excepthook():
    """An uncaught exception in one rank prints (with the rank) and aborts the job, so
    the other ranks do not wait for it in a collective forever."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        try:
            previous(exc_type, exc, tb)
            print(f"[rank {_world.rank} of {_world.size}] uncaught "
                  f"{exc_type.__name__}: {_one_line(exc)}; aborting every rank",
                  file=sys.stderr, flush=True)
        finally:
            _world.comm.Abort(1)

    sys.excepthook = hook


def seed(n):
    """Seed airi's random generator differently on every rank.

    Rank 0 is seeded with ``n`` (as ``airi.seed(n)``: without MPI this *is*
    ``airi.seed``); rank r > 0 with the pair ``(n, r)``. So Dropout masks and random
    augmentation differ between ranks and are reproducible. Initial weights are made
    equal by :func:`broadcast_parameters`; shuffling must be the same on every rank:
    give the ``DataLoader`` its own ``seed``.

    Parameters
    ----------
    n : int
        A non-negative integer, the same on every rank.

    Raises
    ------
    ValueError
        If ``n`` is not a non-negative int (as :func:`airi.seed`).
    """
    _config.seed(n)                 # validates n (a non-negative int)
    r = rank()
    if r > 0:
        _config._reseed([int(n), r])


# ------------------------------------------------------------------ helpers
def _one_line(exc):
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


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


# ------------------------------------------------------------------ gradients
class _Bucket:
    """One contiguous buffer holding the (weighted) gradients of a few parameters,
    plus one slot for the weight, so that the summed weight arrives with the sums."""

    def __init__(self, dtype, params):
        self.dtype = np.dtype(dtype)
        self.params = params
        self.offsets = np.cumsum([0] + [p.size for p in params])
        # float64 weight slot even for float32 gradients would need a second buffer;
        # the weight is a sample count (exact in float32 up to 2**24).
        self.buffer = np.empty(int(self.offsets[-1]) + 1, dtype=self.dtype)
        self.request = None

    def pack(self, weight):
        """Copy ``weight * grad`` of every parameter into the buffer."""
        buf = self.buffer
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            view = buf[lo:hi]
            if p.grad is None:
                view.fill(0)
            elif weight == 1.0:
                view[...] = p.grad.reshape(-1)
            else:
                np.multiply(p.grad.reshape(-1), weight, out=view)
        buf[-1] = weight

    def unpack(self):
        """Divide the sums by the summed weight and store them as the gradients."""
        buf = self.buffer
        total = buf[-1]
        scale = 1.0 / total if total > 0 else 0.0
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            view = buf[lo:hi].reshape(p.shape)
            g = p.grad
            if g is not None and g.flags.writeable and g.flags.c_contiguous \
                    and g.dtype == self.dtype and g.shape == p.shape:
                np.multiply(view, scale, out=g)
            else:
                p.grad = (view * scale).astype(self.dtype, copy=False)


class GradientReducer:
    """Averages the gradients of a fixed list of parameters across the ranks.

    The gradients are packed into a few contiguous buffers (buckets of about
    ``bucket_bytes``, one dtype each, filled from the *last* parameter backwards:
    back-propagation produces those first) and each bucket is summed with one
    ``Allreduce``. Every bucket also carries this rank's weight (its sample count), so
    the weighted mean needs no extra message.

    Parameters
    ----------
    params : iterable of Parameter
    comm : mpi4py communicator, optional
        Default: airi's (see :func:`world`).
    bucket_bytes : int

    Notes
    -----
    Non-blocking use (:meth:`backward`): while back-propagation walks the layers from
    the last to the first, each bucket's ``Iallreduce`` starts as soon as the layers
    owning its parameters are done, overlapping communication with the remaining
    backward work. Measured on one 2-core machine it does not pay (0.9-1.0x of the
    blocking :meth:`reduce`: little to hide, and Open MPI's non-blocking collectives
    only progress inside MPI calls), so the Trainer uses :meth:`reduce`; see
    ``benchmarks/README.md``.
    """

    def __init__(self, params, comm=None, bucket_bytes=DEFAULT_BUCKET_BYTES):
        init()
        self.comm = comm if comm is not None else _world.comm
        self.params = _as_params(params)
        self.bucket_bytes = int(bucket_bytes)
        order = self.params[::-1]
        self.buckets = [_Bucket(dtype, [order[i] for i in positions])
                        for dtype, positions in _buckets(
                            [(p.dtype, p.size) for p in order], self.bucket_bytes)]
        self.key = _params_key(self.params)
        self.reduce_seconds = 0.0   # time spent inside the reduction calls (last step)

    def reduce(self, weight=1.0):
        """Average every ``Parameter.grad`` in place: ``sum_r w_r g_r / sum_r w_r``.

        Parameters
        ----------
        weight : float
            This rank's weight: its number of samples in the step (so the result is
            the mean over the global batch), or 1 for a plain mean.
        """
        import time
        MPI = _world.MPI
        start = time.perf_counter()
        for b in self.buckets:
            b.pack(float(weight))
            if self.comm is not None:
                self.comm.Allreduce(MPI.IN_PLACE, b.buffer, op=MPI.SUM)
            b.unpack()
        self.reduce_seconds = time.perf_counter() - start

    # --- non-blocking: overlap the reduction with back-propagation -------------------
    def backward(self, model, dout, weight=1.0):
        """``model.backward(dout)`` layer by layer, starting each bucket's
        ``Iallreduce`` as soon as its gradients exist; then wait and average.

        Parameters
        ----------
        model : Sequential
        dout : ndarray
            dL/d(output) of the model.
        weight : float
            As for :meth:`reduce`.

        Returns
        -------
        ndarray
            dL/dx of the model's input.
        """
        import time
        MPI = _world.MPI
        owner = {}
        for layer in model.layers:
            for p in _as_params(layer.parameters() if hasattr(layer, "parameters")
                                else []):
                owner.setdefault(id(p), layer)
        waiting = [{id(owner.get(id(p))) for p in b.params} for b in self.buckets]
        started, pending = [False] * len(self.buckets), []
        comm_seconds = 0.0
        for layer in reversed(model.layers):
            dout = layer.backward(dout)
            t = time.perf_counter()
            for i, b in enumerate(self.buckets):
                if started[i]:
                    continue
                waiting[i].discard(id(layer))
                if not waiting[i]:
                    b.pack(float(weight))
                    b.request = self.comm.Iallreduce(MPI.IN_PLACE, b.buffer, op=MPI.SUM)
                    started[i] = True
                    pending.append(b.request)
            if pending:
                MPI.Request.Testall(pending)   # lets MPI move data along
            comm_seconds += time.perf_counter() - t
        t = time.perf_counter()
        for i, b in enumerate(self.buckets):
            if not started[i]:    # parameters outside model.layers (unusual)
                b.pack(float(weight))
                b.request = self.comm.Iallreduce(MPI.IN_PLACE, b.buffer, op=MPI.SUM)
                pending.append(b.request)
        MPI.Request.Waitall(pending)
        for b in self.buckets:
            b.unpack()
            b.request = None
        self.reduce_seconds = comm_seconds + time.perf_counter() - t
        return dout


def _params_key(params):
    return tuple((id(p), p.dtype.str, p.shape) for p in params)


_reducers = {}


def allreduce_gradients(params, count=None):
    """Average every ``Parameter.grad`` across the ranks, in place.

    Parameters
    ----------
    params : model, dict or iterable of Parameter
        Every rank must pass the same parameters in the same order. A missing gradient
        (None) counts as zeros.
    count : int, optional
        This rank's number of samples in the step (its shard of the global batch). The
        result is then ``sum_r (n_r / n) * grad_r``: with each rank's loss the mean over
        its own samples, exactly the gradient of the mean loss over the global batch,
        also when the shards differ in size. None: a plain mean over the ranks.

    Returns
    -------
    None
        Every ``Parameter.grad`` holds the average (unchanged without MPI).
    """
    if size() == 1:
        return
    plist = _as_params(params)
    key = _params_key(plist)
    reducer = _reducers.get(key)
    if reducer is None:
        if len(_reducers) > 8:       # models come and go (tests): keep a few
            _reducers.clear()
        reducer = _reducers[key] = GradientReducer(plist)
    reducer.reduce(1.0 if count is None else float(count))


# ------------------------------------------------------------------ the Trainer's seam
class MPIContext:
    """The Trainer's parallel context on MPI (see :mod:`airi.trainer`).

    ``Trainer(..., parallel=MPIContext())`` (or :func:`context`) makes ``fit`` average
    the gradients over the ranks after every backward pass, shard evaluation, reduce
    the epoch's sums, print and write files on rank 0 only and stop all ranks together
    on Ctrl-C.

    Parameters
    ----------
    bucket_bytes : int
        Size of the gradient buffers (see :class:`GradientReducer`).

    Attributes
    ----------
    rank, world_size : int
    reduce_seconds : float
        Total time spent averaging gradients since creation.
    """

    def __init__(self, bucket_bytes=DEFAULT_BUCKET_BYTES):
        self.rank, self.world_size = init()
        self.bucket_bytes = int(bucket_bytes)
        self.reduce_seconds = 0.0
        self.steps = 0
        self._reducer = None
        self._shuffle_seed = None
        self._resumed_at = None    # (epoch, batch) of the checkpoint this rank loaded
        self._flag = np.zeros(1, dtype=np.int32)

    def is_main(self):
        """Whether this is rank 0 (the rank that prints and writes files)."""
        return self.rank == 0

    def broadcast_parameters(self, params):
        """Every rank takes rank 0's weights (the Trainer calls it as ``fit`` starts).

        Raises
        ------
        DistributedError
            On every rank, when the ranks resumed from different checkpoints.
        """
        if self.world_size == 1:
            return
        everywhere = _world.comm.allgather(self._resumed_at)
        self._resumed_at = None
        if any(w != everywhere[0] for w in everywhere):
            raise DistributedError(
                "the ranks resumed from different checkpoints ((epoch, batch) on each "
                f"rank: {everywhere}); every rank must load the same file, written "
                "before any rank reads it (call airi.distributed.barrier() after saving)")
        broadcast_parameters(params, root=0)

    def allreduce_gradients(self, params, count):
        """Weighted mean of the gradients (weight: this rank's ``count`` samples)."""
        if self.world_size == 1:
            return
        if self._reducer is None or self._reducer.key != _params_key(params):
            self._reducer = GradientReducer(params, bucket_bytes=self.bucket_bytes)
        self._reducer.reduce(float(count))
        self.reduce_seconds += self._reducer.reduce_seconds
        self.steps += 1

    def allreduce_sum(self, values):
        """float64 array of per-rank sums -> the global sums (see :func:`allreduce_sum`)."""
        return allreduce_sum(values)

    def should_stop(self, flag):
        """True on every rank when any rank asked to stop (Ctrl-C on one of them)."""
        if self.world_size == 1:
            return bool(flag)
        self._flag[0] = 1 if flag else 0
        _world.comm.Allreduce(_world.MPI.IN_PLACE, self._flag, op=_world.MPI.MAX)
        return bool(self._flag[0])

    @property
    def shuffle_seed(self):
        """A seed for the training DataLoader, the same on every rank (rank 0 draws it
        from airi's generator once and sends it to the others)."""
        if self._shuffle_seed is None:
            mine = int(_config.get_rng().integers(2 ** 62)) if self.rank == 0 else None
            self._shuffle_seed = broadcast_object(mine)
        return self._shuffle_seed

    # --- checkpoints: every rank's random state travels with rank 0's file ----------
    def gather_rank_state(self, trainer):
        """Collect every rank's random-generator state (and an interrupted epoch's) on
        rank 0; called on every rank right before rank 0 writes a checkpoint."""
        partial = getattr(trainer, "_partial", None)
        mine = {"rng": _config.get_rng_state(),
                "partial_rng": None if partial is None else partial.get("rng"),
                "partial_epoch_start_rng": None if partial is None
                else partial.get("epoch_start_rng")}
        if self.world_size == 1:
            return {"world_size": 1, "ranks": [mine]}
        ranks = _world.comm.gather(mine, root=0)
        return {"world_size": self.world_size, "ranks": ranks} if self.rank == 0 else None

    def restore_rank_state(self, trainer, saved):
        """After ``Trainer.load_checkpoint``: put this rank's own random state back
        (rank 0's is what the trainer restored). A checkpoint from another number of
        ranks keeps rank 0's state on rank 0 and gives rank r > 0 a fresh stream.

        Every rank must load the same checkpoint (checked here: a collective). A script
        that loads a checkpoint its own rank 0 has just written should call
        :func:`barrier` first, so that no rank reads the previous file.
        """
        pending, partial = getattr(trainer, "_pending", None), getattr(trainer, "_partial",
                                                                        None)
        # No collective here (load_checkpoint may run inside run_together): the ranks
        # compare where they resume at the next broadcast_parameters (start of fit).
        self._resumed_at = (int(trainer.epoch),
                            None if partial is None else partial.get("batch"))
        if self.rank == 0:
            return
        if saved and saved.get("world_size") == self.world_size:
            mine = saved["ranks"][self.rank]
        else:
            base = pending.get("rng_state") if pending else None
            stream = np.random.default_rng([int(trainer.epoch), self.rank,
                                            _state_fingerprint(base)])
            state = stream.bit_generator.state
            mine = {"rng": state, "partial_rng": state, "partial_epoch_start_rng": state}
        if pending is not None:
            pending["rng_state"] = mine["rng"]
        _config.set_rng_state(mine["rng"])
        if partial is not None:
            if mine.get("partial_rng") is not None:
                partial["rng"] = mine["partial_rng"]
            if mine.get("partial_epoch_start_rng") is not None:
                partial["epoch_start_rng"] = mine["partial_epoch_start_rng"]


def _state_fingerprint(state):
    return int(hashlib.sha256(repr(state).encode()).hexdigest()[:12], 16)


def context(**kwargs):
    """The parallel context for ``Trainer(parallel=...)``.

    Parameters
    ----------
    **kwargs
        Passed to :class:`MPIContext` when it is created (e.g. ``bucket_bytes``).

    Returns
    -------
    MPIContext or LocalContext
        An :class:`MPIContext` under MPI with more than one rank (created once; later
        calls return the same object), else airi's single-process ``LocalContext``.
    """
    if size() == 1:
        from .trainer import LocalContext
        return LocalContext()
    if _world.context is None:
        _world.context = MPIContext(**kwargs)
    return _world.context


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
    from . import __version__
    mine = {"airi version": __version__}
    if model is not None:
        mine["model architecture"] = _model_fingerprint(model)
    for key, value in facts.items():
        if isinstance(value, dict):     # e.g. settings: compared (and named) one by one
            mine.update({f"{key} {k}": repr(v) for k, v in value.items()})
        else:
            mine[key] = repr(value)
    everyone = _world.comm.allgather(mine)
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
    notes = _world.comm.allgather(None if failure is None else _one_line(failure))
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
