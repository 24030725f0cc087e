"""``python -m airi.train``: a short run, its files, --resume, and user errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import airi
from airi.cli import main

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"test_accuracy", "test_loss", "epochs", "train_seconds",
               "images_per_second", "backend", "world_size", "dataset", "model",
               "history"}
# A small, fast run: 200 training + 200 test digits, a small model.
SHORT = ["--limit", "200", "--model", "two_layer", "--batch-size", "50", "--quiet",
         "--backend", "numpy"]


def run_cli(*args, timeout=120):
    """Run the CLI in a fresh interpreter (as a user would)."""
    path = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run([sys.executable, "-m", "airi.train", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def read_metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_short_run_writes_model_checkpoint_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--epochs", "2", "--out", str(out), *SHORT]) == 0
    printed = capsys.readouterr().out
    assert "Test accuracy" in printed and "epoch 1/2" not in printed   # --quiet
    metrics = read_metrics(out)
    assert METRIC_KEYS <= set(metrics)
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["dataset"] == "mnist-subset" and metrics["model"] == "two_layer"
    assert metrics["backend"] == "numpy" and metrics["world_size"] == 1
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_accuracy"] > 0.3
    assert metrics["test_loss"] > 0 and metrics["test_images"] == 200
    assert metrics["train_seconds"] > 0 and metrics["images_per_second"] > 0
    for record in metrics["history"]:
        assert 0.0 <= record["train_accuracy"] <= 1.0
        assert 0.0 <= record["val_accuracy"] <= 1.0
    model = airi.load(out / "model.pkl")
    assert isinstance(model, airi.Sequential)
    checkpoint = airi.load(out / "checkpoint.pkl")
    assert checkpoint["epoch"] == 2
    assert checkpoint["extra"]["settings"]["model"] == "two_layer"
    best = metrics["best_epoch"]
    assert metrics["history"][best - 1]["val_accuracy"] == max(
        r["val_accuracy"] for r in metrics["history"])
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_resume_continues_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--epochs", "1", "--out", str(out), *SHORT]) == 0
    first = read_metrics(out)
    assert main(["--resume", str(out / "checkpoint.pkl"), "--epochs", "3", "--quiet"]) == 0
    resumed = read_metrics(out)                       # --out defaults to the same folder
    assert resumed["epochs"] == 3 and [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][0] == first["history"][0]
    assert resumed["settings"] == dict(first["settings"], epochs=3)
    assert airi.load(out / "checkpoint.pkl")["epoch"] == 3


def test_resume_matches_an_uninterrupted_run(tmp_path):
    # Without a schedule, 1 epoch + 1 resumed epoch is exactly a 2-epoch run.
    straight, split = tmp_path / "straight", tmp_path / "split"
    short = [*SHORT, "--schedule", "none"]
    assert main(["--epochs", "2", "--out", str(straight), *short]) == 0
    assert main(["--epochs", "1", "--out", str(split), *short]) == 0
    assert main(["--resume", str(split / "checkpoint.pkl"), "--epochs", "2",
                 "--quiet"]) == 0
    a = airi.load(straight / "checkpoint.pkl")["model"]
    b = airi.load(split / "checkpoint.pkl")["model"]
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_exits_with_one_line(tmp_path, capsys):
    code = main(["--epochs", "2", "--out", str(tmp_path), "--optimizer", "sgd",
                 "--lr", "1e30", *SHORT])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "loss became" in err and "epoch 1" in err


def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--dataset", "--data-dir", "--download", "--epochs",
                   "--batch-size", "--optimizer", "--lr", "--momentum", "--weight-decay",
                   "--augment", "--no-augment", "--seed", "--backend", "--threads",
                   "--out", "--resume", "--quiet", "--plots"):
        assert option in text
    assert "--limit" not in text


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--optimizer", "lbfgs"], "invalid choice"),
    (["--batch-size", "many"], "invalid int value"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent/airi"], "/nonexistent/airi"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/airi"], "/nonexistent/airi"),
    (["--resume", "/nonexistent/checkpoint.pkl"], "no such file"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_user_errors_exit_nonzero_with_one_line(tmp_path, args, message):
    result = run_cli(*args, "--out", str(tmp_path / "out"), "--limit", "50")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # Run as a module: the message says how it was run, not the console script's name.
    assert message in lines[0] and lines[0].startswith("python -m airi.train: error:")
    assert "Traceback" not in result.stderr + result.stdout


def test_usage_line_names_the_command_as_it_was_run():
    result = run_cli("--frobnicate")
    assert result.stderr.startswith("python -m airi.train: error: unrecognized arguments")
    assert run_cli("--help").stdout.startswith("usage: python -m airi.train ")


@pytest.mark.parametrize("argv0, prog", [
    ("/usr/local/bin/airi-train", "airi-train"),
    ("/site-packages/airi/train.py", "python -m airi.train"),
    ("/site-packages/airi/__main__.py", "python -m airi"),
    ("/usr/bin/pytest", "airi-train"),
    ("", "airi-train"),
])
def test_prog_name_follows_argv0(argv0, prog, monkeypatch):
    from airi.cli import build_parser, prog_name
    assert prog_name(argv0) == prog
    monkeypatch.setattr(sys, "argv", [argv0])
    assert build_parser().prog == prog


def test_help_says_which_model_is_for_digits_only(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "except zhou (28x28 digits only: mnist-subset, mnist)" in text


def test_metrics_json_gets_the_umask_permissions(tmp_path, capsys):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert main(["--epochs", "1", "--out", str(out), *SHORT]) == 0
    finally:
        os.umask(old)
    mode = (out / "metrics.json").stat().st_mode & 0o777
    assert mode == 0o644 == (out / "model.pkl").stat().st_mode & 0o777   # not 0o600
    (out / "metrics.json").chmod(0o640)                 # a replaced file keeps its mode
    from airi.cli import _write_json_atomic
    _write_json_atomic({"a": 1}, out / "metrics.json")
    assert (out / "metrics.json").stat().st_mode & 0o777 == 0o640
    assert read_metrics(out) == {"a": 1} and not list(out.glob(".*.tmp"))


def test_airi_cifar_trains_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--model", "airi_cifar", "--epochs", "1", "--limit", "100",
                 "--batch-size", "50", "--out", str(out), "--quiet"]) == 0
    model = airi.load(out / "model.pkl")
    assert model[0].W.shape == (16, 1, 5, 5) and model[5].W.shape == (6400, 120)
    assert read_metrics(out)["model"] == "airi_cifar"


def test_zhou_does_not_fit_cifar10(tmp_path, capsys):
    write_small_cifar(tmp_path / "data")
    assert main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
                 "--model", "zhou", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("airi-train: error: model zhou does not fit cifar10 images of "
                          "shape (3, 32, 32)")
    assert len(err.splitlines()) == 1


def test_resume_rejects_a_model_file(tmp_path, capsys):
    path = tmp_path / "model.pkl"
    airi.save(airi.models.mlp(), path)
    assert main(["--resume", str(path)]) == 2
    assert "not a checkpoint written by airi-train" in capsys.readouterr().err


def test_resume_refuses_changed_settings(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--epochs", "1", "--out", str(out), *SHORT]) == 0
    capsys.readouterr()
    assert main(["--resume", str(out / "checkpoint.pkl"), "--model", "mlp"]) == 2
    assert "only --epochs and --data-dir may change" in capsys.readouterr().err


def test_plots_are_written_or_skipped_with_a_message(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--epochs", "1", "--out", str(out), "--plots", "--model", "zhou",
                 "--limit", "200", "--quiet"]) == 0
    printed = capsys.readouterr().out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "--plots skipped" in printed
    else:
        assert (out / "curves.png").stat().st_size > 0
        assert (out / "filters.png").stat().st_size > 0


def test_plots_note_that_filters_are_skipped_without_a_conv_layer(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    assert main(["--epochs", "1", "--out", str(out), "--plots", "--model", "mlp",
                 "--limit", "100", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert (out / "curves.png").stat().st_size > 0 and not (out / "filters.png").exists()
    assert "Note: filters.png skipped: the model has no Conv2D layer" in printed


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import signal
    out = tmp_path / "run"
    path = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "airi.train", "--epochs", "200", "--limit", "500",
         "--model", "two_layer", "--out", str(out), "--backend", "numpy"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=path))
    try:
        for line in proc.stdout:
            if line.startswith("epoch"):
                proc.send_signal(signal.SIGINT)
                break
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in stdout + stderr
    assert "checkpoint saved to" in stdout and "--resume" in stdout
    saved = airi.load(out / "checkpoint.pkl")
    assert 1 <= saved["epoch"] < 200


def write_small_cifar(root, per_batch=6):
    """cifar-10-batches-py/ with tiny batches in the official pickle format."""
    import pickle
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in np.arange(per_batch) % 10]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))


def write_small_mnist(root, n_train=60, n_test=20):
    """The four IDX files (gzipped), with random digits."""
    import gzip
    import struct
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + labels.tobytes())


@pytest.mark.parametrize("model", ["lenet", "vgg_small"])
def test_cifar10_run_on_small_files(tmp_path, model, capsys):
    write_small_cifar(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
                 "--model", model, "--epochs", "1", "--batch-size", "20", "--out", str(out),
                 "--quiet"]) == 0
    metrics = read_metrics(out)
    assert metrics["dataset"] == "cifar10" and metrics["train_images"] == 27
    assert len(metrics["normalization"]["mean"]) == 3
    assert airi.load(out / "model.pkl")(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)


def test_full_mnist_run_on_small_files(tmp_path, capsys):
    write_small_mnist(tmp_path / "mnist")
    out = tmp_path / "run"
    assert main(["--dataset", "mnist", "--data-dir", str(tmp_path / "mnist"),
                 "--model", "mlp", "--epochs", "1", "--out", str(out), "--quiet",
                 "--no-augment", "--val-split", "0"]) == 0
    metrics = read_metrics(out)
    assert metrics["train_images"] == 60 and metrics["test_images"] == 20
    assert metrics["history"][0]["val_accuracy"] is None
    assert metrics["settings"]["augment"] is False
