"""``python -m airi.train``: train a zoo model on MNIST or CIFAR-10 from one command.

With no arguments it trains the default LeNet on the 5,000 MNIST digits bundled with
airi (no download) and prints the held-out accuracy. Each run writes, in ``--out``:

- ``model.pkl``       the best model (by validation accuracy, ties to the lower
                      validation loss), for ``airi.load``;
- ``checkpoint.pkl``  everything needed to continue (``--resume``), updated every epoch;
- ``metrics.json``    test accuracy/loss, timing, settings and the per-epoch history;
- ``history.csv``     the per-epoch history as a table, one row per epoch.

Examples::

    python -m airi.train                                  # LeNet, bundled digits
    python -m airi.train --dataset mnist --data-dir data --download --epochs 5
    python -m airi.train --dataset cifar10 --data-dir data --model vgg_small
    python -m airi.train --model resnet20             # SGD-Nesterov + OneCycle (its recipe)
    python -m airi.train --resume runs/20240501-120000/checkpoint.pkl --epochs 20

The same function backs the ``airi-train`` console script (``main(argv)`` returns the
exit status).
"""
import argparse
import datetime
import inspect
import json
import os
import secrets
import signal
import sys
from pathlib import Path

import numpy as np

#: The console script's name; usage and error lines use :func:`prog_name`.
PROG = "airi-train"
DATASETS = ("mnist-subset", "mnist", "cifar10")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam",
              "adamw")
SCHEDULES = ("cosine", "step", "plateau", "onecycle", "none")
NUM_CLASSES = {"mnist-subset": 10, "mnist": 10, "cifar10": 10}

#: Default learning rate of each --optimizer.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.01,
              "rmsprop": 1e-3, "adadelta": 1.0, "adam": 2e-3, "adamw": 2e-3}

#: The settings a run is defined by (saved in checkpoints, reused by --resume); None
#: entries are filled per data set / optimizer in _resolve_settings.
DEFAULTS = {
    "model": "lenet",
    "dataset": "mnist-subset",
    "data_dir": "data",
    "epochs": 12,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": None,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "augment": True,
    "val_split": 0.1,
    "seed": 0,
    "limit": None,
    "clip_grad_norm": None,
}

#: A model's own recipe: the defaults its family trains well with, used for every
#: setting not given on the command line. He et al.'s ResNets: SGD with Nesterov
#: momentum, weight decay 5e-4, the one-cycle policy peaking at --lr, and every
#: training image used for training (no validation split: the one-cycle schedule ends
#: at its best epoch, the last, so there is nothing to pick).
_RESNET_RECIPE = {"optimizer": "nesterov", "lr": 0.1, "weight_decay": 5e-4,
                  "schedule": "onecycle", "val_split": 0.0}
MODEL_DEFAULTS = {"resnet8": _RESNET_RECIPE, "resnet20": _RESNET_RECIPE}
#: ReduceLROnPlateau settings of --schedule plateau (a CLI run is short: patience 2).
PLATEAU = {"factor": 0.1, "patience": 2}
#: Settings a resumed run may change (the rest must match the checkpoint).
RESUME_MAY_CHANGE = {"epochs", "data_dir"}


