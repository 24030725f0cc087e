"""Start-up: find the MPI launcher, initialise mpi4py, this rank and the number of
ranks, threads per rank, per-rank seeds."""
import os
import sys


from .. import _config

#: Environment variables that MPI launchers set in the processes they start: Open MPI
#: (OMPI_*), PMIx launchers (Open MPI 5, ``srun --mpi=pmix``), MPICH / Intel MPI
#: (PMI_SIZE, MPI_LOCALNRANKS), MVAPICH.
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS",
                      "MV2_COMM_WORLD_SIZE")

#: Seconds a collective may wait for the other ranks before every rank is stopped with
#: a message naming the ranks that did not arrive (``init(timeout=...)``, CLI
#: ``--rank-timeout``).
DEFAULT_TIMEOUT = 600.0


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
        self.timeout = DEFAULT_TIMEOUT
        self.notes = None     # a second duplicate: messages about stalled collectives


_world = _World()


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


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


def _check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not timeout > 0 or timeout != timeout or timeout == float("inf"):
        raise ValueError(f"airi.distributed.init: timeout must be a positive number of "
                         f"seconds, got {timeout!r}")
    return float(timeout)


def init(threads="auto", timeout=None):
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
    timeout : float, optional
        Seconds any collective (gradient allreduce, broadcast, the stop-flag exchange,
        ...) may wait for the other ranks; beyond it every rank stops with one message
        naming the rank(s) that did not arrive (``MPI_Abort``), and the last checkpoint
        written stays intact. None keeps the current value (:data:`DEFAULT_TIMEOUT`,
        600 s, unless set before); a later ``init(timeout=...)`` changes it. Every rank
        should use the same value.

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
    if timeout is not None:
        _world.timeout = _check_timeout(timeout)
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
        # Only the main thread calls MPI; airi's helper threads never do.
        mpi4py.rc.thread_level = "funneled"
    from mpi4py import MPI
    _world.MPI = MPI
    _world.comm = MPI.COMM_WORLD.Dup()     # our own channel: no clash with user code
    _world.notes = MPI.COMM_WORLD.Dup()    # ranks tell each other about a stalled one
    _world.rank = _world.comm.Get_rank()
    _world.size = _world.comm.Get_size()
    _world.initialized = True
    if threads == "auto":
        _set_default_threads()
    elif threads is not None:
        _config.set_num_threads(threads)
    if _world.size > 1:
        from ..layers import normalization
        from .collectives import _allreduce_batchnorm_stats
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
