"""The CLI's issue-15 options: --model resnet8/resnet20 and their recipe, --schedule
plateau|onecycle, --clip-grad-norm, --optimizer nesterov|adadelta, history.csv."""
import csv
import json

import airi
from airi.cli import main

SHORT = ["--limit", "100", "--batch-size", "50", "--quiet", "--backend", "numpy"]


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_resnet8_run_uses_its_recipe_and_writes_history_csv(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--model", "resnet8", "--epochs", "2", "--out", str(out), *SHORT]) == 0
    s = _metrics(out)["settings"]
    assert (s["optimizer"], s["lr"], s["schedule"], s["weight_decay"], s["val_split"]) == \
        ("nesterov", 0.1, "onecycle", 5e-4, 0.0)
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) == _metrics(out)["history"][1]["train_loss"]
    assert rows[0]["val_accuracy"] == ""                        # no validation split
    checkpoint = airi.load(out / "checkpoint.pkl")
    steps = checkpoint["scheduler"][0]["last_epoch"]
    assert checkpoint["scheduler"][0]["type"] == "OneCycleLR" and steps == 2 * 2  # 100/50
    model = airi.load(out / "model.pkl")
    assert sum(p.size for p in model.parameters()) == 77_754
    # a onecycle run cannot be stretched on resume; the same --epochs is fine
    assert main(["--resume", str(out / "checkpoint.pkl"), "--epochs", "3",
                 "--quiet"]) == 2
    assert "onecycle" in capsys.readouterr().err


def test_explicit_options_override_the_model_recipe(tmp_path):
    out = tmp_path / "run"
    assert main(["--model", "resnet8", "--optimizer", "adam", "--schedule", "plateau",
                 "--epochs", "1", "--out", str(out), *SHORT]) == 0
    s = _metrics(out)["settings"]
    assert (s["optimizer"], s["lr"], s["schedule"]) == ("adam", 2e-3, "plateau")


def test_plateau_clip_and_adadelta_on_a_small_model(tmp_path):
    out = tmp_path / "run"
    assert main(["--model", "two_layer", "--schedule", "plateau", "--optimizer",
                 "adadelta", "--clip-grad-norm", "0.5", "--epochs", "2", "--out",
                 str(out), *SHORT]) == 0
    metrics = _metrics(out)
    assert metrics["settings"]["clip_grad_norm"] == 0.5
    assert metrics["settings"]["lr"] == 1.0
    checkpoint = airi.load(out / "checkpoint.pkl")
    assert checkpoint["scheduler"][0]["type"] == "ReduceLROnPlateau"
    assert checkpoint["scheduler"][0]["last_epoch"] == 2


def test_bad_clip_value_is_a_usage_error(tmp_path, capsys):
    assert main(["--clip-grad-norm", "-1", "--out", str(tmp_path), *SHORT]) == 2
    assert "--clip-grad-norm must be > 0" in capsys.readouterr().err
