"""airi's threads: the one owner of parallelism in airi.

Every parallel region of airi is a call of :func:`run`: :mod:`airi.functional` cuts a
batch into chunks (how many: :mod:`airi._planner`) and :func:`run` hands them to
``airi.get_num_threads()`` threads, the calling thread plus a small pool, while BLAS
runs single-threaded. The compiled kernels are single-threaded (no OpenMP) and, like
NumPy's BLAS and ufuncs, release the GIL, so the threads run them in parallel. Nothing
else starts threads or sets BLAS's thread count during a pass.

Why airi's own threads and not OpenMP or BLAS threads (measurements in
benchmarks/README.md, "Threads"):

* A convolution done as one batched GEMM is N small GEMMs, and multithreaded OpenBLAS
  forks and joins its team for each of them; on a shared machine every join waits for
  a time slice. One chunk per thread with single-threaded BLAS meets once per region.
* OpenMP teams (libgomp) spin after a region and stole the cores from BLAS and from
  airi's threads; the kernels' ``prange`` loops, always run with one thread, are gone.
* The GEMMs are NumPy calls: a compiled chunk pipeline (im2col -> GEMM -> bias under
  one ``nogil``) would need a BLAS callable from C, and NumPy exposes none (SciPy's
  Cython BLAS is not a dependency).

Each thread gets its scratch buffers from :func:`workspace`; they live across calls,
so a training step allocates no large temporary arrays after the first one. BLAS is
capped to one thread through ``threadpoolctl``; without it airi cannot change BLAS's
thread count, so the chunks run one after the other on the calling thread.
"""
import itertools
import math
import os
import threading

import numpy as np

from . import _config

__all__ = ["run", "workspace", "release_workspaces", "workers_available",
           "blas_controllers"]

_lock = threading.RLock()      # one parallel region at a time (they share the buffers)
_team = None                   # the helper threads (see _Team)
_in_region = False             # a region running: a nested run() stays on its thread
_buffers = {}                  # (worker, slot) -> flat uint8 array
_blas = None                   # threadpoolctl controllers of the loaded BLAS libraries


def blas_controllers():
    """threadpoolctl's controllers of the BLAS libraries in use ([] without it)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # not installed, or a library it cannot inspect
            _blas = []
    return _blas


def workers_available():
    """How many threads :func:`run` may use: ``airi.get_num_threads()`` when BLAS can
    be made single-threaded meanwhile, else 1."""
    n = _config.get_num_threads()
    return n if n > 1 and blas_controllers() else 1


class _Team:
    """``helpers`` threads parked on a lock each; :meth:`run` wakes them for one job.

    A region costs a lock release and acquire per helper (~20 us); a
    ThreadPoolExecutor's submit and future cost about three times that, and a LeNet
    training step has some twenty regions."""

    def __init__(self, helpers):
        self.helpers = helpers
        self._go = [threading.Lock() for _ in range(helpers)]
        self._done = [threading.Lock() for _ in range(helpers)]
        for lock in self._go + self._done:
            lock.acquire()
        self._job, self._errors = None, []
        for i in range(helpers):
            threading.Thread(target=self._loop, args=(i,), name=f"airi-{i + 1}",
                             daemon=True).start()

    def _loop(self, i):
        while True:
            self._go[i].acquire()
            job = self._job
            if job is None:                 # stop()
                self._done[i].release()
                return
            try:
                job(i + 1)
            except BaseException as exc:    # re-raised by run() on the calling thread
                self._errors.append(exc)
            finally:
                self._done[i].release()

    def run(self, job, helpers):
        """Run ``job(worker)`` on the calling thread (worker 0) and ``helpers`` helper
        threads (workers 1..helpers); return when all are done."""
        self._job, self._errors = job, []
        for i in range(helpers):
            self._go[i].release()
        try:
            job(0)
        finally:
            for i in range(helpers):
                self._done[i].acquire()
        if self._errors:
            raise self._errors[0]

    def stop(self):
        self._job = None
        for i in range(self.helpers):
            self._go[i].release()
            self._done[i].acquire()


def _team_of(helpers):
    global _team
    if _team is None or _team.helpers < helpers:
        if _team is not None:
            _team.stop()
        _team = _Team(helpers)
    return _team


def _forget_team():
    """In a forked child the helper threads do not exist: start new ones on demand."""
    global _team, _lock, _in_region
    _team, _lock, _in_region = None, threading.RLock(), False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_team)


class _SingleThreadedBlas:
    """Context: every BLAS library runs on one thread; the old counts come back after."""

    def __enter__(self):
        self.saved = [(c, c.get_num_threads()) for c in blas_controllers()]
        for c, n in self.saved:
            if n != 1:
                c.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        for c, n in self.saved:
            if n != 1:
                c.set_num_threads(n)
        return False


def run(fn, n_items, chunk):
    """Call ``fn(worker, start, stop)`` for consecutive chunks of ``range(n_items)``.

    Parameters
    ----------
    fn : callable
        Does the work of items ``start:stop``; ``worker`` (0 .. workers-1) names the
        thread running it, for :func:`workspace`. Chunks must write disjoint outputs;
        per-worker partial results (e.g. weight gradients) are summed by the caller.
    n_items : int
        Usually the batch size N.
    chunk : int
        Items per call of ``fn`` (the last chunk may be shorter).

    Returns
    -------
    int
        The number of workers used (size any per-worker accumulators with
        :func:`workers_available` beforehand).
    """
    global _in_region
    chunk = max(1, int(chunk))
    n_chunks = -(-n_items // chunk)
    workers = min(workers_available(), n_chunks)
    with _lock, _SingleThreadedBlas():
        if workers <= 1 or _in_region:
            for start in range(0, n_items, chunk):
                fn(0, start, min(start + chunk, n_items))
            return 1
        tickets = itertools.count()  # next() is atomic under the GIL: dynamic schedule

        def work(worker):
            for i in iter(tickets.__next__, None):
                if i >= n_chunks:
                    return
                start = i * chunk
                fn(worker, start, min(start + chunk, n_items))

        _in_region = True
        try:
            _team_of(workers - 1).run(work, workers - 1)
        finally:
            _in_region = False
        return workers


def workspace(worker, slot, shape, dtype):
    """A scratch array of ``shape`` and ``dtype`` for ``worker``, reused across calls.

    Only valid inside the ``fn`` of :func:`run` (which holds the lock), until the next
    request of the same ``(worker, slot)``. Contents are undefined (like np.empty).
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    key = (worker, slot)
    buf = _buffers.get(key)
    if buf is None or buf.nbytes < nbytes:
        # 64-byte aligned start, so SIMD loads of the first row are aligned too
        buf = np.empty(nbytes + 64, dtype=np.uint8)
        offset = (-buf.ctypes.data) % 64
        buf = buf[offset:offset + nbytes]
        _buffers[key] = buf
    return buf[:nbytes].view(dtype).reshape(shape)


def release_workspaces():
    """Free every scratch buffer (they are re-created on demand)."""
    with _lock:
        _buffers.clear()
