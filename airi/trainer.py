"""``Trainer``: the epoch loop, evaluation, callbacks and resumable checkpoints.

One training step is the seed's loop, written once::

    out  = model.forward(xb, training=True)   (N, K) scores
    loss = loss_fn(out, yb)                   float, mean over the batch
    dout = loss_fn.backward()                 (N, K) dL/dout
    model.backward(dout)                      fills every Parameter.grad
    [after-backward hooks]                    e.g. allreduce of gradients, clipping
    optimizer.step()

Example
-------
>>> opt = airi.optim.Adam(model.parameters())
>>> trainer = airi.Trainer(model, airi.CrossEntropyLoss(), opt)
>>> history = trainer.fit((X_train, y_train), epochs=5, val=(X_test, y_test))
>>> trainer.evaluate((X_test, y_test))
{'loss': 0.08..., 'accuracy': 0.97...}

Data-parallel seam
------------------
Everything that changes when K processes train together goes through one object, the
*training context* (``Trainer(..., parallel=ctx)``), whose protocol
:class:`airi.context.TrainingContext` declares; :class:`LocalContext` is the
single-process default and :class:`airi.distributed.MPIContext` the MPI one.

Loaders built by the Trainer from ``(X, y)`` tuples get ``rank``/``world_size`` so each
rank sees its shard of every global batch; evaluation shards the data and reduces the sums.
"""
import math
import reprlib
import signal
import sys
import threading
import time
import warnings

import numpy as np

from . import _config
from .callbacks import (Callback, ModelCheckpoint, EarlyStopping,  # noqa: F401
                        CSVLogger)  # (public here too)
from .context import LocalContext, TrainingContext  # noqa: F401
from .sequential import call_forward

__all__ = ["Trainer", "TrainingError", "TrainingWarning", "Callback", "ModelCheckpoint",
           "EarlyStopping", "CSVLogger", "LocalContext"]

CHECKPOINT_KIND = "airi.Trainer checkpoint"
CHECKPOINT_VERSION = 1


class TrainingError(FloatingPointError):
    """Training was stopped because the loss became NaN or infinite.

    Attributes
    ----------
    epoch : int
        1-based epoch in which it happened.
    batch : int
        1-based batch index inside that epoch.
    loss : float
        The offending loss value.
    """

    def __init__(self, message, epoch=None, batch=None, loss=None, cause=None,
                 sample=None):
        super().__init__(message)
        self.epoch, self.batch, self.loss = epoch, batch, loss
        self.cause, self.sample = cause, sample


class TrainingWarning(RuntimeWarning):
    """Training goes on but looks wrong (e.g. the loss exploded); issued once per fit."""


#: A batch loss this many times the first one (and over 1000) counts as exploding.
EXPLODING_FACTOR = 1000.0
#: The signals that stop training after the current batch (with a checkpoint).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


# ------------------------------------------------------------------ helpers
class _StopSignals:
    """During ``fit``, turn the first Ctrl-C (SIGINT) or SIGTERM (what batch schedulers
    such as SLURM and Kubernetes send before they kill) into a request to stop after
    the current batch and write the checkpoint; a second signal interrupts at once.
    The previous handlers come back on exit. Nothing is printed here: ``fit`` says
    once, when it has stopped, which signal, where it stopped and what it saved
    (``Trainer.stop_message``)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self._previous = {}

    def __enter__(self):
        # Python only lets the main thread install signal handlers.
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.trainer._stop_requested:
            raise KeyboardInterrupt
        # The flag is the signal's number: under MPI the ranks exchange the largest.
        self.trainer._stop_requested = int(signum)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        return False


def _check_rng_state(value, field):
    """A state of airi's random generator (what get_rng_state returns)."""
    generator = type(_config.get_rng().bit_generator)()
    try:
        generator.state = value
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"checkpoint field {field!r} is not a random generator state "
                         f"({type(exc).__name__}: {reprlib.repr(exc)})") from None


def _check_checkpoint(state):
    """Check a checkpoint's fields before anything is restored (a damaged or tampered
    file must not end in a traceback from deep inside a schedule or a loader).

    Raises
    ------
    ValueError
        Naming the field, what it must be and what it holds.
    """
    def bad(field, expected, value):
        raise ValueError(f"checkpoint field {field!r} must be {expected}, got "
                         f"{reprlib.repr(value)}")

    def is_int(value, low):
        return type(value) is int and value >= low

    def finite(value, low=None):
        return type(value) in (int, float) and math.isfinite(value) and (
            low is None or value >= low)

    version = state.get("version")
    if not is_int(version, 1) or version > CHECKPOINT_VERSION:
        bad("version", f"an int in 1..{CHECKPOINT_VERSION}", version)
    epoch = state.get("epoch")
    if not is_int(epoch, 0):
        bad("epoch", "an int >= 0", epoch)
    history = state.get("history", [])
    if type(history) is not list or not all(type(r) is dict for r in history):
        bad("history", "a list of dicts (one per epoch)", history)
    if len(history) != epoch:
        bad("history", f"{epoch} records (one per epoch trained)", f"{len(history)} records")
    for field, kind in (("optimizer", dict), ("scheduler", list), ("callbacks", list)):
        value = state.get(field, kind())
        if value is not None and type(value) is not kind:
            bad(field, f"a {kind.__name__}", value)
    hyper = state.get("optimizer_hyperparameters", {})
    if type(hyper) is not dict or not all(type(k) is str and finite(v)
                                          for k, v in hyper.items()):
        bad("optimizer_hyperparameters", "a dict of finite numbers", hyper)
    world_size = state.get("world_size", 1)
    if not is_int(world_size, 1):
        bad("world_size", "an int >= 1", world_size)
    for field in ("loader", "rank_state"):
        if state.get(field) is not None and type(state.get(field)) is not dict:
            bad(field, "a dict or None", state.get(field))
    _check_rng_state(state.get("rng_state"), "rng_state")
    partial = state.get("partial_epoch")
    if partial is None:
        return
    if type(partial) is not dict:
        bad("partial_epoch", "a dict or None", partial)
    if not is_int(partial.get("batch"), 1):
        bad("partial_epoch.batch", "an int >= 1", partial.get("batch"))
    sums = partial.get("sums")
    if not (type(sums) is list and len(sums) == 3 and all(finite(s, 0) for s in sums)):
        bad("partial_epoch.sums", "3 finite numbers >= 0 (loss, correct, samples)", sums)
    if not finite(partial.get("seconds"), 0):
        bad("partial_epoch.seconds", "a finite number >= 0", partial.get("seconds"))
    for field in ("rng", "epoch_start_rng"):
        _check_rng_state(partial.get(field), f"partial_epoch.{field}")
    for field in ("loader", "epoch_start_loader"):
        if partial.get(field) is not None and type(partial.get(field)) is not dict:
            bad(f"partial_epoch.{field}", "a dict or None", partial.get(field))


