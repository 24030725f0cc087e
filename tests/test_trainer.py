"""Trainer: fit/evaluate/predict, callbacks, NaN stop, Ctrl-C, exact resume."""
import os
import signal

import numpy as np
import pytest

import airi
from airi import models
from airi.data import DataLoader
from airi.layers import Dropout, Flatten, Linear, Relu
from airi.losses import CrossEntropyLoss
from airi.lr_scheduler import StepLR
from airi.sequential import Sequential
from airi.optim import SGD, Adam
from airi.trainer import (Callback, EarlyStopping, LocalContext, ModelCheckpoint, Trainer,
                          TrainingError)

RECORD_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
               "seconds", "images_per_second", "lr"}


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def blobs():
    """Three Gaussian blobs in 4-D (float64): 90 training and 30 validation samples."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, size=(3, 4))

    def sample(n):
        y = np.arange(n) % 3
        return centres[y] + rng.normal(0, 1.0, size=(n, 4)), y.astype(np.int64)

    return sample(90), sample(30)


def small_model(dropout=False):
    layers = [Flatten(), Linear(4, 16, dtype=np.float64), Relu()]
    if dropout:
        layers.append(Dropout(0.2))
    layers.append(Linear(16, 3, dtype=np.float64))
    return Sequential(*layers)


def make_trainer(seed=0, lr=0.05, dropout=False, scheduler=True, verbose=False):
    airi.seed(seed)
    model = small_model(dropout)
    opt = SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = StepLR(opt, step_size=2, gamma=0.5) if scheduler else None
    return Trainer(model, CrossEntropyLoss(), opt, sched, verbose=verbose)


def weights(model):
    return [p.data.copy() for p in model.parameters()]


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


class RecordWeights(Callback):
    """Keeps a copy of the weights after every epoch (by epoch number)."""

    def __init__(self):
        self.by_epoch = {}

    def on_epoch_end(self, trainer, record):
        self.by_epoch[record["epoch"]] = weights(trainer.model)


class SigintAt:
    """Wraps a DataLoader; sends SIGINT to this process as batch ``batch`` (1-based) of
    epoch ``epoch`` (counted by this wrapper) is handed out."""

    def __init__(self, loader, epoch, batch):
        self.loader, self.epoch, self.batch = loader, epoch, batch
        self.epochs_started = 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.epochs_started += 1
        for i, item in enumerate(self.loader, start=1):
            if self.epochs_started == self.epoch and i == self.batch:
                os.kill(os.getpid(), signal.SIGINT)
            yield item

    def __getattr__(self, name):      # state_dict/load_state_dict when the loader has them
        return getattr(self.loader, name)


class NaNLossAt(CrossEntropyLoss):
    """Cross-entropy that returns NaN on its ``call``-th training call."""

    def __init__(self, call):
        super().__init__()
        self.call, self.calls = call, 0

    def forward(self, logits, target):
        value = super().forward(logits, target)
        if len(target) == 10:          # training batches only (validation uses 256)
            self.calls += 1
            if self.calls == self.call:
                return float("nan")
        return value


# ------------------------------------------------------------------ basics
def test_fit_on_tuples_learns_and_fills_history(blobs):
    train, val = blobs
    trainer = make_trainer()
    history = trainer.fit(train, epochs=6, val=val, batch_size=16)
    assert history is trainer.history and len(history) == 6
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    for record in history:
        assert set(record) == RECORD_KEYS
        assert 0.0 <= record["train_accuracy"] <= 1.0
        assert 0.0 <= record["val_accuracy"] <= 1.0
        assert record["seconds"] > 0 and record["images_per_second"] > 0
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] >= 0.9
    # StepLR(step_size=2, gamma=0.5): the rate used in each epoch
    assert [r["lr"] for r in history] == [0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125]
    assert trainer.epoch == 6 and trainer.stop_reason == "completed"


def test_fit_on_a_dataloader_matches_the_same_loader_built_from_a_tuple(blobs):
    train, val = blobs
    a = make_trainer(seed=3)
    a.fit(train, epochs=2, batch_size=10)
    b = make_trainer(seed=3)
    b.fit(DataLoader(*train, batch_size=10), epochs=2)
    assert_same_weights(weights(a.model), weights(b.model))
    assert b.history[0]["val_loss"] is None and b.history[0]["val_accuracy"] is None


def test_evaluate_and_predict(blobs):
    train, val = blobs
    trainer = make_trainer()
    trainer.fit(train, epochs=3, batch_size=16)
    X, y = val
    scores = trainer.predict(X, batch_size=7)
    assert scores.shape == (30, 3) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, trainer.model.forward(X, training=False))
    result = trainer.evaluate((X, y), batch_size=7)
    assert result["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == y))
    assert result["loss"] == pytest.approx(CrossEntropyLoss()(scores, y))
    assert result["samples"] == 30
    same = trainer.evaluate(DataLoader(X, y, batch_size=11, shuffle=False))
    assert same["loss"] == pytest.approx(result["loss"])
    assert same["accuracy"] == result["accuracy"]


def test_evaluate_and_predict_use_eval_mode():
    airi.seed(0)
    model = Sequential(Flatten(), Dropout(0.5), Linear(4, 3, dtype=np.float64))
    trainer = Trainer(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1),
                      verbose=False)
    X = np.ones((5, 4))
    np.testing.assert_array_equal(trainer.predict(X), trainer.predict(X))


def test_bad_inputs_raise_clear_errors(blobs):
    (X, y), _ = blobs
    trainer = make_trainer()
    with pytest.raises(ValueError, match="90 samples but y has 89"):
        trainer.fit((X, y[:-1]), epochs=1)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        trainer.fit((X, y), epochs=0)
    with pytest.raises(TypeError, match="DataLoader"):
        trainer.fit(42, epochs=1)


@pytest.mark.parametrize("val_of, message", [
    (lambda X, y: (X, y[:-1]), "validation X has 30 samples but y has 29"),
    (lambda X, y: (X[:0], y[:0]), "validation data is empty"),
    (lambda X, y: (X, y.astype(np.float64)), "validation labels must be integer class "
                                            "indices for CrossEntropyLoss, got dtype float64"),
    (lambda X, y: (X, np.eye(3, dtype=np.int64)[y]), r"validation labels must have shape "
                                                     r"\(N,\)"),
    (lambda X, y: (X, y - 1), "validation labels must be >= 0"),
    (lambda X, y: DataLoader(X, y.astype(np.float32), batch_size=8), "must be integer"),
    (lambda X, y: [], "validation data is empty"),
    (lambda X, y: 42, "validation data must be a DataLoader"),
])
def test_fit_checks_val_before_the_first_epoch(blobs, val_of, message):
    train, (X_val, y_val) = blobs
    trainer = make_trainer()
    before = weights(trainer.model)
    with pytest.raises((ValueError, TypeError), match=message):
        trainer.fit(train, epochs=1, val=val_of(X_val, y_val))
    assert trainer.history == [] and trainer.epoch == 0   # nothing was trained
    assert_same_weights(weights(trainer.model), before)


def test_fit_checks_training_labels_for_classification_only(blobs):
    (X, y), _ = blobs
    with pytest.raises(ValueError, match="training labels must be integer class indices"):
        make_trainer().fit((X, y.astype(np.float32)), epochs=1)
    airi.seed(0)
    model = Sequential(Linear(4, 1, dtype=np.float64))
    trainer = Trainer(model, airi.MSELoss(), SGD(model.parameters(), lr=0.01),
                      verbose=False)
    history = trainer.fit((X, y.astype(np.float64)[:, None]), epochs=1,
                          val=(X, y.astype(np.float64)[:, None]))
    assert history[0]["val_loss"] is not None           # float targets are fine for MSE


def test_progress_bar_stays_quiet_when_output_is_not_a_terminal(blobs, capfd, monkeypatch):
    pytest.importorskip("tqdm")
    train, val = blobs
    make_trainer(verbose=True).fit(train, epochs=2, val=val, batch_size=10)
    out, err = capfd.readouterr()           # captured at the file descriptors: no TTY
    assert err == ""
    assert "\r" not in out and "batch/s" not in out and "\u2588" not in out
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.startswith("epoch ") for line in lines)
    assert "val_acc" in lines[0] and "img/s" in lines[0]

    # Control: the same run on a "terminal" does draw a bar (so the test above can fail).
    class FakeTerminal(__import__("io").StringIO):
        def isatty(self):
            return True

    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    make_trainer(verbose=True).fit(train, epochs=1, batch_size=10)
    assert "\r" in terminal.getvalue() and "epoch 1/1" in terminal.getvalue()


def test_fit_counts_epochs_in_total(blobs, capsys):
    train, _ = blobs
    trainer = make_trainer(verbose=True)
    trainer.fit(train, epochs=2)
    trainer.fit(train, epochs=2)
    assert len(trainer.history) == 2
    assert "nothing to do" in capsys.readouterr().out
    trainer.fit(train, epochs=3)
    assert [r["epoch"] for r in trainer.history] == [1, 2, 3]


def test_verbose_prints_one_line_per_epoch(blobs, capsys):
    train, val = blobs
    make_trainer(verbose=True).fit(train, epochs=3, val=val)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch")]
    assert len(lines) == 3
    assert "val_acc" in lines[0] and "img/s" in lines[0]
    make_trainer(verbose=False).fit(train, epochs=2, val=val)
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------ callbacks
def test_model_checkpoint_writes_the_best_model(blobs, tmp_path):
    train, val = blobs
    trainer = make_trainer(lr=0.02)
    recorder = RecordWeights()
    path = tmp_path / "best.pkl"
    best = ModelCheckpoint(path, monitor="val_loss", mode="min")
    trainer.fit(train, epochs=5, val=val, callbacks=[recorder, best], batch_size=30)
    losses = [r["val_loss"] for r in trainer.history]
    assert best.best_epoch == int(np.argmin(losses)) + 1
    assert best.best == min(losses)
    saved = airi.load(path)
    assert_same_weights(weights(saved), recorder.by_epoch[best.best_epoch])


def test_model_checkpoint_complains_about_a_missing_metric(blobs, tmp_path):
    train, _ = blobs
    with pytest.raises(ValueError, match="val_accuracy.*pass val="):
        make_trainer().fit(train, epochs=1,
                           callbacks=[ModelCheckpoint(tmp_path / "m.pkl")])


def test_early_stopping_stops_and_restores_the_best_weights(blobs):
    train, val = blobs
    trainer = make_trainer()
    recorder = RecordWeights()
    # The training loss falls every epoch, so "max" makes epoch 1 the best for ever.
    stopper = EarlyStopping(monitor="train_loss", mode="max", patience=2)
    trainer.fit(train, epochs=20, val=val, callbacks=[recorder, stopper])
    assert len(trainer.history) == 3            # epoch 1, then 2 without improvement
    assert stopper.stopped_epoch == 3 and stopper.best_epoch == 1
    assert trainer.stop_reason == "early_stopping"
    assert_same_weights(weights(trainer.model), recorder.by_epoch[1])


def test_early_stopping_keeps_going_while_improving(blobs):
    train, val = blobs
    trainer = make_trainer()
    stopper = EarlyStopping(monitor="train_loss", patience=1)
    trainer.fit(train, epochs=5, val=val, callbacks=[stopper])
    assert len(trainer.history) == 5 and stopper.stopped_epoch is None


# ------------------------------------------------------------------ failures
def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(blobs,
                                                                           tmp_path):
    train, _ = blobs
    trainer = make_trainer()
    trainer.loss = NaNLossAt(call=9 + 3)       # 9 batches per epoch: epoch 2, batch 3
    recorder = RecordWeights()
    path = tmp_path / "checkpoint.pkl"
    with pytest.raises(TrainingError, match=r"epoch 2, batch 3/9") as info:
        trainer.fit(train, epochs=4, batch_size=10, callbacks=[recorder],
                    checkpoint_path=path)
    assert isinstance(info.value, FloatingPointError)
    assert info.value.epoch == 2 and info.value.batch == 3
    assert "nan" in str(info.value) and str(path) in str(info.value)
    saved = airi.load(path)
    assert saved["epoch"] == 1
    assert_same_weights(weights(saved["model"]), recorder.by_epoch[1])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_stops_after_the_batch_and_saves_a_checkpoint(blobs, tmp_path, capsys):
    train, _ = blobs
    trainer = make_trainer(verbose=True)
    before = signal.getsignal(signal.SIGINT)
    loader = SigintAt(DataLoader(*train, batch_size=10), epoch=2, batch=4)
    path = tmp_path / "checkpoint.pkl"
    history = trainer.fit(loader, epochs=5, checkpoint_path=path)
    assert trainer.stop_reason == "interrupted"
    assert len(history) == 1 and trainer.epoch == 1
    assert signal.getsignal(signal.SIGINT) is before
    saved = airi.load(path)
    assert saved["epoch"] == 1
    assert saved["partial_epoch"]["batch"] == 4
    assert_same_weights(weights(saved["model"]), weights(trainer.model))
    out = capsys.readouterr()
    assert "epoch 2 after batch 4" in out.out and "Ctrl-C" in out.err


# ------------------------------------------------------------------ resuming
def run_uninterrupted(train, val, epochs):
    trainer = make_trainer(dropout=True)
    trainer.fit(DataLoader(*train, batch_size=10), epochs=epochs, val=val)
    return trainer


def resume(path, train, val, epochs):
    # A different seed: everything random must come from the checkpoint.
    trainer = make_trainer(seed=123, dropout=True)
    trainer.load_checkpoint(path)
    trainer.fit(DataLoader(*train, batch_size=10), epochs=epochs, val=val)
    return trainer


def test_resume_after_k_epochs_is_bit_identical(blobs, tmp_path):
    train, val = blobs
    full = run_uninterrupted(train, val, epochs=5)
    path = tmp_path / "checkpoint.pkl"
    first = make_trainer(dropout=True)
    first.fit(DataLoader(*train, batch_size=10), epochs=2, val=val, checkpoint_path=path)
    resumed = resume(path, train, val, epochs=5)
    assert_same_weights(weights(resumed.model), weights(full.model))
    assert resumed.optimizer.lr == full.optimizer.lr
    assert [r["train_loss"] for r in resumed.history] == \
        [r["train_loss"] for r in full.history]
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]


def test_resume_after_ctrl_c_mid_epoch_is_bit_identical(blobs, tmp_path):
    train, val = blobs
    full = run_uninterrupted(train, val, epochs=4)
    path = tmp_path / "checkpoint.pkl"
    first = make_trainer(dropout=True)
    first.fit(SigintAt(DataLoader(*train, batch_size=10), epoch=3, batch=5), epochs=4,
              val=val, checkpoint_path=path)
    assert first.stop_reason == "interrupted" and first.epoch == 2
    resumed = resume(path, train, val, epochs=4)
    assert_same_weights(weights(resumed.model), weights(full.model))
    assert [r["train_loss"] for r in resumed.history] == \
        [r["train_loss"] for r in full.history]


def test_resume_replays_a_plain_iterable_mid_epoch(blobs, tmp_path):
    """A loader without state_dict: the epoch is replayed from its saved start."""
    train, val = blobs

    class Plain:   # only __iter__/__len__, randomness from airi's generator
        def __init__(self, X, y):
            self.X, self.y = X, y

        def __len__(self):
            return 9

        def __iter__(self):
            order = airi._config.get_rng().permutation(len(self.X))
            for i in range(0, 90, 10):
                yield self.X[order[i:i + 10]], self.y[order[i:i + 10]]

    full = make_trainer(dropout=True)
    full.fit(Plain(*train), epochs=3)
    path = tmp_path / "checkpoint.pkl"
    first = make_trainer(dropout=True)
    first.fit(SigintAt(Plain(*train), epoch=2, batch=6), epochs=3, checkpoint_path=path)
    assert first.stop_reason == "interrupted"
    resumed = make_trainer(seed=7, dropout=True)
    resumed.load_checkpoint(path)
    resumed.fit(Plain(*train), epochs=3)
    assert_same_weights(weights(resumed.model), weights(full.model))


def test_load_checkpoint_restores_state_and_rejects_other_files(blobs, tmp_path):
    train, _ = blobs
    trainer = make_trainer()
    trainer.fit(train, epochs=3)
    path = trainer.save_checkpoint(tmp_path / "c.pkl")
    other = make_trainer(seed=5)
    state = other.load_checkpoint(path)
    assert other.epoch == 3 and other.history == trainer.history
    assert other.optimizer.lr == trainer.optimizer.lr
    assert other.scheduler.last_epoch == 3
    assert state["airi_version"] == airi.__version__
    assert_same_weights(weights(other.model), weights(trainer.model))
    airi.save(trainer.model, tmp_path / "model.pkl")
    with pytest.raises(ValueError, match="not a Trainer checkpoint"):
        other.load_checkpoint(tmp_path / "model.pkl")
    bigger = Trainer(models.two_layer(4, 32, 3), CrossEntropyLoss(),
                     SGD(models.two_layer(4, 32, 3).parameters(), lr=0.1))
    with pytest.raises(ValueError, match="does not match this model"):
        bigger.load_checkpoint(path)


# ------------------------------------------------------------------ parallel seam
class SpyContext(LocalContext):
    """A stand-in for the MPI context: counts the collective calls."""

    def __init__(self, main=True):
        self.main, self.grad_calls, self.sum_calls, self.counts = main, 0, 0, []

    def is_main(self):
        return self.main

    def allreduce_gradients(self, params, count):
        assert all(p.grad is not None for p in params)
        self.grad_calls += 1
        self.counts.append(count)

    def allreduce_sum(self, values):
        self.sum_calls += 1
        return values


def test_parallel_seam_is_called_every_step_and_only_rank0_writes(blobs, tmp_path,
                                                                  capsys):
    train, val = blobs
    airi.seed(0)
    model = small_model()
    spy = SpyContext(main=False)
    trainer = Trainer(model, CrossEntropyLoss(), Adam(model.parameters()), parallel=spy)
    hook_calls = []
    trainer.after_backward.append(lambda params: hook_calls.append(len(params)))
    trainer.fit(train, epochs=2, val=val, batch_size=40, checkpoint_path=tmp_path / "c.pkl",
                callbacks=[ModelCheckpoint(tmp_path / "m.pkl")])
    assert spy.grad_calls == 6 and spy.counts == [40, 40, 10] * 2
    assert hook_calls == [4] * 6
    assert spy.sum_calls == 4           # train and val sums, per epoch
    assert not (tmp_path / "c.pkl").exists() and not (tmp_path / "m.pkl").exists()
    assert capsys.readouterr().out == ""


def test_regression_with_mse_has_no_accuracy():
    """Seed 002: y = 5 + 3x + noise fitted by a Linear layer and MSELoss."""
    from airi.losses import MSELoss
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(200, 1))
    y = 5 + 3 * x + rng.normal(0, 0.1, size=(200, 1))
    airi.seed(0)
    model = Sequential(Linear(1, 1, dtype=np.float64))
    trainer = Trainer(model, MSELoss(), SGD(model.parameters(), lr=0.1), verbose=False)
    history = trainer.fit((x, y), epochs=30, val=(x, y), batch_size=20)
    assert history[-1]["train_accuracy"] is None and history[-1]["val_accuracy"] is None
    assert history[-1]["val_loss"] < 0.02
    np.testing.assert_allclose([model[0].b.data[0], model[0].W.data[0, 0]], [5, 3],
                               atol=0.1)
    assert trainer.evaluate((x, y))["accuracy"] is None


class _Log:
    """Stands in for a Trainer in ModelCheckpoint.on_epoch_end (save is stubbed)."""

    def __init__(self):
        self.lines = []

    def _log(self, line):
        self.lines.append(line)


@pytest.mark.parametrize("tie_breaker, expected_epoch", [(None, 2), ("val_loss", 4)])
def test_model_checkpoint_tie_breaker(tmp_path, tie_breaker, expected_epoch, monkeypatch):
    """Epochs tying on the monitored accuracy go to the lower val_loss with a
    tie-breaker; without one the first epoch of the tie stays; a worse accuracy never
    wins, however low its loss."""
    best = ModelCheckpoint(tmp_path / "m.pkl", monitor="val_accuracy",
                           tie_breaker=tie_breaker)
    saved = []
    monkeypatch.setattr(best, "_save", lambda trainer: saved.append(True))
    trainer = _Log()
    records = [(0.90, 0.50), (0.99, 0.30), (0.99, 0.35), (0.99, 0.10), (0.98, 0.01)]
    for epoch, (acc, loss) in enumerate(records, start=1):
        best.on_epoch_end(trainer, {"epoch": epoch, "val_accuracy": acc,
                                    "val_loss": loss})
    assert best.best_epoch == expected_epoch and best.best == 0.99
    assert len(saved) == (3 if tie_breaker else 2)
    if tie_breaker:
        assert best.best_tie == 0.10 and "tied at 0.99000" in trainer.lines[-1]
        restored = ModelCheckpoint(tmp_path / "m.pkl", tie_breaker="val_loss")
        restored.load_state_dict(best.state_dict())
        assert (restored.best, restored.best_epoch, restored.best_tie) == (0.99, 4, 0.10)
