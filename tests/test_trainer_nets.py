"""Trainer features of issue 15: per-batch and plateau schedules, gradient clipping,
validation_split, predict, top-k evaluation, CSVLogger, the double-softmax warning,
and nested models trained, saved and resumed."""
import csv
import warnings

import numpy as np
import pytest

import airi
from airi import Sequential
from airi.layers import Flatten, Linear, LogSoftmax, Relu, Softmax
from airi.lr_scheduler import OneCycleLR, ReduceLROnPlateau, StepLR
from airi.trainer import CSVLogger, Trainer


def _data(n=60, seed=0, classes=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, classes, n)
    X[np.arange(n), 0, y, y] += 3.0            # learnable
    return X, y


def _mlp(classes=4):
    airi.seed(1)
    return Sequential(Flatten(), Linear(36, 16), Relu(), Linear(16, classes))


def test_one_cycle_is_stepped_after_every_batch():
    X, y = _data()
    model = _mlp()
    opt = airi.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = airi.DataLoader(X, y, batch_size=16, seed=0)          # 4 batches
    sched = OneCycleLR(opt, max_lr=0.2, epochs=3, steps_per_epoch=len(loader))
    seen = []
    trainer = Trainer(model, airi.CrossEntropyLoss(), opt, sched, verbose=False)
    trainer.after_backward.append(lambda params: seen.append((opt.lr, opt.momentum)))
    trainer.fit(loader, epochs=3)
    assert sched.last_epoch == 12 == len(seen)
    expected = OneCycleLR(airi.optim.SGD(_mlp().parameters(), lr=0.1, momentum=0.9),
                          max_lr=0.2, total_steps=12)
    for lr, momentum in seen:
        assert lr == pytest.approx(expected.optimizer.lr)
        assert momentum == pytest.approx(expected.optimizer.momentum)
        expected.step()


def test_epoch_schedules_still_step_once_per_epoch():
    X, y = _data()
    model = _mlp()
    opt = airi.optim.SGD(model.parameters(), lr=0.1)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    Trainer(model, airi.CrossEntropyLoss(), opt, sched, verbose=False).fit(
        (X, y), epochs=3, batch_size=16)
    assert sched.last_epoch == 3 and opt.lr == pytest.approx(0.1 / 8)


class RecordingPlateau(ReduceLROnPlateau):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fed = []

    def step(self, metrics):
        self.fed.append(metrics)
        super().step(metrics)


@pytest.mark.parametrize("mode, key", [("min", "val_loss"), ("max", "val_accuracy")])
def test_plateau_is_fed_the_monitored_validation_metric(mode, key):
    X, y = _data()
    model = _mlp()
    opt = airi.optim.SGD(model.parameters(), lr=0.05)
    sched = RecordingPlateau(opt, mode=mode, patience=0)
    trainer = Trainer(model, airi.CrossEntropyLoss(), opt, sched, verbose=False)
    history = trainer.fit((X[:40], y[:40]), epochs=3, val=(X[40:], y[40:]), batch_size=16)
    assert sched.fed == [r[key] for r in history]
    # an explicit monitor wins; without validation the training metric is used
    sched2 = RecordingPlateau(opt)
    trainer = Trainer(_mlp(), airi.CrossEntropyLoss(), opt, sched2, verbose=False,
                      monitor="train_accuracy")
    history = trainer.fit((X, y), epochs=2, batch_size=16)
    assert sched2.fed == [r["train_accuracy"] for r in history]
    sched3 = RecordingPlateau(opt)
    history = Trainer(_mlp(), airi.CrossEntropyLoss(), opt, sched3, verbose=False).fit(
        (X, y), epochs=1, batch_size=16)
    assert sched3.fed == [history[0]["train_loss"]]


def test_plateau_lowers_the_rate_when_validation_stalls():
    X, y = _data()
    model = _mlp()
    opt = airi.optim.SGD(model.parameters(), lr=1e-6)          # nothing improves
    sched = ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=0.1)
    Trainer(model, airi.CrossEntropyLoss(), opt, sched, verbose=False).fit(
        (X, y), epochs=4, batch_size=16, validation_split=0.25)
    assert opt.lr == pytest.approx(1e-6 / 8)


def test_clip_grad_norm_in_the_trainer():
    X, y = _data()
    model = _mlp()
    before = [p.data.copy() for p in model.parameters()]
    opt = airi.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, airi.CrossEntropyLoss(), opt, verbose=False,
                      clip_grad_norm=1e-3)
    trainer.train_step(X[:16], y[:16])
    step = np.sqrt(sum(np.sum((p.data.astype(np.float64) - b) ** 2)
                       for p, b in zip(model.parameters(), before)))
    assert trainer.last_grad_norm > 1e-3                      # it was clipped ...
    assert step == pytest.approx(1e-3, rel=1e-3)              # ... to the limit
    with pytest.raises(ValueError, match="clip_grad_norm"):
        Trainer(model, airi.CrossEntropyLoss(), opt, clip_grad_norm=-1)


