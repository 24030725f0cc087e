"""Fault scenarios for tests/test_distributed.py, run under ``mpiexec -n 2``.

``python faults.py MODE OUT_DIR``:

raise     rank 1 raises in epoch 2 (after a checkpoint of epoch 1 was written): every
          rank must stop at once, non-zero, with one message naming rank 1.
nan       rank 1's loss becomes NaN in epoch 2: the same, with the Trainer's message.
mismatch  rank 1 builds a different model: the start-up check fails on every rank
          with one message; exit status 3.
interrupt rank 1 receives Ctrl-C (SIGINT) in epoch 2: every rank stops after that batch
          and rank 0 saves a mid-epoch checkpoint; a new Trainer then resumes from it.
          The result must equal an uninterrupted run exactly (Dropout and random
          shifts draw different numbers on each rank, so each rank's random state must
          survive the checkpoint), weights and every metric of every epoch (each
          rank's running sums of the interrupted epoch too). Writes
          OUT_DIR/interrupt.json.
sigterm   the same with SIGTERM (what batch schedulers send) instead of Ctrl-C; also
          records the signal every rank saw as the reason.
stall     rank 1 sleeps 600 s inside a step of epoch 2 (stuck, not dead, not raising);
          with init(timeout=3) every rank must stop within seconds, with one message
          naming rank 1, and the checkpoint of epoch 1 intact.
"""
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

import airi
from airi import distributed
from airi.data import RandomShift
from airi.layers import BatchNorm2D, Conv2D, Dropout, Flatten, Linear, MaxPool2D, Relu

EPOCHS = 3


def make_model(hidden=16):
    return airi.Sequential(Conv2D(1, 4, 3, pad=1, bias=False), BatchNorm2D(4), Relu(),
                           MaxPool2D(2), Flatten(), Linear(4 * 4 * 4, hidden), Relu(),
                           Dropout(0.3), Linear(hidden, 3))


def make_data():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 1, 8, 8)).astype(np.float32)
    return X, rng.integers(0, 3, size=60)


def make_trainer(hidden=16):
    distributed.seed(11)
    model = make_model(hidden)
    parallel = distributed.context()
    X, y = make_data()
    loader = airi.DataLoader(X, y, batch_size=16, seed=2, transform=RandomShift(1),
                             rank=parallel.rank, world_size=parallel.world_size)
    trainer = airi.Trainer(model, airi.CrossEntropyLoss(),
                           airi.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                           parallel=parallel, verbose=False)
    return trainer, loader, (X[:20], y[:20])


class _NaNOnRank1(airi.CrossEntropyLoss):
    """Cross-entropy whose value turns NaN on rank 1 from its 6th call on."""

    calls = 0

    def forward(self, *args, **kwargs):
        loss = super().forward(*args, **kwargs)
        _NaNOnRank1.calls += 1
        if distributed.rank() == 1 and _NaNOnRank1.calls >= 6:
            return float("nan")
        return loss


def after_step_on_rank1(trainer, epoch, batch, action):
    """A hook running ``action()`` on rank 1 at (epoch, batch) (1-based)."""
    counter = {"step": 0}
    per_epoch = 4          # 60 samples in global batches of 16

    def hook(params):
        counter["step"] += 1
        done_epochs, in_epoch = divmod(counter["step"] - 1, per_epoch)
        if distributed.rank() == 1 and (done_epochs + 1, in_epoch + 1) == (epoch, batch):
            action()
    return hook


def main(mode, out):
    out = Path(out)
    rank, size = distributed.init(timeout=3 if mode == "stall" else None)
    if mode == "mismatch":
        model = make_model(hidden=16 if rank == 0 else 17)
        try:
            distributed.check_consistency(model, data=(60, 1, 8, 8))
        except distributed.DistributedError as exc:
            if rank == 0:
                print(f"faults.py: error: {exc}", file=sys.stderr, flush=True)
            return 3
        return 0

    with distributed.abort_on_failure("faults.py"):
        trainer, loader, val = make_trainer()
        checkpoint = out / "checkpoint.pkl"
        if mode == "raise":
            def boom():
                raise RuntimeError("injected failure on purpose")
            trainer.after_backward.append(after_step_on_rank1(trainer, 2, 2, boom))
        elif mode == "nan":
            if hasattr(trainer.loss, "forward"):
                trainer.loss = _NaNOnRank1()
        elif mode in ("interrupt", "sigterm"):
            signum = signal.SIGINT if mode == "interrupt" else signal.SIGTERM
            trainer.after_backward.append(after_step_on_rank1(
                trainer, 2, 2, lambda: os.kill(os.getpid(), signum)))
        elif mode == "stall":
            import time
            trainer.after_backward.append(after_step_on_rank1(
                trainer, 2, 2, lambda: time.sleep(600)))
        trainer.fit(loader, EPOCHS, val=val, checkpoint_path=checkpoint)
        if mode not in ("interrupt", "sigterm"):
            return 0
        stopped = trainer.stop_reason
        signals = distributed.world().allgather(int(trainer.stop_signal or 0))
        # Resume in a fresh Trainer and finish; then an uninterrupted reference run.
        distributed.barrier()      # rank 0 has written the checkpoint before anyone reads
        resumed, loader2, _ = make_trainer()
        resumed.load_checkpoint(checkpoint)
        resumed.fit(loader2, EPOCHS, val=val, checkpoint_path=out / "resumed.pkl")
        reference, loader3, _ = make_trainer()
        reference.fit(loader3, EPOCHS, val=val)
        a, b = resumed.model.state_dict(), reference.model.state_dict()
        diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)

        def metrics(history):    # everything but the timings
            return [{k: v for k, v in r.items()
                     if k not in ("seconds", "images_per_second")} for r in history]
        if rank == 0:
            (out / "interrupt.json").write_text(json.dumps(
                {"stop_reason": stopped, "max_abs_difference": diff,
                 "signals": signals,
                 "history_equal": metrics(resumed.history) == metrics(reference.history),
                 "resumed": metrics(resumed.history),
                 "reference": metrics(reference.history)}))
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
