"""The five seed examples run in quick mode and keep their key claim.

Each example is a script in ``examples/`` with a ``main(argv)`` that prints its results
and returns them as a dict; the tests call ``main(["--quick", ...])`` in-process (one
import of airi for all of them) and one example also runs as a script, the way a user
types it. With matplotlib installed, the ``--plots`` pictures are checked too.
"""
import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def load_example(name):
    """Import ``examples/<name>.py`` as a module (examples are not a package)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"airi_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name, tmp_path, *args):
    """``main(["--quick", *args])`` (plus ``--plots`` when matplotlib is there)."""
    argv = ["--quick", *args]
    if HAVE_MATPLOTLIB:
        argv += ["--plots", str(tmp_path / "plots")]
    return load_example(name).main(argv)


def assert_pngs(tmp_path, *names):
    if HAVE_MATPLOTLIB:
        for name in names:
            path = tmp_path / "plots" / name
            assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


# ---------------------------------------------------------------- seed 000: Zhou's CNN
def test_zhou_mnist_trains_sample_by_sample(tmp_path, capsys):
    result = run_example("zhou_mnist", tmp_path)
    out = capsys.readouterr().out
    assert result["steps"] == 1000                     # one SGD step per image
    assert "[Step 100] Past 100 steps: Average Loss" in out
    assert out.count("Past 100 steps") == 10
    assert "Test Accuracy" in out
    assert result["test_accuracy"] > 0.5               # chance is 0.1
    assert_pngs(tmp_path, "zhou_mnist_filters.png")


# ------------------------------------------------------------- seed 001: the Airi layers
def test_airi_layers_seed_loop_trainer_and_optimizers(tmp_path, capsys):
    result = run_example("airi_layers", tmp_path)
    out = capsys.readouterr().out
    for model in ("Softmax classifier", "Two-layer net"):
        assert result[f"seed_loop/{model}"] > 0.5
        assert result[f"trainer/{model}"] > 0.5
    table = result["optimizers"]
    assert list(table) == ["SGD", "SGD + momentum", "AdaGrad", "RMSProp", "Adam"]
    for name, row in table.items():
        assert name in out
        assert row["accuracy"] > 0.5, (name, row)
        assert np.isfinite(row["train_loss"])
    assert_pngs(tmp_path, "airi_layers_optimizers.png", "airi_layers_curves.png")


# ---------------------------------------------------------- seed 002: linear regression
def test_linear_regression_recovers_the_tutorials_coefficients(tmp_path):
    result = run_example("linear_regression", tmp_path)
    np.testing.assert_allclose(result["w_hat"], [5.16, 2.96], atol=0.01)
    # Same data, same initial weights, same steps: the tutorial's digits exactly.
    np.testing.assert_allclose(result["w_hat"], [5.15990836, 2.95540097], atol=1e-6)
    np.testing.assert_allclose(result["w_hat_bias_variant"], result["w_hat"], atol=1e-9)
    assert result["losses"][-1] < result["losses"][0] / 50
    assert_pngs(tmp_path, "linear_regression_loss.png", "linear_regression_fit.png")


def test_linear_regression_runs_as_a_script():
    script = EXAMPLES / "linear_regression.py"
    done = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True,
                          text=True, timeout=120, cwd=EXAMPLES.parent)
    assert done.returncode == 0, done.stderr
    assert "w_hat = [5.15990836 2.95540097]" in done.stdout


# ------------------------------------------------------------- seed 003: CIFAR convnet
def test_cifar10_convnet_on_the_synthetic_stand_in(tmp_path, capsys):
    result = run_example("cifar10_convnet", tmp_path, "--synthetic",
                         "--out", str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert "SYNTHETIC STAND-IN" in out                 # says clearly what it runs on
    assert result["source"] == "synthetic stand-in"
    assert result["test_accuracy"] > 0.2               # chance is 0.1
    assert Path(result["model_path"]).is_file()        # the best checkpoint
    assert "reloading optimal weights" in out
    assert 1 <= result["best_epoch"] <= result["epochs_run"]
    assert_pngs(tmp_path, "cifar10_convnet_activations.png", "cifar10_convnet_curves.png",
                "cifar10_convnet_filters.png")


def write_tiny_cifar(root, per_batch=20):
    """A folder in CIFAR-10's real format (python pickles of uint8 rows and labels)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in np.arange(per_batch) % 10]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_convnet_needs_data_or_the_synthetic_flag(capsys):
    module = load_example("cifar10_convnet")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--quick"])                   # no silent switch to synthetic data
    assert exit_info.value.code == 2
    assert "--data-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--quick", "--synthetic", "--download"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("download", [False, True])
