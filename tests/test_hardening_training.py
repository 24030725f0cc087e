"""Issue 16 items 6, 9 and 10: SIGTERM, NaN/inf diagnosis and tampered checkpoints, each
reproduced and now handled (the MPI items are in tests/test_distributed.py)."""
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import airi
from airi.layers import Dropout, Linear, Relu
from airi.trainer import TrainingError, TrainingWarning

ROOT = Path(__file__).resolve().parent.parent
TIMING = ("seconds", "images_per_second")


def without_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def make_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)


def make_trainer(lr=0.05):
    airi.seed(3)
    model = airi.Sequential(Linear(6, 16), Relu(), Dropout(0.2), Linear(16, 3))
    opt = airi.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = airi.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return airi.Trainer(model, airi.CrossEntropyLoss(), opt, sched, verbose=False)


def loader_for(X, y):
    return airi.DataLoader(X, y, batch_size=16, seed=5)


def signal_at(trainer, epoch, batch, signum):
    """after_backward hook sending ``signum`` to this process at (epoch, batch)."""
    state = {"step": 0}
    per_epoch = 8                      # 120 samples, batches of 16

    def hook(params):
        state["step"] += 1
        done, inside = divmod(state["step"] - 1, per_epoch)
        if (done + 1, inside + 1) == (epoch, batch):
            os.kill(os.getpid(), signum)
    trainer.after_backward.append(hook)