class UsageError(Exception):
    """A mistake of the user: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def prog_name(argv0=None):
    """The command as the user typed it, for usage and error lines.

    Parameters
    ----------
    argv0 : str, optional
        The program path (default ``sys.argv[0]``).

    Returns
    -------
    str
        ``"python -m airi.train"`` (or ``"python -m airi"``) when run as a module, whose
        ``argv[0]`` is the module's file; ``"airi-train"`` for the console script and
        anything else (e.g. ``main()`` called from Python).
    """
    path = Path(sys.argv[0] if argv0 is None else argv0 or "")
    if path.parent.name == "airi":
        if path.name == "train.py":
            return "python -m airi.train"
        if path.name == "__main__.py":
            return "python -m airi"
    return PROG


def build_parser():
    """The argument parser (every option's default is None: see ``DEFAULTS``)."""
    p = _Parser(
        prog=prog_name(),
        description="Train an airi model (default: LeNet on the bundled 4,000 + 1,000 "
                    "MNIST digits) and report its held-out accuracy.",
        epilog="outputs in --out: model.pkl (the best model, for airi.load), "
               "checkpoint.pkl (for --resume),\nmetrics.json (test accuracy, timing, "
               "history), history.csv (one row per epoch). Ctrl-C or SIGTERM stops\n"
               "after the current batch and saves a checkpoint (exit status 130 or 143).\n\n"
               "examples:\n"
               "  python -m airi.train\n"
               "  python -m airi.train --dataset mnist --data-dir data --download\n"
               "  python -m airi.train --dataset cifar10 --data-dir data "
               "--model vgg_small\n"
               "  python -m airi.train --model resnet20\n"
               "  python -m airi.train --resume runs/RUN/checkpoint.pkl --epochs 20",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from .models import available_models
    p.add_argument("--model", metavar="NAME",
                   help="zoo model: " + ", ".join(available_models())
                   + f" (default {DEFAULTS['model']}); each adapts to the data set's "
                     "image size and channels, except zhou (28x28 digits only: "
                     "mnist-subset, mnist)")
    p.add_argument("--dataset", choices=DATASETS,
                   help="mnist-subset: 5,000 digits shipped with airi (default); mnist: "
                        "the full 60,000 + 10,000 from the IDX files in --data-dir; "
                        "cifar10: the python batches in --data-dir")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with the MNIST IDX files or CIFAR-10 batches "
                        f"(default {DEFAULTS['data_dir']!r}; unused for mnist-subset)")
    p.add_argument("--download", action="store_true", default=None,
                   help="fetch the data set into --data-dir if it is missing")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"total number of epochs (default {DEFAULTS['epochs']}); with "
                        "--resume, training continues up to N")
    p.add_argument("--batch-size", type=int, metavar="B",
                   help=f"images per step (default {DEFAULTS['batch_size']})")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="update rule; momentum means SGD with --momentum, nesterov SGD "
                        f"with Nesterov momentum (default {DEFAULTS['optimizer']}; "
                        "nesterov for the resnets)")
    p.add_argument("--lr", type=float, metavar="LR",
                   help="initial learning rate (default per optimizer: "
                        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    p.add_argument("--momentum", type=float, metavar="M",
                   help="momentum of --optimizer momentum "
                        f"(default {DEFAULTS['momentum']})")
    p.add_argument("--weight-decay", type=float, metavar="WD",
                   help="L2 penalty (decoupled for adamw; default 0, 0.01 for adamw)")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="learning-rate schedule over the epochs: cosine annealing to 0, "
                        "step (x0.1 at 50%% and 75%%), plateau (x0.1 when the validation "
                        f"loss stalls for {PLATEAU['patience']} epochs), onecycle (the "
                        "1cycle policy per batch, peaking at --lr, momentum cycled), or "
                        f"none (default {DEFAULTS['schedule']}; onecycle for the resnets)")
    p.add_argument("--clip-grad-norm", type=float, metavar="C",
                   help="clip the gradients' total 2-norm to C before every step "
                        "(default: no clipping)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random shifts for digits, random crops and flips for CIFAR-10 "
                        "(default on)")
    p.add_argument("--val-split", type=float, metavar="F",
                   help="fraction of the training images held out to pick the best "
                        f"epoch (default {DEFAULTS['val_split']}; 0 keeps the last epoch)")
    p.add_argument("--seed", type=int, metavar="S",
                   help=f"random seed of initialisation, shuffling and augmentation "
                        f"(default {DEFAULTS['seed']})")
    p.add_argument("--backend", choices=("cython", "numpy"),
                   help="kernels: the compiled ones (default when built) or NumPy")
    p.add_argument("--threads", type=int, metavar="T",
                   help="threads of the compiled kernels and BLAS (default: all cores)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: a new runs/YYYYmmdd-HHMMSS, or the "
                        "checkpoint's folder with --resume)")
    p.add_argument("--resume", metavar="PATH",
                   help="continue the run saved in this checkpoint.pkl (its settings are "
                        "reused; pass --epochs to train longer)")
    p.add_argument("--quiet", action="store_true", default=None,
                   help="print only the final accuracy")
    p.add_argument("--plots", action="store_true", default=None,
                   help="also write curves.png and filters.png (needs matplotlib)")
    p.add_argument("--export-onnx", action="store_true", default=None,
                   help="also write model.onnx beside model.pkl: the best model in "
                        "evaluation mode, for ONNX Runtime or Netron (needs the onnx "
                        "package: pip install 'airi[onnx]')")
    p.add_argument("--rank-timeout", type=float, metavar="SECONDS", default=None,
                   help="under mpiexec: when a rank does not reach a collective within "
                        "SECONDS, every rank stops with a message naming it (default "
                        "600)")
    # For tests and CI: train and test on the first N images only.
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    return p