def test_cifar10_convnet_missing_data_or_failed_download_is_an_error(tmp_path, monkeypatch,
                                                                     download):
    """A requested download that fails (or data that is not there) ends the run with
    an error, not with a run on other data."""
    from airi.datasets import DownloadError
    module = load_example("cifar10_convnet")
    if download:   # no network in tests: the download fails as it would offline
        def failing_load(root, download=False):
            raise DownloadError("could not download 'cifar-10-python.tar.gz': offline")
        monkeypatch.setattr(module, "load_cifar10", failing_load)
    argv = ["--quick", "--data-dir", str(tmp_path / "nothing-here"),
            "--out", str(tmp_path / "run")] + (["--download"] if download else [])
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("cifar10_convnet: error: CIFAR-10 could not be")
    assert ("offline" in message) == download
    assert not (tmp_path / "run").exists()          # nothing trained


def test_cifar10_convnet_reads_cifar_from_data_dir(tmp_path, capsys):
    write_tiny_cifar(tmp_path / "data")
    result = load_example("cifar10_convnet").main(
        ["--quick", "--epochs", "1", "--data-dir", str(tmp_path / "data"),
         "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "SYNTHETIC" not in out
    assert result["source"] == f"CIFAR-10 from {tmp_path / 'data'}"
    assert result["epochs_run"] == 1
    assert 0.0 <= result["test_accuracy"] <= 1.0


# --------------------------------------------------------- seed 004: PyTorch-style MLP
def test_pytorch_style_mlp(tmp_path, capsys):
    result = run_example("pytorch_style_mlp", tmp_path)
    out = capsys.readouterr().out
    assert "CrossEntropyLoss" in out and "LogSoftmax + NLLLoss" in out
    assert out.count("Training loss:") == 2            # one line per epoch
    losses = result["epoch_losses"]
    assert losses[-1] < losses[0]
    assert result["test_accuracy"] > 0.5               # chance is 0.1
    np.testing.assert_allclose(result["probabilities"].sum(), 1.0, rtol=1e-5)
    assert_pngs(tmp_path, "pytorch_style_mlp_class_probabilities.png")


# ------------------------------------------------- beyond a chain: ResNet-8 (issue 15)
def test_resnet_digits(tmp_path, capsys):
    result = run_example("resnet_digits", tmp_path)
    out = capsys.readouterr().out
    assert result["block_parameters"][:3] == ["body.0.W", "body.1.gamma", "body.1.beta"]
    assert result["gradcheck_error"] < 1e-6
    assert "inner BatchNorm is training=False" in out
    assert result["test_accuracy"] > 0.6                # chance is 0.1
    assert result["top2_accuracy"] >= result["test_accuracy"]
    cm = result["confusion_matrix"]
    assert cm.shape == (10, 10) and cm.sum() == 300
    assert np.trace(cm) / cm.sum() == pytest.approx(result["test_accuracy"])
    assert result["csv_lines"] == 1 + 3                 # header + one row per epoch
    assert result["reloaded_equal"]
    assert_pngs(tmp_path, "confusion_matrix.png", "curves.png")


@pytest.mark.parametrize("name", ["zhou_mnist", "airi_layers", "linear_regression",
                                  "cifar10_convnet", "pytorch_style_mlp",
                                  "resnet_digits"])
def test_every_example_has_a_docstring_and_help(name, capsys):
    module = load_example(name)
    assert module.__doc__ and ("seed 00" in module.__doc__ or name == "resnet_digits")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_plots_without_matplotlib_fail_before_training(monkeypatch, tmp_path, capsys):
    # A None entry in sys.modules makes `import matplotlib.figure` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    module = load_example("zhou_mnist")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--quick", "--plots", str(tmp_path)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "pip install 'airi[plot]'" in captured.err
    assert "Step" not in captured.out                  # nothing was trained
