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

The package is split along its seams: ``startup`` (launcher detection, ``init``, ranks,
threads, seeds), ``collectives`` (barrier, broadcasts, sums), ``reducer`` (the bucketed
gradient allreduce), ``context`` (``MPIContext``, the Trainer's training context) and
``faults`` (consistency checks at start-up, stopping every rank when one fails).
"""
from .startup import (DEFAULT_TIMEOUT, LAUNCHER_VARIABLES, DistributedError, init, launched, is_initialized,
                      rank, size, is_main, world, seed, _world)  # noqa: F401
from .collectives import (DEFAULT_BUCKET_BYTES, barrier, broadcast_object,
                          broadcast_parameters, broadcast_optimizer_state, allreduce_sum,
                          _buckets)  # noqa: F401  (_world, _buckets: for tests)
from .reducer import GradientReducer, allreduce_gradients
from .context import MPIContext, context
from .faults import (check_consistency, data_fingerprint, run_together, abort, fail,
                     abort_on_failure)

__all__ = [
    "init", "launched", "is_initialized", "rank", "size", "is_main", "world",
    "seed", "context", "MPIContext", "GradientReducer",
    "broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
    "allreduce_gradients", "allreduce_sum", "barrier",
    "check_consistency", "run_together", "abort", "abort_on_failure", "fail",
    "DistributedError", "DEFAULT_BUCKET_BYTES", "LAUNCHER_VARIABLES", "data_fingerprint",
    "DEFAULT_TIMEOUT",
]