# ------------------------------------------------------------------ settings
def _check_saved_settings(saved):
    """The settings a checkpoint holds, checked field by field before use (a damaged or
    tampered checkpoint gets a message naming the field, not a traceback)."""
    if not isinstance(saved, dict):
        raise UsageError(f"--resume: the checkpoint's settings must be a dict, got "
                         f"{type(saved).__name__}")
    kinds = {"model": (str,), "dataset": (str,), "data_dir": (str,), "epochs": (int,),
             "batch_size": (int,), "optimizer": (str,), "lr": (int, float),
             "momentum": (int, float), "weight_decay": (int, float), "schedule": (str,),
             "augment": (bool,), "val_split": (int, float), "seed": (int,),
             "limit": (int, type(None))}
    choices = {"dataset": DATASETS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    for key, kind in kinds.items():
        if key not in saved:
            continue
        value = saved[key]
        if type(value) not in kind or (key in choices and value not in choices[key]) \
                or (isinstance(value, float) and not np.isfinite(value)):
            expected = (f"one of {', '.join(choices[key])}" if key in choices
                        else " or ".join(k.__name__ for k in kind))
            raise UsageError(f"--resume: damaged or tampered checkpoint: setting "
                             f"{key!r} must be {expected}, got {str(value)[:60]!r}")


def _resolve_settings(args, saved=None):
    """Merge explicit options > the resumed checkpoint's settings > DEFAULTS."""
    settings = dict(DEFAULTS)
    if saved is not None:
        _check_saved_settings(saved)
    if not saved:     # the model's recipe, under the options given explicitly
        model = str(args.model or DEFAULTS["model"]).strip().lower().replace("-", "_")
        settings.update(MODEL_DEFAULTS.get(model, {}))
    if saved:
        settings.update({k: v for k, v in saved.items() if k in DEFAULTS})
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if saved and key not in RESUME_MAY_CHANGE and value != saved.get(key, value):
            raise UsageError(f"--{key.replace('_', '-')} {value} differs from the resumed "
                             f"run's {saved.get(key)!r}; only --epochs and --data-dir may "
                             "change when resuming")
        settings[key] = value
    settings["model"] = str(settings["model"]).strip().lower().replace("-", "_")
    if settings["lr"] is None or (args.optimizer is not None and args.lr is None
                                  and not saved):
        # an --optimizer given without --lr gets its own default rate
        settings["lr"] = DEFAULT_LR[settings["optimizer"]]
    if args.weight_decay is None and settings["optimizer"] == "adamw" and not saved:
        settings["weight_decay"] = 1e-2
    _validate(settings)
    return settings


def _validate(s):
    from .models import available_models
    if s["model"] not in available_models():
        raise UsageError(f"unknown model {s['model']!r}; available: "
                         f"{', '.join(available_models())}")
    checks = [
        (s["epochs"] >= 1, f"--epochs must be >= 1, got {s['epochs']}"),
        (s["batch_size"] >= 1, f"--batch-size must be >= 1, got {s['batch_size']}"),
        (np.isfinite(s["lr"]) and s["lr"] > 0, f"--lr must be > 0, got {s['lr']}"),
        (0 <= s["momentum"] < 1, f"--momentum must be in [0, 1), got {s['momentum']}"),
        (s["weight_decay"] >= 0, f"--weight-decay must be >= 0, got {s['weight_decay']}"),
        (0 <= s["val_split"] < 1, f"--val-split must be in [0, 1), got {s['val_split']}"),
        (s["seed"] >= 0, f"--seed must be >= 0, got {s['seed']}"),
        (s["limit"] is None or s["limit"] >= 10,
         f"--limit must be >= 10, got {s['limit']}"),
        (s["clip_grad_norm"] is None or (np.isfinite(s["clip_grad_norm"])
                                         and s["clip_grad_norm"] > 0),
         f"--clip-grad-norm must be > 0, got {s['clip_grad_norm']}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def _default_out_dir():
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / stamp
    out, i = base, 1
    while out.exists():
        out, i = Path(f"{base}-{i}"), i + 1
    return out


# ------------------------------------------------------------------ data
def _load_data(s, download):
    from . import datasets
    if s["dataset"] == "mnist-subset":
        return datasets.load_mnist_subset()
    root = Path(s["data_dir"])
    if s["dataset"] == "mnist":
        return datasets.load_mnist(root, download=download)
    return datasets.load_cifar10(root, download=download)


def _take(X, y, n, rng):
    if n is None or n >= len(X):
        return X, y
    idx = np.sort(rng.permutation(len(X))[:n])
    return X[idx], y[idx]


def _prepare_data(s, train, test):
    """Limit, validation split and (CIFAR) normalisation; returns arrays and notes."""
    (X, y), (X_test, y_test) = train, test
    split_rng = np.random.default_rng(s["seed"])   # apart from airi's generator
    X, y = _take(X, y, s["limit"], split_rng)
    X_test, y_test = _take(X_test, y_test, s["limit"], split_rng)
    val = None
    n_val = int(round(s["val_split"] * len(X)))
    if n_val > 0:
        if len(X) - n_val < 1:
            raise UsageError(f"--val-split {s['val_split']} leaves no training images")
        order = split_rng.permutation(len(X))
        val = (X[order[:n_val]], y[order[:n_val]])
        keep = np.sort(order[n_val:])
        X, y = X[keep], y[keep]
    normalization = None
    if s["dataset"] == "cifar10":
        # Per-channel mean/std of the training images, applied to every split once
        # (cheaper than a per-batch transform); recorded in metrics.json for users.
        mean = X.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64).astype(X.dtype)
        std = X.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64).astype(X.dtype)
        X, X_test = (X - mean) / std, (X_test - mean) / std
        if val is not None:
            val = ((val[0] - mean) / std, val[1])
        normalization = {"mean": mean.ravel().tolist(), "std": std.ravel().tolist()}
    return (X, y), val, (X_test, y_test), normalization


def _augmentation(s, image_shape):
    from . import data
    if s["dataset"] == "cifar10":
        return data.Compose([data.RandomCrop(image_shape[-1], padding=4),
                             data.RandomHorizontalFlip()])
    return data.RandomShift(2)


# ------------------------------------------------------------------ model/optim
def _build_model(name, image_shape, num_classes):
    from .models import get_model, _REGISTRY
    c, h, w = image_shape
    offered = {"in_channels": c, "num_classes": num_classes, "image_size": h,
               "input_size": c * h * w}
    accepted = inspect.signature(_REGISTRY[name]).parameters
    return get_model(name, **{k: v for k, v in offered.items() if k in accepted})


def _build_optimizer(s, params):
    from . import optim
    lr, wd = s["lr"], s["weight_decay"]
    name = s["optimizer"]
    if name == "sgd":
        return optim.SGD(params, lr=lr, weight_decay=wd)
    if name == "momentum":
        return optim.SGD(params, lr=lr, momentum=s["momentum"], weight_decay=wd)
    if name == "nesterov":
        return optim.SGD(params, lr=lr, momentum=s["momentum"], nesterov=True,
                         weight_decay=wd)
    if name == "adadelta":
        return optim.Adadelta(params, lr=lr, weight_decay=wd)
    if name == "adagrad":
        return optim.AdaGrad(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return optim.RMSProp(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=wd)
    return optim.AdamW(params, lr=lr, weight_decay=wd)


def _build_schedule(s, optimizer, steps_per_epoch):
    from . import lr_scheduler
    if s["schedule"] == "onecycle":
        # --lr is the peak; SGD's momentum / Adam's beta1 cycle 0.95 -> 0.85 -> 0.95
        # (an optimizer without momentum keeps its own).
        cycle = "momentum" in optimizer._hyper_names or "betas" in optimizer._hyper_names
        return lr_scheduler.OneCycleLR(optimizer, max_lr=s["lr"], epochs=s["epochs"],
                                       steps_per_epoch=steps_per_epoch,
                                       cycle_momentum=cycle)
    if s["schedule"] == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **PLATEAU)
    if s["schedule"] == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=s["epochs"])
    if s["schedule"] == "step":
        return lr_scheduler.MultiStepLR(optimizer, milestones=_milestones(s["epochs"]),
                                        gamma=0.1)
    return None