def total_batches(loader):
    """Batches per epoch of ``loader`` (None when it has no length)."""
    try:
        return len(loader)
    except TypeError:
        return None


def _first_bad_sample(xb):
    """Index of the first sample of the batch with a NaN or inf value, or None."""
    try:
        x = np.asarray(xb)
        if x.dtype.kind not in "fc" or x.ndim == 0:
            return None
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    except (TypeError, ValueError):
        return None
    bad = np.flatnonzero(~finite)
    return int(bad[0]) if bad.size else None


def _array_batches(X, y, batch_size, rank=0, world_size=1):
    """Yield ``(X[i:j], y[i:j])`` over this rank's contiguous share of the data, in order
    (evaluation needs no shuffling and so draws nothing from the random generator)."""
    n = len(X)
    start, stop = n * rank // world_size, n * (rank + 1) // world_size
    for i in range(start, stop, batch_size):
        j = min(i + batch_size, stop)
        yield X[i:j], (None if y is None else y[i:j])


def _count_correct(out, y):
    """Correct predictions in a batch: argmax of the scores (N, K) against integer
    labels (N,) or one-hot targets (N, K). None when the output is not a classification."""
    if out.ndim != 2 or out.shape[1] < 2 or y is None:
        return None
    predicted = out.argmax(axis=1)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    return int(np.count_nonzero(predicted == y))


def _count_top_k(out, y, ks):
    """For each k in ``ks``: samples of the batch whose label is among the k highest
    scores (ties toward the lower class index, as argmax). None when not applicable."""
    if not ks or out.ndim != 2 or y is None:
        return None
    from .metrics import _rank_of_labels
    if y.ndim == 2:
        y = y.argmax(axis=1)
    rank = _rank_of_labels(out, np.asarray(y))
    return [int(np.count_nonzero(rank < k)) for k in ks]


def _last_layer(model):
    """The last layer of a Sequential (looking inside a trailing Sequential), or None."""
    layers = getattr(model, "layers", None)
    while isinstance(layers, list) and layers:
        last = layers[-1]
        inner = getattr(last, "layers", None)
        if not isinstance(inner, list) or not inner:
            return last
        layers = inner
    return None


def _warn_double_softmax(model, loss):
    """CrossEntropyLoss applies a log-softmax itself: a model ending in Softmax or
    LogSoftmax trains badly (issue 15: 0.65 instead of 0.93 validation accuracy), and
    nothing fails. Say so once, with the loss to use instead."""
    from .losses import CrossEntropyLoss
    from .layers import LogSoftmax, Softmax
    if not isinstance(loss, CrossEntropyLoss):
        return
    last = _last_layer(model)
    if isinstance(last, LogSoftmax):
        advice = ("use NLLLoss with a model that ends in LogSoftmax, or remove the "
                  "LogSoftmax and keep CrossEntropyLoss")
    elif isinstance(last, Softmax):
        advice = ("remove the final Softmax (CrossEntropyLoss takes raw scores, logits), "
                  "or end the model in LogSoftmax and use NLLLoss")
    else:
        return
    warnings.warn(f"Trainer: the model ends in {type(last).__name__} and CrossEntropyLoss "
                  f"applies its own softmax, so probabilities are squashed twice and "
                  f"training suffers; {advice}", UserWarning, stacklevel=3)


def _steps_per_batch(schedule):
    """True for schedules stepped after every batch (OneCycleLR)."""
    return bool(getattr(schedule, "step_per_batch", False))


def _needs_metric(schedule):
    """True for schedules stepped with a metric (ReduceLROnPlateau)."""
    from .lr_scheduler import ReduceLROnPlateau
    return isinstance(schedule, ReduceLROnPlateau)


def _split_last_fraction(train, validation_split):
    """Keras' ``validation_split``: the last fraction of (X, y), taken before any
    shuffling, becomes the validation set."""
    X, y = _check_pair(train, "training")
    n = len(X)
    split_at = int(math.floor(n * (1.0 - validation_split)))
    if split_at < 1 or split_at >= n:
        raise ValueError(f"Trainer.fit: validation_split={validation_split} of {n} "
                         f"samples leaves {split_at} for training and {n - split_at} for "
                         "validation; both need at least one")
    return (X[:split_at], y[:split_at]), (X[split_at:], y[split_at:])


def _is_tuple_data(data):
    return isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape")