def test_validation_split_holds_out_the_last_fraction():
    X, y = _data(n=50)
    model = _mlp()
    trainer = Trainer(model, airi.CrossEntropyLoss(),
                      airi.optim.SGD(model.parameters(), lr=0.05), verbose=False)
    history = trainer.fit((X, y), epochs=1, batch_size=8, validation_split=0.1)
    assert len(trainer._train_loader.X) == 45                    # floor(50 * 0.9)
    np.testing.assert_array_equal(trainer._train_loader.X, X[:45])
    last = trainer.evaluate((X[45:], y[45:]))
    assert history[0]["val_loss"] == pytest.approx(last["loss"])
    assert history[0]["val_accuracy"] == pytest.approx(last["accuracy"])
    with pytest.raises(ValueError, match="not both"):
        trainer.fit((X, y), epochs=2, val=(X, y), validation_split=0.1)
    with pytest.raises(ValueError, match="DataLoader"):
        trainer.fit(airi.DataLoader(X, y, batch_size=8), epochs=2, validation_split=0.1)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        trainer.fit((X, y), epochs=2, validation_split=1.0)


def test_predict_and_top_k_evaluation():
    X, y = _data()
    model = _mlp()
    trainer = Trainer(model, airi.CrossEntropyLoss(),
                      airi.optim.Adam(model.parameters(), lr=0.01), verbose=False)
    trainer.fit((X, y), epochs=2, batch_size=16)
    scores = trainer.predict(X, batch_size=7)
    assert scores.shape == (60, 4)
    np.testing.assert_allclose(scores, model.eval()(X), rtol=1e-5, atol=1e-6)
    result = trainer.evaluate((X, y), batch_size=16, top_k=(1, 2, 4))
    assert result["top_1_accuracy"] == pytest.approx(result["accuracy"])
    assert result["top_2_accuracy"] == pytest.approx(
        airi.metrics.top_k_accuracy(scores, y, k=2))
    assert result["top_4_accuracy"] == 1.0
    with pytest.raises(ValueError, match="top_k=5.*4 classes"):
        trainer.evaluate((X, y), top_k=5)


def test_csv_logger_writes_one_row_per_epoch_and_survives_resume(tmp_path):
    X, y = _data()
    path = tmp_path / "history.csv"
    ckpt = tmp_path / "ckpt.airi"
    model = _mlp()
    opt = airi.optim.SGD(model.parameters(), lr=0.05)
    trainer = Trainer(model, airi.CrossEntropyLoss(), opt, verbose=False)
    trainer.fit((X, y), epochs=2, batch_size=16, validation_split=0.2,
                callbacks=[CSVLogger(path)], checkpoint_path=ckpt)
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0])[:5] == ["epoch", "train_loss", "train_accuracy", "val_loss",
                                 "val_accuracy"]
    assert float(rows[1]["val_loss"]) == trainer.history[1]["val_loss"]   # full precision
    # resumed: the file is rewritten with every epoch
    model2 = _mlp()
    opt2 = airi.optim.SGD(model2.parameters(), lr=0.05)
    again = Trainer(model2, airi.CrossEntropyLoss(), opt2, verbose=False)
    again.load_checkpoint(ckpt)
    again.fit((X, y), epochs=3, batch_size=16, validation_split=0.2,
              callbacks=[CSVLogger(path)])
    assert [r["epoch"] for r in csv.DictReader(open(path))] == ["1", "2", "3"]
    # without validation the validation cells are empty
    Trainer(_mlp(), airi.CrossEntropyLoss(), opt, verbose=False).fit(
        (X, y), epochs=1, batch_size=16, callbacks=[CSVLogger(tmp_path / "b.csv", ";")])
    row = next(csv.DictReader(open(tmp_path / "b.csv"), delimiter=";"))
    assert row["val_loss"] == "" and float(row["train_loss"]) > 0


@pytest.mark.parametrize("last, loss_to_use", [(Softmax, "remove the final Softmax"),
                                               (LogSoftmax, "NLLLoss")])
def test_double_softmax_warns_once(last, loss_to_use):
    model = Sequential(_mlp(), last())                   # inside: the last of the last
    opt = airi.optim.SGD(model.parameters(), lr=0.1)
    X, y = _data()
    with pytest.warns(UserWarning, match=loss_to_use) as caught:
        trainer = Trainer(model, airi.CrossEntropyLoss(), opt, verbose=False)
        trainer.fit((X, y), epochs=2, batch_size=16)
    assert len([w for w in caught if "softmax" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(_mlp(), airi.CrossEntropyLoss(), opt, verbose=False)       # logits: fine
        Trainer(Sequential(_mlp(), LogSoftmax()), airi.NLLLoss(), opt, verbose=False)


def _resnet_run(X, y, epochs, checkpoint=None, resume=None):
    airi.seed(0)
    model = airi.models.resnet8(in_channels=1, width=4, num_classes=3)
    opt = airi.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    sched = OneCycleLR(opt, max_lr=0.1, epochs=4, steps_per_epoch=3)
    trainer = Trainer(model, airi.CrossEntropyLoss(), opt, sched, verbose=False,
                      clip_grad_norm=5.0)
    if resume is not None:
        trainer.load_checkpoint(resume)
        assert sched.last_epoch == 6
    trainer.fit((X, y), epochs=epochs, batch_size=16, checkpoint_path=checkpoint)
    return model


def test_a_resnet_trains_saves_and_resumes(tmp_path):
    X, y = _data(n=48, classes=3)
    X = np.repeat(np.repeat(X, 2, axis=2), 2, axis=3)             # (48, 1, 12, 12)
    ckpt = tmp_path / "ckpt.airi"
    _resnet_run(X, y, 2, checkpoint=ckpt)
    resumed = _resnet_run(X, y, 4, resume=ckpt)
    straight = _resnet_run(X, y, 4)
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
    airi.save(straight, tmp_path / "resnet.airi")
    back = airi.load(tmp_path / "resnet.airi")
    np.testing.assert_array_equal(back.eval()(X), straight.eval()(X))
