"""The Trainer's training context on MPI (:class:`MPIContext`)."""
import hashlib

import numpy as np

from .. import _config

from ..context import TrainingContext
from .collectives import (allgather_object, allreduce_inplace, allreduce_sum,
                          broadcast_object, broadcast_parameters)
from .reducer import DEFAULT_BUCKET_BYTES, GradientReducer, _params_key
from .startup import DistributedError, _world, init, size


# ------------------------------------------------------------------ the Trainer's seam
class MPIContext(TrainingContext):
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
        everywhere = allgather_object(self._resumed_at, "start of training")
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
        """A true value on every rank when any rank asked to stop (Ctrl-C or SIGTERM on
        one of them): the largest flag of the ranks (the Trainer's flag is the number of
        the signal that asked, so SIGTERM wins over SIGINT), else 0."""
        if self.world_size == 1:
            return int(flag)
        self._flag[0] = int(flag) if flag else 0
        allreduce_inplace(self._flag, _world.MPI.MAX, "exchange of the stop flag after a "
                          "batch")
        return int(self._flag[0])

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
        # An interrupted epoch's running sums (loss, correct, samples) are this rank's
        # own: each rank keeps adding to its own after --resume, so the epoch's metrics
        # come out bit-identical to an uninterrupted run.
        mine = {"rng": _config.get_rng_state(),
                "partial_rng": None if partial is None else partial.get("rng"),
                "partial_epoch_start_rng": None if partial is None
                else partial.get("epoch_start_rng"),
                "partial_sums": None if partial is None else partial.get("sums")}
        if self.world_size == 1:
            return {"world_size": 1, "ranks": [mine]}
        ranks = allgather_object(mine, "collection of the ranks' checkpoint state")
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
        same_ranks = bool(saved) and saved.get("world_size") == self.world_size
        if partial is not None and not same_ranks:
            # Another number of ranks: the shards differ anyway; keep the epoch's totals
            # right (rank 0 carries every saved rank's sums, the others start at 0).
            sums = [r.get("partial_sums") for r in (saved or {}).get("ranks", [])]
            if sums and all(s is not None for s in sums):
                total = [float(sum(column)) for column in zip(*sums)]
            else:
                total = partial.get("sums")
            partial["sums"] = total if self.rank == 0 else [0.0] * len(total)
        if self.rank == 0:
            return
        if same_ranks:
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
            if same_ranks and mine.get("partial_sums") is not None:
                partial["sums"] = mine["partial_sums"]


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
        from ..context import LocalContext
        return LocalContext()
    if _world.context is None:
        _world.context = MPIContext(**kwargs)
    return _world.context