def _check_pair(data, what):
    X, y = data
    if len(X) != len(y):
        raise ValueError(f"Trainer: {what} X has {len(X)} samples but y has {len(y)}")
    if len(X) == 0:
        raise ValueError(f"Trainer: {what} data is empty")
    return X, y


def _is_classification(loss):
    """Losses that need integer class labels."""
    from .losses import CrossEntropyLoss, NLLLoss
    return isinstance(loss, (CrossEntropyLoss, NLLLoss))


def _check_data(data, what, loss):
    """Check ``train``/``val`` before training starts, so that a bad validation set
    fails at once and not after the first epoch: an (X, y) tuple or a loader's X/y must
    be non-empty and of equal length, with integer labels (N,) for classification
    losses. Plain iterables of batches can only be checked for emptiness."""
    if _is_tuple_data(data):
        X, y = _check_pair(data, what)
    elif not hasattr(data, "__iter__"):
        raise TypeError(f"Trainer: {what} data must be a DataLoader (any iterable of "
                        f"(x, y) batches) or an (X, y) tuple, got {type(data).__name__}")
    elif hasattr(data, "X") and hasattr(data, "y"):
        X, y = _check_pair((data.X, data.y), what)
    else:
        if hasattr(data, "__len__") and len(data) == 0:
            raise ValueError(f"Trainer: {what} data is empty")
        return
    if y is None or not _is_classification(loss):
        return
    y = np.asarray(y)
    name = type(loss).__name__
    if y.dtype.kind not in "iu":
        hint = " (one-hot labels? pass y.argmax(axis=1))" if y.ndim == 2 else \
            " (convert them, e.g. y.astype(np.int64))"
        raise ValueError(f"Trainer: {what} labels must be integer class indices for "
                         f"{name}, got dtype {y.dtype}{hint}")
    if y.ndim != 1:
        raise ValueError(f"Trainer: {what} labels must have shape (N,) (one class index "
                         f"per sample) for {name}, got shape {y.shape}")
    if y.min() < 0:
        raise ValueError(f"Trainer: {what} labels must be >= 0 class indices for {name}, "
                         f"got a minimum of {y.min()}")


def _fmt_metric(name, value, digits=4):
    return "" if value is None else f"  {name} {value:.{digits}f}"