def _milestones(epochs):
    return sorted({max(1, epochs // 2), max(1, epochs * 3 // 4)})


def _stretch_schedule(schedule, epochs, done):
    """A resumed run given a new --epochs: the schedule spans the new total, from the
    epoch reached (its checkpoint holds the old span)."""
    from .lr_scheduler import OneCycleLR, ReduceLROnPlateau
    if schedule is None or isinstance(schedule, ReduceLROnPlateau):
        return     # plateau: nothing tied to the number of epochs
    if isinstance(schedule, OneCycleLR):
        raise UsageError("--epochs cannot change when resuming a onecycle run (the "
                         "cycle spans the epochs it was started with)")
    if hasattr(schedule, "T_max"):
        schedule.T_max = epochs
    elif hasattr(schedule, "milestones"):
        schedule.milestones = _milestones(epochs)
    schedule.step(done)     # re-apply the rate of the current epoch


def _parallel_context():
    """The data-parallel context (see airi.trainer's module doc): MPI under ``mpiexec``
    (airi.distributed), else one process. Everything else in this module asks it who
    prints and writes."""
    from . import distributed
    return distributed.context()


def _check_ranks_agree(run):
    """Under mpiexec: every rank must run the same airi, model, settings and data
    (checked together, so a mismatch is one clear error and not a hang)."""
    from . import distributed
    if distributed.size() == 1:
        return
    fingerprint = distributed.data_fingerprint
    try:
        distributed.check_consistency(
            run["trainer"].model, settings=run["settings"],
            training_data=fingerprint(run["loader"].X),
            training_labels=fingerprint(run["loader"].y),
            test_data=fingerprint(run["test"][0]),
            validation_data=None if run["val"] is None else fingerprint(run["val"][0]))
    except distributed.DistributedError as exc:
        raise UsageError(str(exc)) from None


# ------------------------------------------------------------------ outputs
def _write_json_atomic(obj, path):
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename, with the
    permissions airi.save gives model files: the umask's for a new file, the old file's
    when replacing one (not mkstemp's owner-only 0600)."""
    from .serialization.fileformat import _copy_mode, _fsync_directory
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "x") as f:        # "x": created with the umask's permissions
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _copy_mode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _check_onnx_export(model, image_shape):
    """Before training: --export-onnx will work (onnx installed, the model exports), so
    a long run does not end without its model.onnx."""
    from . import onnx as airi_onnx
    try:
        airi_onnx.build(model, image_shape)
    except ImportError as exc:
        raise UsageError(f"--export-onnx: {_one_line(exc)}") from None
    except ValueError as exc:     # OnnxExportError included
        raise UsageError(f"--export-onnx: {_one_line(exc)}") from None


def _export_onnx(model, path, run):
    """Write the best model as ONNX; the input normalisation (if any) goes into the
    file's metadata, since the graph expects normalised inputs as the model does."""
    from . import onnx as airi_onnx
    metadata = {"airi_model": run["settings"]["model"],
                "airi_dataset": run["settings"]["dataset"]}
    if run["normalization"]:
        metadata["airi_normalization"] = json.dumps(run["normalization"])
    image_shape = tuple(run["test"][0].shape[1:])        # as the training images
    airi_onnx.export(model, path, image_shape, metadata=metadata)


def _throughput(history, n_train):
    """(train seconds, images per second) over all epochs of the history."""
    seconds = sum(r["seconds"] for r in history)
    train_time = sum(n_train / r["images_per_second"] for r in history
                     if r.get("images_per_second"))
    ips = n_train * len(history) / train_time if train_time > 0 else None
    return float(seconds), ips


def _write_plots(out, history, model, say, title=None, best_epoch=None):
    try:
        from . import viz
        viz.plot_history(history, out / "curves.png", title=title, best_epoch=best_epoch)
        from .layers import Conv2D
        first_conv = next((layer for layer in model if isinstance(layer, Conv2D)), None)
        if first_conv is not None:
            viz.plot_filters(first_conv, out / "filters.png")
        say(f"Plots written to {out / 'curves.png'}"
            + (f" and {out / 'filters.png'}" if first_conv is not None else ""))
        if first_conv is None:
            say("Note: filters.png skipped: the model has no Conv2D layer, so there are "
                "no learned kernels to draw")
    except ImportError as exc:
        say(f"--plots skipped: {exc} (install matplotlib: pip install 'airi[plot]')")
    except Exception as exc:  # a picture is never worth losing the run's results
        say(f"--plots skipped: {type(exc).__name__}: {exc}")


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plots needs matplotlib, which is not installed: "
                         "pip install 'airi[plot]' (or leave out --plots)") from None


# ------------------------------------------------------------------ main
def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def _one_line_warnings():
    """Show warnings as one line each, ``prog: warning: message`` (never a source line
    or a raw NumPy RuntimeWarning with its file and line number)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog_name()}: warning: {_one_line(message)}",
              file=sys.stderr if file is None else file, flush=True)
    return show


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 1 training failed,
    2 usage/data error, 130 interrupted by Ctrl-C, 143 stopped by SIGTERM)."""
    import warnings
    from . import distributed
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warnings()
    try:
        # Under mpiexec an error on one rank stops every rank (no rank left waiting).
        with distributed.abort_on_failure(prog_name(), ignore=(UsageError,)):
            return _main(argv)
    except UsageError as exc:     # under mpiexec: raised on every rank, printed once
        if distributed.is_main():
            print(f"{prog_name()}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C before or after training (not during: see fit)
        print(f"{prog_name()}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


def _setup(args):
    """Everything before training; user mistakes raise UsageError."""
    import airi
    from .serialization import load
    from .trainer import Trainer, ModelCheckpoint, CSVLogger

    saved_settings, resume_path = None, None
    if args.resume is not None:
        resume_path = Path(args.resume)
        if not resume_path.is_file():
            raise UsageError(f"--resume: no such file {str(resume_path)!r}")
        try:
            state = load(resume_path)
        except ValueError as exc:
            raise UsageError(f"--resume: {_one_line(exc)}") from None
        extra = state.get("extra") if isinstance(state, dict) else None
        if not isinstance(extra, dict) or "settings" not in extra:
            raise UsageError(f"--resume: {resume_path} is not a checkpoint written by "
                             f"{PROG}")
        saved_settings = extra["settings"]
    s = _resolve_settings(args, saved_settings)
    if args.plots:   # noticed now, not after the whole run
        _require_matplotlib()

    try:
        if args.backend is not None:
            airi.set_backend(args.backend)
        if args.threads is not None:
            airi.set_num_threads(args.threads)
    except (ValueError, RuntimeError, ImportError) as exc:
        raise UsageError(_one_line(exc)) from None
    from . import distributed
    distributed.seed(s["seed"])    # airi.seed; under mpiexec rank r > 0 gets (seed, r)

    try:
        train, test = _load_data(s, bool(args.download))
    except (ValueError, OSError) as exc:
        raise UsageError(_one_line(exc)) from None
    train, val, test, normalization = _prepare_data(s, train, test)
    image_shape = tuple(train[0].shape[1:])
    num_classes = NUM_CLASSES[s["dataset"]]

    model = _build_model(s["model"], image_shape, num_classes)
    try:
        summary = model.summary(image_shape)
    except ValueError as exc:
        raise UsageError(f"model {s['model']} does not fit {s['dataset']} images of shape "
                         f"{image_shape}: {_one_line(exc)}") from None
    if args.export_onnx:
        _check_onnx_export(model, image_shape)
    try:
        optimizer = _build_optimizer(s, model.parameters())
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None

    out = Path(args.out) if args.out else (resume_path.parent if resume_path
                                           else _default_out_dir())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out: cannot create {str(out)!r}: {exc.strerror}") from None

    from .data import DataLoader
    parallel = _parallel_context()
    transform = _augmentation(s, image_shape) if s["augment"] else None
    # The loader's own seeded generator gives every rank the same order (issue 9) and
    # keeps the order apart from dropout and augmentation draws.
    # Under mpiexec -n K, a last batch of fewer than K images would leave a rank empty.
    tiny_last = 0 < len(train[0]) % s["batch_size"] < parallel.world_size
    loader = DataLoader(train[0], train[1], batch_size=s["batch_size"], shuffle=True,
                        seed=s["seed"], transform=transform, rank=parallel.rank,
                        world_size=parallel.world_size, drop_last=tiny_last)
    schedule = _build_schedule(s, optimizer, len(loader))
    trainer = Trainer(model, airi.CrossEntropyLoss(), optimizer, schedule,
                      parallel=parallel, verbose=not args.quiet,
                      clip_grad_norm=s["clip_grad_norm"],
                      monitor="val_loss" if val is not None else "train_loss")
    trainer.checkpoint_extra = {"settings": s, "normalization": normalization}
    monitor = "val_accuracy" if val is not None else "train_loss"
    # The held-out validation split is small (a few hundred images): its accuracy ties
    # often near the top, and the first epoch of a tie is usually the least trained.
    best = ModelCheckpoint(out / "model.pkl", monitor=monitor,
                           tie_breaker="val_loss" if val is not None else None)
    if resume_path is not None:
        try:
            trainer.load_checkpoint(resume_path)
            trainer.check_resume(loader)
        except ValueError as exc:
            raise UsageError(f"--resume: {_one_line(exc)}") from None
        if s["epochs"] != saved_settings["epochs"]:
            _stretch_schedule(schedule, s["epochs"], trainer.epoch)
    # history.csv is rewritten with the whole history when fit starts (resume included)
    csv_log = CSVLogger(out / "history.csv")
    return dict(settings=s, trainer=trainer, loader=loader, val=val, test=test,
                out=out, callbacks=[best, csv_log], summary=summary, parallel=parallel,
                normalization=normalization, n_train=len(train[0]), resumed=resume_path)


def _interrupted_metrics(run, history):
    """metrics.json of a run stopped by Ctrl-C: says so, where, and how to continue;
    no test scores (the run is not finished). --resume overwrites it."""
    import airi
    trainer, s = run["trainer"], run["settings"]
    checkpoint = run["out"] / "checkpoint.pkl"
    return {
        "status": "interrupted",
        "interrupted": trainer.stop_message,
        "resume": f"{prog_name()} --resume {checkpoint}",
        "test_accuracy": None,
        "test_loss": None,
        "epochs": len(history),
        "best_epoch": run["callbacks"][0].best_epoch,
        "backend": airi.backend(),
        "world_size": int(run["parallel"].world_size),
        "dataset": s["dataset"],
        "model": s["model"],
        "settings": s,
        "normalization": run["normalization"],
        "airi_version": airi.__version__,
        "history": history,
    }


def _main(argv):
    import airi
    from .serialization import load
    from .trainer import Trainer, TrainingError

    from . import distributed
    args = build_parser().parse_args(argv)
    if args.rank_timeout is not None and not (0 < args.rank_timeout < float("inf")):
        raise UsageError(f"--rank-timeout must be a positive number of seconds, got "
                         f"{args.rank_timeout:g}")
    distributed.init(timeout=args.rank_timeout)
    # Under mpiexec a failure on any rank fails every rank with the same message.
    run = distributed.run_together(_setup, args, error=UsageError)
    _check_ranks_agree(run)
    s, trainer, out, parallel = run["settings"], run["trainer"], run["out"], run["parallel"]
    main_rank = parallel.is_main()

    def say(message, always=False):
        if main_rank and (always or not args.quiet):
            print(message, flush=True)

    say(run["summary"])
    n_val = 0 if run["val"] is None else len(run["val"][0])
    say(f"{s['dataset']}: {run['n_train']:,} training, {n_val:,} validation, "
        f"{len(run['test'][0]):,} test images | {s['optimizer']} lr {s['lr']:g}, "
        f"batch {s['batch_size']}, {s['schedule']} schedule, augment "
        f"{'on' if s['augment'] else 'off'} | backend {airi.backend()}, "
        f"{airi.get_num_threads()} threads"
        + (f" x {parallel.world_size} processes (MPI)" if parallel.world_size > 1 else "")
        + f" | output {out}")
    if run["resumed"] is not None:
        say(f"Resuming {run['resumed']} {trainer.position(run['loader'])}")

    checkpoint = out / "checkpoint.pkl"
    trainer.resume_hint = f"; continue with: {prog_name()} --resume {checkpoint}"
    try:
        history = trainer.fit(run["loader"], s["epochs"], val=run["val"],
                              callbacks=run["callbacks"], checkpoint_path=checkpoint)
    except TrainingError as exc:
        kept = (f"; last good checkpoint: {checkpoint}" if checkpoint.exists()
                and "checkpoint" not in str(exc) else "")
        # Under mpiexec the message names the rank and every rank is stopped.
        return distributed.fail(f"{prog_name()}: error: {_one_line(exc)}{kept}", 1)
    if trainer.stop_reason == "interrupted":
        if args.quiet and main_rank:   # (otherwise fit printed it: one message)
            print(trainer.stop_message + trainer.resume_hint, flush=True)
        if main_rank:
            _write_json_atomic(_interrupted_metrics(run, history), out / "metrics.json")
        return 128 + signal.SIGTERM if trainer.stop_signal == signal.SIGTERM else 130

    best_path = out / "model.pkl"
    # Rank 0 wrote model.pkl: it reads it and sends it to the other ranks.
    best_model = distributed.broadcast_object(
        load(best_path) if main_rank and best_path.exists() else None)
    if best_model is None:
        best_model = trainer.model
    scores = Trainer(best_model, trainer.loss, trainer.optimizer, parallel=parallel,
                     verbose=False).evaluate(run["test"])
    train_seconds, ips = _throughput(history, run["n_train"])
    best_cb = run["callbacks"][0]
    metrics = {
        "status": trainer.stop_reason,   # "completed" or "early_stopping"
        "test_accuracy": scores["accuracy"],
        "test_loss": scores["loss"],
        "epochs": len(history),
        "best_epoch": best_cb.best_epoch,
        "train_seconds": train_seconds,
        "images_per_second": ips,
        "backend": airi.backend(),
        "threads": airi.get_num_threads(),
        "world_size": int(parallel.world_size),
        "dataset": s["dataset"],
        "model": s["model"],
        "train_images": run["n_train"],
        "test_images": scores["samples"],
        "settings": s,
        "normalization": run["normalization"],
        "airi_version": airi.__version__,
        "history": history,
    }
    if main_rank:
        _write_json_atomic(metrics, out / "metrics.json")
        if args.export_onnx:
            try:
                _export_onnx(best_model, out / "model.onnx", run)
            except (ImportError, OSError, ValueError) as exc:
                print(f"{prog_name()}: error: --export-onnx: {_one_line(exc)}",
                      file=sys.stderr)
                return 1
    say(f"Test accuracy {scores['accuracy']:.4f} (loss {scores['loss']:.4f}) on "
        f"{scores['samples']:,} held-out images with the best model (epoch "
        f"{best_cb.best_epoch}); {train_seconds:.1f}s of training. Files in {out}",
        always=True)
    if args.plots and main_rank:
        _write_plots(out, history, best_model, lambda m: say(m, always=True),
                     title=f"{s['model']} on {s['dataset']}: test accuracy "
                           f"{scores['accuracy']:.4f}", best_epoch=best_cb.best_epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