# ----------------------------------------------------------------- 6. SIGTERM
@pytest.mark.parametrize("where", [(2, 3), (2, 8)], ids=["mid-epoch", "epoch-end"])
def test_sigterm_stops_after_the_batch_and_resumes_exactly(tmp_path, where):
    X, y = make_data()
    reference = make_trainer()
    reference.fit(loader_for(X, y), 3)

    trainer = make_trainer()
    signal_at(trainer, *where, signal.SIGTERM)
    checkpoint = tmp_path / "ck.pkl"
    trainer.fit(loader_for(X, y), 3, checkpoint_path=checkpoint)
    assert trainer.stop_reason == "interrupted"
    assert trainer.stop_signal == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # handler restored

    resumed = make_trainer()
    resumed.load_checkpoint(checkpoint)
    resumed.fit(loader_for(X, y), 3)
    assert without_timing(resumed.history) == without_timing(reference.history)
    for a, b in zip(resumed.model.parameters(), reference.model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def cli(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT), AIRI_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "airi.train", *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


RUN = ["--limit", "400", "--model", "two_layer", "--backend", "numpy", "--batch-size",
       "20", "--schedule", "step", "--val-split", "0.1"]


def test_cli_sigterm_exits_143_with_a_checkpoint_and_resume_equals_a_straight_run(
        tmp_path):
    # 8 epochs: the signal, sent when epoch 1 is reported, lands well before the end
    straight = cli("--epochs", "8", "--out", tmp_path / "straight", "--quiet", *RUN)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()

    run = cli("--epochs", "8", "--out", tmp_path / "run", *RUN)
    try:
        for line in run.stdout:
            if line.startswith("epoch 1/"):
                run.send_signal(signal.SIGTERM)
                break
        stdout, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 143, stderr
    assert "Traceback" not in stdout + stderr
    assert "SIGTERM" in stdout and "--resume" in stdout
    checkpoint = tmp_path / "run" / "checkpoint.pkl"
    assert 1 <= airi.load(checkpoint)["epoch"] < 8

    resumed = cli("--resume", checkpoint, "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a = airi.load(tmp_path / "straight" / "checkpoint.pkl")
    b = airi.load(checkpoint)
    assert without_timing(a["history"]) == without_timing(b["history"])
    for p, q in zip(a["model"].parameters(), b["model"].parameters()):
        np.testing.assert_array_equal(p.data, q.data)


# ---------------------------------------------------- 9. NaN/inf: data or divergence
def test_nan_in_the_inputs_is_blamed_on_the_data_with_the_sample(tmp_path):
    X, y = make_data()
    X[37, 2] = np.nan
    trainer = make_trainer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no NumPy RuntimeWarning either
        with pytest.raises(TrainingError) as info:
            trainer.fit(loader_for(X, y), 2)
    error = info.value
    assert error.cause == "data" and error.sample == 37
    assert "sample 37 of the training data" in str(error)
    assert "learning rate" not in str(error)


def test_inf_in_the_inputs_too(tmp_path):
    X, y = make_data()
    X[5] = np.inf
    with pytest.raises(TrainingError, match="sample 5 of the training data"):
        make_trainer().fit((X, y), 1, batch_size=16)


def test_a_diverging_run_is_blamed_on_the_learning_rate():
    X, y = make_data()
    trainer = make_trainer(lr=1e30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(TrainingError) as info:
            trainer.fit(loader_for(X, y), 3)
    assert info.value.cause == "divergence"
    assert "diverged" in str(info.value) and "smaller learning rate than 1e+30" in str(
        info.value)


class ExplodingLoss(airi.CrossEntropyLoss):
    """Cross-entropy times 1e20 from the 5th call on: finite, but exploding."""

    calls = 0

    def forward(self, pred, target):
        ExplodingLoss.calls += 1
        loss = super().forward(pred, target)
        return loss * 1e20 if ExplodingLoss.calls >= 5 else loss


def test_an_exploding_loss_warns_once():
    X, y = make_data()
    trainer = make_trainer()
    ExplodingLoss.calls = 0
    trainer.loss = ExplodingLoss()
    with pytest.warns(TrainingWarning, match="exploded") as record:
        trainer.fit(loader_for(X, y), 2)
    assert len([w for w in record if issubclass(w.category, TrainingWarning)]) == 1


def test_cli_shows_no_raw_numpy_warnings_and_one_line_per_warning(tmp_path):
    run = cli("--epochs", "2", "--out", tmp_path / "run", "--optimizer", "adam",
              "--lr", "1e4", "--quiet", *RUN)
    stdout, stderr = run.communicate(timeout=300)
    assert "RuntimeWarning" not in stderr and "warnings.warn" not in stderr
    warning_lines = [line for line in stderr.splitlines() if "warning:" in line]
    for line in stderr.splitlines():
        assert line.startswith(("python -m airi.train:", "airi")) or not line.strip(), \
            stderr
    if run.returncode == 0:
        assert any("exploded" in line for line in warning_lines), stderr
    else:
        assert run.returncode == 1 and "loss became" in stderr


# ------------------------------------------------------- 10. tampered checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    X, y = make_data()
    folder = tmp_path_factory.mktemp("ck")
    trainer = make_trainer()
    signal_at(trainer, 2, 3, signal.SIGINT)        # a mid-epoch checkpoint
    trainer.fit(loader_for(X, y), 3, checkpoint_path=folder / "ck.pkl")
    return airi.load(folder / "ck.pkl")


def tamper(state, path, **changes):
    state = dict(state)
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            state[outer] = dict(state[outer], **{inner: value})
        else:
            state[key] = value
    airi.save(state, path)
    return path


TAMPERED = [
    ({"epoch": -5}, "'epoch'"),
    ({"epoch": "1"}, "'epoch'"),
    ({"epoch": 7}, "'history'"),
    ({"history": "x"}, "'history'"),
    ({"rng_state": {"bit_generator": "PCG64", "state": 3}}, "'rng_state'"),
    ({"partial_epoch.batch": 0}, "partial_epoch.batch"),
    ({"partial_epoch.batch": 10 ** 15}, "partial_epoch.batch"),
    ({"partial_epoch.sums": [float("nan"), 0.0, 1.0]}, "partial_epoch.sums"),
    ({"optimizer_hyperparameters": {"lr": "fast"}}, "optimizer_hyperparameters"),
    ({"world_size": 0}, "'world_size'"),
    ({"version": 99}, "'version'"),
]


@pytest.mark.parametrize("changes, field", TAMPERED,
                         ids=[f"{i}" for i in range(len(TAMPERED))])
def test_tampered_checkpoint_fields_are_named(tmp_path, checkpoint, changes, field):
    X, y = make_data()
    path = tamper(checkpoint, tmp_path / "t.pkl", **changes)
    trainer = make_trainer()
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as info:
        trainer.load_checkpoint(path)
        trainer.check_resume(loader_for(X, y))
    assert str(path) in str(info.value) or "checkpoint field" in str(info.value)


def test_tampered_schedule_and_optimizer_state_are_named(tmp_path, checkpoint):
    sched = [dict(checkpoint["scheduler"][0], last_epoch=-5)]
    path = tamper(checkpoint, tmp_path / "s.pkl", scheduler=sched)
    with pytest.raises(ValueError, match=r"StepLR\.last_epoch"):
        make_trainer().load_checkpoint(path)
    opt = dict(checkpoint["optimizer"])
    opt["state"] = {0: dict(opt["state"][0], step=-1)}
    path = tamper(checkpoint, tmp_path / "o.pkl", optimizer=opt)
    with pytest.raises(ValueError, match=r"step of params\[0\]"):
        make_trainer().load_checkpoint(path)


def test_tampered_loader_state_is_named_before_training(tmp_path, checkpoint):
    X, y = make_data()
    loader_state = dict(checkpoint["partial_epoch"]["loader"],
                        order=np.zeros(len(X), dtype=np.int64))
    path = tamper(checkpoint, tmp_path / "l.pkl", **{"partial_epoch.loader": loader_state})
    trainer = make_trainer()
    trainer.load_checkpoint(path)
    with pytest.raises(ValueError, match=r"partial_epoch\.loader.*permutation"):
        trainer.fit(loader_for(X, y), 3)


def test_cli_resume_of_a_tampered_checkpoint_is_one_line(tmp_path):
    out = tmp_path / "run"
    run = cli("--epochs", "1", "--out", out, "--quiet", *RUN)
    assert run.wait(timeout=300) == 0, run.stderr.read()
    state = airi.load(out / "checkpoint.pkl")
    for changes, field in [({"epoch": -5}, "'epoch'"),
                           ({"extra": dict(state["extra"], settings=dict(
                               state["extra"]["settings"], epochs="12"))}, "'epochs'")]:
        tamper(state, out / "checkpoint.pkl", **changes)
        resumed = cli("--resume", out / "checkpoint.pkl", "--epochs", "2")
        stdout, stderr = resumed.communicate(timeout=300)
        assert resumed.returncode == 2, stderr
        assert len(stderr.strip().splitlines()) == 1 and field in stderr, stderr
        assert "Traceback" not in stderr