# ------------------------------------------------------------------ trainer
class Trainer:
    """Train a model with a loss and an optimizer (and optionally lr/momentum schedules).

    Parameters
    ----------
    model : Sequential (or any layer with forward/backward/parameters/state_dict)
        Maps a batch x (N, ...) to scores (N, K) (logits for CrossEntropyLoss).
    loss : loss object
        ``loss(pred, target)`` -> float (mean over the batch); ``loss.backward()`` -> dpred.
    optimizer : optimizer from :mod:`airi.optim`
        Over ``model.parameters()``.
    scheduler : schedule or list of schedules, optional
        Each has ``step()`` (called once per epoch, after it), ``state_dict()`` and
        ``load_state_dict()`` (``StepLR``, ``CosineAnnealingLR``, ``MomentumSchedule``...).
        :class:`~airi.lr_scheduler.OneCycleLR` (``step_per_batch``) is stepped after
        every batch instead; :class:`~airi.lr_scheduler.ReduceLROnPlateau` after every
        epoch with the value of ``monitor``.
    clip_grad_norm : float, optional
        Clip the gradients' total 2-norm to this value before every optimizer step
        (:func:`airi.clip_grad_norm_`, after the MPI gradient average); the norm before
        clipping is kept in ``last_grad_norm``. None: no clipping.
    monitor : str, optional
        The epoch-record metric fed to ReduceLROnPlateau: by default ``"val_loss"`` for
        its mode "min" and ``"val_accuracy"`` for "max" (``"train_..."`` when fit has
        no validation data).
    parallel : parallel context, optional
        The data-parallel seam (module doc); None means one process.
    verbose : bool
        Print a summary line per epoch (and a progress bar on a terminal).

    Attributes
    ----------
    epoch : int
        Completed epochs (restored by :meth:`load_checkpoint`).
    history : list of dict
        One record per completed epoch (see :meth:`fit`).
    stop_reason : str or None
        Why the last ``fit`` ended: "completed", "early_stopping" or "interrupted".
    stop_signal : int or None
        For an interrupted ``fit``: ``signal.SIGINT`` (Ctrl-C) or ``signal.SIGTERM``
        (under MPI: the one any rank received, SIGTERM first).
    after_backward : list of callables
        ``hook(params)`` run after every backward pass, before ``optimizer.step()``.
    checkpoint_extra : object
        Plain data stored in every checkpoint under ``"extra"``.
    """

    def __init__(self, model, loss, optimizer, scheduler=None, *, parallel=None,
                 verbose=True, clip_grad_norm=None, monitor=None):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        if scheduler is None:
            self.schedulers = []
        elif isinstance(scheduler, (list, tuple)):
            self.schedulers = list(scheduler)
        else:
            self.schedulers = [scheduler]
        self.parallel = parallel if parallel is not None else LocalContext()
        self.verbose = bool(verbose)
        self.epoch = 0
        self.history = []
        self.after_backward = []
        self.stop_training = False
        self.stop_reason = None
        self.checkpoint_path = None
        self.checkpoint_extra = None   # plain data kept in checkpoints (the CLI's settings)
        self._stop_requested = False
        self.stop_signal = None   # the signal that stopped the last fit (SIGINT/SIGTERM)
        self._params = list(model.parameters())
        self._train_loader = None
        self._callbacks = []
        self._pending = None      # state read by load_checkpoint, applied by fit
        self._partial = None      # progress inside an interrupted epoch
        if clip_grad_norm is not None:
            clip_grad_norm = float(clip_grad_norm)
            if not clip_grad_norm > 0 or not math.isfinite(clip_grad_norm):
                raise ValueError(f"Trainer: clip_grad_norm must be a number > 0 (or None), "
                                 f"got {clip_grad_norm!r}")
        self.clip_grad_norm = clip_grad_norm
        self.last_grad_norm = None
        self.monitor = monitor
        _warn_double_softmax(model, loss)
        self.stop_message = None  # set when Ctrl-C stopped fit: where, and what was saved
        self.resume_hint = ""     # appended to that message (the CLI's --resume command)

    @property
    def scheduler(self):
        """The first schedule (or None)."""
        return self.schedulers[0] if self.schedulers else None

    # ------------------------------------------------------------- logging
    def _log(self, message):
        if self.verbose and self.parallel.is_main():
            print(message, flush=True)

    def _progress_bar(self, total, epoch, epochs):
        """A tqdm bar on a terminal, else None (logs and CI stay clean)."""
        if not (self.verbose and self.parallel.is_main() and sys.stderr.isatty()):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch",
                    leave=False, file=sys.stderr, dynamic_ncols=True)

    # ---------------------------------------------------------------- data
    def _as_train_loader(self, train, batch_size):
        if _is_tuple_data(train):
            X, y = _check_pair(train, "training")
            from .data import DataLoader
            # Under MPI every rank must shuffle alike: the context supplies a shared seed.
            return DataLoader(X, y, batch_size=batch_size, shuffle=True,
                              seed=self.parallel.shuffle_seed,
                              rank=self.parallel.rank, world_size=self.parallel.world_size)
        if not hasattr(train, "__iter__"):
            raise TypeError("Trainer: train must be a DataLoader (any iterable of (x, y) "
                            f"batches) or an (X, y) tuple, got {type(train).__name__}")
        return train

    def _batches(self, data, batch_size):
        """Batches of ``data`` (a loader or an (X, y) tuple): this rank's share."""
        if _is_tuple_data(data):
            X, y = _check_pair(data, "evaluation")
            return _array_batches(X, y, batch_size, self.parallel.rank,
                                  self.parallel.world_size)
        if not hasattr(data, "__iter__"):
            raise TypeError("Trainer: data must be a DataLoader or an (X, y) tuple, got "
                            f"{type(data).__name__}")
        return iter(data)

    # ---------------------------------------------------------------- step
    def train_step(self, xb, yb):
        """One optimisation step on a batch.

        Parameters
        ----------
        xb : ndarray (N, ...)
        yb : ndarray (N,) integer labels, or (N, K) targets

        Returns
        -------
        loss : float
            The batch's mean loss (before the update). Non-finite: nothing was updated.
        correct : int or None
            Correct argmax predictions in the batch (None for non-classification).
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # Overflow shows up as a non-finite loss, which fit reports (with its cause)
            # instead of NumPy's RuntimeWarning lines.
            return self._train_step(xb, yb)

    def _train_step(self, xb, yb):
        self.optimizer.zero_grad()
        out = call_forward(self.model, xb, training=True)
        # Counted before the loss sees `out`: a loss may normalise its input in place.
        correct = _count_correct(out, yb)
        loss = float(self.loss(out, yb))
        if not math.isfinite(loss):
            return loss, correct
        # The input is data: no dL/dx wanted (the first layer skips computing it).
        backward = getattr(self.model, "backward_params", self.model.backward)
        backward(self.loss.backward())
        # Seam for data-parallel training and gradient tweaks (clipping, noise ...).
        self.parallel.allreduce_gradients(self._params, len(xb))
        if self.clip_grad_norm is not None:
            from .clip_grad import clip_grad_norm_
            self.last_grad_norm = clip_grad_norm_(self._params, self.clip_grad_norm)
        for hook in self.after_backward:
            hook(self._params)
        self.optimizer.step()
        for sched in self.schedulers:
            if _steps_per_batch(sched):
                sched.step()
        return loss, correct

    # ------------------------------------------------------------- evaluate
    def evaluate(self, data, batch_size=256, top_k=None):
        """Mean loss and accuracy of the model on ``data`` (eval mode, no updates).

        Parameters
        ----------
        data : DataLoader or (X (N, ...), y (N,)) tuple
        batch_size : int
            Used for tuples.
        top_k : int or sequence of int, optional
            Also report the top-k accuracy for each k (e.g. ``top_k=5`` or ``(3, 5)``):
            the fraction of samples whose label is among the k highest scores.

        Returns
        -------
        dict
            ``loss``: mean per sample; ``accuracy``: fraction in [0, 1] (None when the
            outputs are not class scores); ``samples``: how many were evaluated; and
            ``top_5_accuracy`` (for k = 5) etc. when ``top_k`` is given.
        """
        ks = [] if top_k is None else ([top_k] if np.ndim(top_k) == 0 else list(top_k))
        from .validators import positive_int
        ks = [positive_int(k, "top_k", "Trainer.evaluate") for k in ks]
        sums = np.zeros(3 + len(ks))   # loss * n, correct, n, top-k correct ...
        has_accuracy = True
        for xb, yb in self._batches(data, batch_size):
            # a diverged model gives inf/nan scores: the loss says so, no NumPy warnings
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                out = call_forward(self.model, xb, training=False)
                correct = _count_correct(out, yb)
                if ks and out.ndim == 2 and max(ks) > out.shape[1]:
                    raise ValueError(f"Trainer.evaluate: top_k={max(ks)} but the model "
                                     f"outputs {out.shape[1]} classes")
                top = _count_top_k(out, yb, ks)
                n = len(xb)
                sums[0] += float(self.loss(out, yb)) * n
            sums[2] += n
            if correct is None:
                has_accuracy = False
            else:
                sums[1] += correct
                if top is not None:
                    sums[3:] += top
        sums = self.parallel.allreduce_sum(sums)
        if sums[2] == 0:
            raise ValueError("Trainer.evaluate: no samples to evaluate")
        result = {"loss": float(sums[0] / sums[2]),
                  "accuracy": float(sums[1] / sums[2]) if has_accuracy else None,
                  "samples": int(sums[2])}
        for i, k in enumerate(ks):
            result[f"top_{k}_accuracy"] = (float(sums[3 + i] / sums[2]) if has_accuracy
                                           else None)
        return result

    def predict(self, X, batch_size=256):
        """Scores of the model for ``X`` (eval mode), computed in batches.

        Parameters
        ----------
        X : ndarray (N, ...) or (X, y) tuple
        batch_size : int

        Returns
        -------
        ndarray (N, K)
            What the model outputs (logits for the zoo's models); ``argmax(axis=1)`` gives
            the predicted classes.
        """
        if _is_tuple_data(X):
            X = X[0]
        X = np.asarray(X)
        if len(X) == 0:
            raise ValueError("Trainer.predict: X is empty")
        result = None
        for i in range(0, len(X), batch_size):
            out = call_forward(self.model, X[i:i + batch_size], training=False)
            if result is None:   # one allocation for the whole result
                result = np.empty((len(X),) + out.shape[1:], dtype=out.dtype)
            result[i:i + len(out)] = out
        return result

    # ------------------------------------------------------------------ fit
    def fit(self, train, epochs, val=None, callbacks=None, *, batch_size=64,
            checkpoint_path=None, verbose=None, validation_split=0.0):
        """Train until ``epochs`` epochs are completed in total.

        Parameters
        ----------
        train : DataLoader or (X, y) tuple
            Tuples are wrapped in a shuffling ``DataLoader`` of ``batch_size``.
        epochs : int
            The total number of epochs: after :meth:`load_checkpoint` training continues
            from the saved epoch up to ``epochs``, exactly as if never interrupted.
        val : DataLoader or (X, y) tuple, optional
            Evaluated after every epoch (``val_loss``, ``val_accuracy``). ``train`` and
            ``val`` are checked before the first epoch (same number of X and y samples,
            not empty, integer labels (N,) for CrossEntropyLoss/NLLLoss).
        callbacks : list of Callback, optional
            E.g. :class:`ModelCheckpoint`, :class:`EarlyStopping`.
        batch_size : int
            Batch size for tuple inputs.
        checkpoint_path : str or path-like, optional
            A resumable checkpoint written after every epoch and when Ctrl-C or SIGTERM
            stops the run (after the current batch; a second signal stops at once); a
            NaN/inf loss leaves the last one written untouched.
        verbose : bool, optional
            Overrides the Trainer's ``verbose`` for this call.
        validation_split : float in [0, 1), default 0
            With ``(X, y)`` training arrays, hold out their *last* fraction (taken
            before shuffling, as Keras does) and evaluate it after every epoch as
            ``val``; e.g. 0.1. Not with a DataLoader or together with ``val``.

        Returns
        -------
        list of dict
            ``self.history``: per epoch ``epoch`` (1-based), ``train_loss``,
            ``train_accuracy``, ``val_loss``, ``val_accuracy`` (None without val),
            ``seconds`` (the whole epoch), ``images_per_second`` (training images over
            training time) and ``lr`` (the learning rate used in that epoch).

        Raises
        ------
        ValueError
            Bad ``train`` or ``val`` data (see above), before any training.
        TrainingError
            When the loss becomes NaN or infinite: names the epoch and batch and says
            why (``cause``): "data" when the batch's inputs hold NaN/inf (``sample``:
            the first bad sample's index in the data set, or in the batch when the
            loader cannot tell), else "divergence".

        Warns
        -----
        TrainingWarning
            Once per call, when a batch's loss explodes (over 1000 times the first
            batch's and over 1000) while still finite.
        """
        epochs = int(epochs)
        if epochs < 1:
            raise ValueError(f"Trainer.fit: epochs must be >= 1, got {epochs}")
        if int(batch_size) < 1:
            raise ValueError(f"Trainer.fit: batch_size must be >= 1, got {batch_size}")
        if validation_split:
            validation_split = float(validation_split)
            if not 0.0 <= validation_split < 1.0:
                raise ValueError(f"Trainer.fit: validation_split must be in [0, 1), got "
                                 f"{validation_split}")
            if val is not None:
                raise ValueError("Trainer.fit: give val or validation_split, not both")
            if not _is_tuple_data(train):
                raise ValueError("Trainer.fit: validation_split needs (X, y) training "
                                 "arrays; with a DataLoader pass val=(X_val, y_val)")
            train, val = _split_last_fraction(train, validation_split)
        _check_data(train, "training", self.loss)
        if val is not None:
            _check_data(val, "validation", self.loss)
        old_verbose = self.verbose
        if verbose is not None:
            self.verbose = bool(verbose)
        if checkpoint_path is not None:
            self.checkpoint_path = checkpoint_path
        self._callbacks = list(callbacks or [])
        self._train_loader = self._as_train_loader(train, int(batch_size))
        self.stop_training = False
        self._stop_requested = False
        self.stop_signal = None
        self._first_loss = None
        self._warned_exploding = False
        self.stop_reason = "completed"
        try:
            self._apply_pending()
            if self.epoch >= epochs:
                self._log(f"Already trained {self.epoch} epochs (fit's epochs={epochs} is "
                          "the total count): nothing to do")
                return self.history
            self.parallel.broadcast_parameters(self._params)
            for cb in self._callbacks:
                cb.on_train_begin(self)
            with _StopSignals(self):
                while self.epoch < epochs and not self.stop_training:
                    for cb in self._callbacks:
                        cb.on_epoch_begin(self, self.epoch + 1)
                    record = self._run_epoch(epochs, val, batch_size)
                    if record is None:          # interrupted inside the epoch
                        self.stop_reason = "interrupted"
                        break
                    for cb in self._callbacks:
                        cb.on_epoch_end(self, record)
                    self._save_resumable()
                    if self._should_stop():
                        self.stop_reason = "interrupted"
                        self._announce_stop()
                        break
                if self.stop_training and self.stop_reason == "completed":
                    self.stop_reason = "early_stopping"
            for cb in self._callbacks:
                cb.on_train_end(self)
            return self.history
        finally:
            self.verbose = old_verbose

    def _run_epoch(self, epochs, val, batch_size):
        """Train one epoch (or finish an interrupted one); evaluate; return the record,
        or None if Ctrl-C stopped it in the middle (after saving a checkpoint)."""
        epoch = self.epoch + 1
        loader = self._train_loader
        lr = float(getattr(self.optimizer, "lr", float("nan")))
        start = time.perf_counter()
        batches, sums, skip, elapsed = self._start_epoch(loader)
        has_accuracy = True
        total = len(loader) if hasattr(loader, "__len__") else None
        bar = self._progress_bar(total, epoch, epochs)
        if bar is not None and skip:
            bar.update(skip)
        index = skip
        try:
            for xb, yb in batches:
                index += 1
                loss, correct = self.train_step(xb, yb)
                if not math.isfinite(loss):
                    raise self._nan_error(loss, epoch, index, total, xb)
                self._watch_loss(loss, epoch, index)
                n = len(xb)
                sums[0] += loss * n
                sums[2] += n
                if correct is None:
                    has_accuracy = False
                else:
                    sums[1] += correct
                if bar is not None:
                    bar.update(1)
                    if index % 10 == 0:
                        bar.set_postfix_str(f"loss {sums[0] / sums[2]:.4f}", refresh=False)
                if self._should_stop():
                    if total is None or index < total:
                        self._interrupt(epoch, index, sums, elapsed + time.perf_counter()
                                        - start)
                        return None
        finally:
            if bar is not None:
                bar.close()
        train_seconds = elapsed + time.perf_counter() - start
        record = self._epoch_record(epoch, sums, has_accuracy, train_seconds, lr)
        if val is not None:
            scores = self.evaluate(val, batch_size=max(256, batch_size))
            record["val_loss"], record["val_accuracy"] = scores["loss"], scores["accuracy"]
        record["seconds"] = float(elapsed + time.perf_counter() - start)
        self.history.append(record)
        self._log(self._summary_line(record, epochs))
        for sched in self.schedulers:
            if _needs_metric(sched):
                sched.step(self._monitored_value(sched, record))
            elif not _steps_per_batch(sched):
                sched.step()
        self.epoch = epoch
        self._partial = None
        return record

    def _monitored_value(self, schedule, record):
        """The metric ReduceLROnPlateau is fed: ``monitor``, else the validation loss
        (mode "min") or accuracy ("max"), or their training values without validation."""
        name = self.monitor
        if name is None:
            kind = "accuracy" if getattr(schedule, "mode", "min") == "max" else "loss"
            name = f"val_{kind}" if record.get(f"val_{kind}") is not None \
                else f"train_{kind}"
        value = record.get(name)
        if value is None:
            known = sorted(k for k, v in record.items() if v is not None)
            raise ValueError(f"Trainer: ReduceLROnPlateau monitors {name!r}, which is not "
                             f"in the epoch record; available: {known}")
        return float(value)

    def _start_epoch(self, loader):
        """Iterator over the epoch's batches and the running sums. After a mid-epoch
        interrupt, the epoch is replayed from its start state and the batches already
        trained are skipped, so shuffling and augmentation come out identical."""
        partial, self._partial = self._partial, None
        if partial is None:
            self._epoch_start_state = (_config.get_rng_state(), self._loader_state(loader))
            return iter(loader), np.zeros(3), 0, 0.0
        rng_state, loader_state = partial["epoch_start_rng"], partial["epoch_start_loader"]
        self._epoch_start_state = (rng_state, loader_state)
        if partial.get("loader") is not None and hasattr(loader, "load_state_dict"):
            # The loader saved its place in the epoch: it continues from the next batch.
            loader.load_state_dict(partial["loader"])
            batches = iter(loader)
        else:
            # Replay the epoch's start (same order, same augmentation draws) and skip
            # the batches already trained on.
            _config.set_rng_state(rng_state)
            if loader_state is not None and hasattr(loader, "load_state_dict"):
                loader.load_state_dict(loader_state)
            batches = iter(loader)
            for _ in range(partial["batch"]):   # bounded: check_resume ran
                next(batches)
        _config.set_rng_state(partial["rng"])
        sums = np.array(partial["sums"], dtype=np.float64)
        return batches, sums, partial["batch"], float(partial["seconds"])

    def _interrupt(self, epoch, index, sums, seconds):
        rng_state, loader_state = self._epoch_start_state
        self._partial = {"batch": index, "sums": [float(s) for s in sums],
                         "seconds": float(seconds), "epoch_start_rng": rng_state,
                         "epoch_start_loader": loader_state, "rng": _config.get_rng_state(),
                         "loader": self._loader_state(self._train_loader)}
        self._save_resumable()
        self._announce_stop()

    def position(self, loader=None):
        """Where training stands, in the words every message uses: "after epoch 9", or
        "in epoch 10 after batch 23 of 57" inside an interrupted epoch (the batch count
        from ``loader``, else the loader of the last ``fit``)."""
        if self._partial is None:
            return f"after epoch {self.epoch}"
        loader = self._train_loader if loader is None else loader
        total = len(loader) if hasattr(loader, "__len__") else None
        of = f" of {total}" if total else ""
        return f"in epoch {self.epoch + 1} after batch {self._partial['batch']}{of}"

    def _announce_stop(self):
        """The one message of a stop signal: which, where training stopped, what was
        saved (printed by rank 0 only, see ``_log``)."""
        saved = self._saved_note()
        self.stop_message = f"Interrupted ({self._stop_name()}) {self.position()}{saved}"
        self._log(self.stop_message + self.resume_hint)

    def _should_stop(self):
        """Whether this or any rank asked to stop; notes which signal asked."""
        flag = self.parallel.should_stop(self._stop_requested)
        if flag and self.stop_signal is None:
            self.stop_signal = int(flag) if int(flag) in _SIGNAL_NAMES else \
                (int(self._stop_requested) or signal.SIGINT)
        return bool(flag)

    def _stop_name(self):
        return _SIGNAL_NAMES.get(self.stop_signal, "Ctrl-C")

    def _watch_loss(self, loss, epoch, index):
        """Warn once per fit when the loss explodes (still finite, e.g. 1e23 after a too
        large learning rate): the run goes on, but it is most likely wasted."""
        if self._first_loss is None:
            self._first_loss = loss
            return
        if (not self._warned_exploding and loss > 1000.0
                and loss > EXPLODING_FACTOR * max(abs(self._first_loss), 1.0)):
            self._warned_exploding = True
            lr = getattr(self.optimizer, "lr", None)
            warnings.warn(
                f"the loss exploded to {loss:.4g} in epoch {epoch}, batch {index} (it "
                f"started at {self._first_loss:.4g}): training is diverging; try a "
                f"smaller learning rate{f' than {lr:g}' if isinstance(lr, float) else ''}",
                TrainingWarning, stacklevel=4)

    def _saved_note(self):
        if self.checkpoint_path is None:
            return " (no checkpoint_path given: nothing saved)"
        return f"; checkpoint saved to {self.checkpoint_path}"

    def _nan_error(self, loss, epoch, index, total, xb):
        """The TrainingError for a NaN/inf loss, saying why: bad data in the batch
        (the first sample with a NaN or inf), or the training diverged."""
        of = f"/{total}" if total else ""
        kept = (f"; the last good checkpoint is {self.checkpoint_path} (epoch {self.epoch})"
                if self.checkpoint_path is not None and self.epoch > 0 else "")
        where = f"loss became {loss} in epoch {epoch}, batch {index}{of}: training stopped"
        bad = _first_bad_sample(xb)
        if bad is not None:
            in_data = self._data_index(index, bad)
            which = (f"sample {in_data} of the training data (sample {bad} of the batch)"
                     if in_data is not None else f"sample {bad} of the batch")
            return TrainingError(
                f"{where}: the input data hold NaN or inf values, first in {which}; "
                f"clean the data (e.g. keep np.isfinite(X).all(axis=tuple(range(1, "
                f"X.ndim))) rows){kept}",
                epoch=epoch, batch=index, loss=loss, cause="data",
                sample=in_data if in_data is not None else bad)
        lr = getattr(self.optimizer, "lr", None)
        lr_text = f" than {lr:g}" if isinstance(lr, (int, float)) else ""
        return TrainingError(
            f"{where}: the inputs are finite, so training diverged (try a smaller "
            f"learning rate{lr_text}, or normalised inputs){kept}",
            epoch=epoch, batch=index, loss=loss, cause="divergence")

    def _data_index(self, batch, position):
        """The index in the data set of sample ``position`` of the epoch's batch number
        ``batch`` (1-based), when the loader can tell (an airi DataLoader)."""
        loader = self._train_loader
        order = getattr(loader, "_order", None)
        if order is None or not hasattr(loader, "batch_indices"):
            return None
        try:
            return int(loader.batch_indices(order, batch - 1)[position])
        except (IndexError, TypeError, ValueError):
            return None

    def _epoch_record(self, epoch, sums, has_accuracy, train_seconds, lr):
        sums = self.parallel.allreduce_sum(sums)
        count = max(sums[2], 1.0)
        return {"epoch": epoch,
                "train_loss": float(sums[0] / count),
                "train_accuracy": float(sums[1] / count) if has_accuracy else None,
                "val_loss": None, "val_accuracy": None,
                "seconds": float(train_seconds),
                "images_per_second": float(sums[2] / max(train_seconds, 1e-9)),
                "lr": lr}

    @staticmethod
    def _summary_line(record, epochs):
        width = len(str(epochs))
        return (f"epoch {record['epoch']:>{width}}/{epochs}"
                f"  loss {record['train_loss']:.4f}"
                + _fmt_metric("acc", record["train_accuracy"])
                + _fmt_metric("val_loss", record["val_loss"])
                + _fmt_metric("val_acc", record["val_accuracy"])
                + f"  lr {record['lr']:.3g}  {record['seconds']:.1f}s"
                  f"  {record['images_per_second']:,.0f} img/s")

    # ---------------------------------------------------------- checkpoints
    @staticmethod
    def _loader_state(loader):
        if loader is not None and hasattr(loader, "state_dict"):
            return loader.state_dict()
        return None

    def _optimizer_hyperparameters(self):
        # Schedules change these attributes; keep them even if the optimizer's own
        # state_dict does not.
        return {name: getattr(self.optimizer, name) for name in ("lr", "momentum")
                if isinstance(getattr(self.optimizer, name, None), (int, float))}

    def checkpoint_state(self):
        """Everything needed to continue training, as a dict of plain values, arrays and
        airi objects (what :meth:`save_checkpoint` writes)."""
        from . import __version__
        return {
            "kind": CHECKPOINT_KIND,
            "version": CHECKPOINT_VERSION,
            "airi_version": __version__,
            "epoch": int(self.epoch),
            "model": self.model,
            "optimizer": self.optimizer.state_dict(),
            "optimizer_hyperparameters": self._optimizer_hyperparameters(),
            "scheduler": [s.state_dict() for s in self.schedulers],
            "rng_state": _config.get_rng_state(),
            "loader": self._loader_state(self._train_loader),
            "partial_epoch": self._partial,
            "callbacks": [cb.state_dict() for cb in self._callbacks],
            "history": [dict(r) for r in self.history],
            "world_size": int(self.parallel.world_size),
            "extra": self.checkpoint_extra,
            "rank_state": getattr(self, "_rank_state", None),
        }

    def save_checkpoint(self, path):
        """Write a resumable checkpoint with :func:`airi.save` (atomic); returns path."""
        from .serialization import save
        save(self.checkpoint_state(), path)
        return path

    def _save_resumable(self):
        if self.checkpoint_path is None:
            return
        # Every rank passes here: a parallel context may collect per-rank state (each
        # rank's random generator) into the checkpoint the main rank writes.
        self._rank_state = self.parallel.gather_rank_state(self)
        if self.parallel.is_main():
            self.save_checkpoint(self.checkpoint_path)

    def load_checkpoint(self, path):
        """Restore a checkpoint written by :meth:`save_checkpoint`: model weights,
        optimizer and schedule state, epoch, history and airi's random state (and, at the
        next ``fit``, the DataLoader's and callbacks' state). Returns the checkpoint dict.
        """
        from .serialization import load
        state = load(path)
        if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{path}: not a Trainer checkpoint (a model file? load it "
                             "with airi.load instead)")
        try:
            _check_checkpoint(state)
        except ValueError as exc:
            raise ValueError(f"{path}: damaged or tampered checkpoint: {exc}") from None
        model_state = state["model"]
        if hasattr(model_state, "state_dict"):
            model_state = model_state.state_dict()
        try:
            self.model.load_state_dict(model_state)
        except (KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: the checkpoint's model does not match this model "
                             f"({exc})") from None
        saved = state.get("scheduler") or []
        if len(saved) != len(self.schedulers):
            raise ValueError(f"{path}: the checkpoint has {len(saved)} schedule(s), this "
                             f"Trainer has {len(self.schedulers)}")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            for name, value in state.get("optimizer_hyperparameters", {}).items():
                setattr(self.optimizer, name, value)
            for sched, sched_state in zip(self.schedulers, saved):
                sched.load_state_dict(sched_state)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: damaged or tampered checkpoint: {exc}") from None
        self.epoch = int(state["epoch"])
        self.history = [dict(r) for r in state.get("history", [])]
        self._partial = state.get("partial_epoch")
        _config.set_rng_state(state["rng_state"])
        self._pending = state
        # each rank takes back its own random state
        self.parallel.restore_rank_state(self, state.get("rank_state"))
        return state

    def check_resume(self, loader):
        """Check that the checkpoint read by :meth:`load_checkpoint` fits ``loader`` (the
        training loader ``fit`` will get): its saved loader states and the batch its
        interrupted epoch stopped at. ``fit`` runs it too; call it earlier to report a
        mismatch before training starts.

        Raises
        ------
        ValueError
            Naming the checkpoint field that does not fit.
        """
        state = self._pending
        if state is None:
            return
        partial = self._partial or {}
        checks = [("loader", state.get("loader")),
                  ("partial_epoch.loader", partial.get("loader")),
                  ("partial_epoch.epoch_start_loader", partial.get("epoch_start_loader"))]
        if hasattr(loader, "check_state_dict"):
            for field, saved in checks:
                if saved is not None:
                    try:
                        loader.check_state_dict(saved)
                    except (ValueError, TypeError, KeyError) as exc:
                        raise ValueError(f"checkpoint field {field!r} does not fit the "
                                         f"training data: {exc}") from None
        batches = total_batches(loader)
        if partial and batches is not None and partial["batch"] >= batches:
            raise ValueError(f"checkpoint field 'partial_epoch.batch' is "
                             f"{partial['batch']}, but an epoch of the training data has "
                             f"{batches} batches (another data set or batch size?)")

    def _apply_pending(self):
        """Finish a load_checkpoint at the start of fit, once the loader and callbacks
        exist: their states, and the random state (in case something drew from it in
        between, e.g. building the loader)."""
        if self._pending is None:
            return
        self.check_resume(self._train_loader)
        state, self._pending = self._pending, None
        _config.set_rng_state(state["rng_state"])
        loader_state = state.get("loader")
        if (self._partial is None and loader_state is not None
                and hasattr(self._train_loader, "load_state_dict")):
            self._train_loader.load_state_dict(loader_state)
        saved = state.get("callbacks") or []
        if saved and len(saved) == len(self._callbacks):
            for cb, cb_state in zip(self._callbacks, saved):
                cb.load_state_dict(cb_state)
        elif saved and self._callbacks:
            warnings.warn("the checkpoint's callback states do not match the callbacks "
                          "given to fit; they start afresh", RuntimeWarning, stacklevel=3)
