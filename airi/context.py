"""The Trainer's data-parallel seam: everything that changes when K processes train
together goes through one object, the *training context*.

:class:`TrainingContext` declares the protocol (and is the single-process behaviour);
:class:`LocalContext` is the default, and :class:`airi.distributed.MPIContext`
implements it on MPI. The Trainer calls these methods and nothing else::

    rank, world_size                     ints
    is_main()                            True on the rank that prints and writes files
    shuffle_seed                         seed for the training DataLoader (None: airi's
                                         generator), the same on every rank
    broadcast_parameters(params)         give every rank rank 0's weights (start of fit)
    allreduce_gradients(params, count)   average every Parameter.grad across ranks, each
                                         rank's gradient weighted by its ``count`` samples
    allreduce_sum(values)                float64 array of per-rank sums -> global sums
    should_stop(flag)                    true when any rank asked to stop (Ctrl-C,
                                         SIGTERM): the largest rank's flag (an int,
                                         the signal's number), else 0/False
    gather_rank_state(trainer)           per-rank state stored in rank 0's checkpoint
    restore_rank_state(trainer, saved)   put this rank's share of that state back
"""

__all__ = ["TrainingContext", "LocalContext"]


class TrainingContext:
    """The protocol of a training context, with the single-process behaviour: no
    communication at all. Subclass it and override what differs (see the module doc)."""

    rank = 0
    world_size = 1
    shuffle_seed = None

    def is_main(self):
        """Whether this rank prints and writes files."""
        return True

    def broadcast_parameters(self, params):
        """Copy rank 0's weights to every rank: nothing to do with one process."""

    def allreduce_gradients(self, params, count):
        """Average gradients across ranks: nothing to do with one process."""

    def allreduce_sum(self, values):
        """Per-rank sums (float64 array) -> global sums: the values themselves here."""
        return values

    def should_stop(self, flag):
        """Whether any rank asked to stop: this rank's own flag here."""
        return flag

    def gather_rank_state(self, trainer):
        """Per-rank state for rank 0's checkpoint: None (rank 0's state is the trainer's)."""
        return None

    def restore_rank_state(self, trainer, saved):
        """Put this rank's share of ``saved`` back after a checkpoint was loaded."""


class LocalContext(TrainingContext):
    """The single-process training context (the Trainer's default)."""
