"""Callbacks: hooks the :class:`airi.Trainer` calls around epochs (Keras style).

``ModelCheckpoint`` keeps the best model on a monitored metric, ``EarlyStopping`` stops
when it no longer improves, ``CSVLogger`` writes one row per epoch to a CSV file. Write
your own by deriving from :class:`Callback`.
"""
import csv
import os

__all__ = ["Callback", "ModelCheckpoint", "EarlyStopping", "CSVLogger"]


class Callback:
    """Base class of the hooks the Trainer calls around epochs.

    Every method receives the trainer; ``trainer.stop_training = True`` ends ``fit``
    after the current epoch. ``state_dict``/``load_state_dict`` let a callback's state
    travel inside a checkpoint so that a resumed run continues it.
    """

    def on_train_begin(self, trainer):
        """Called once when ``fit`` starts, before the first epoch.

        Parameters
        ----------
        trainer : Trainer
        """

    def on_epoch_begin(self, trainer, epoch):
        """Called before each epoch.

        Parameters
        ----------
        trainer : Trainer
        epoch : int
            The 1-based number of the epoch about to run.
        """

    def on_epoch_end(self, trainer, record):
        """Called after each epoch (and its validation), before the checkpoint is saved.

        Parameters
        ----------
        trainer : Trainer
        record : dict
            The epoch's history entry (see :meth:`Trainer.fit`): ``epoch``,
            ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``, ...
        """

    def on_train_end(self, trainer):
        """Called once when ``fit`` ends (completed, stopped early or interrupted).

        Parameters
        ----------
        trainer : Trainer
        """

    def state_dict(self):
        """The callback's state, stored in checkpoints.

        Returns
        -------
        dict
            Plain values and arrays (empty for a stateless callback).
        """
        return {}

    def load_state_dict(self, state):
        """Restore a state returned by :meth:`state_dict` (on resume).

        Parameters
        ----------
        state : dict
        """


def _resolve_mode(monitor, mode):
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


class _MonitorMixin:
    """Tracks the best value of one metric of the epoch records."""

    def _init_monitor(self, monitor, mode, min_delta):
        self.monitor = monitor
        self.mode = _resolve_mode(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.best = None
        self.best_epoch = None

    def _current(self, record):
        value = record.get(self.monitor)
        if value is None:
            known = sorted(k for k, v in record.items() if v is not None)
            hint = " (pass val=... to fit)" if self.monitor.startswith("val_") else ""
            raise ValueError(f"{type(self).__name__}: monitored metric {self.monitor!r} "
                             f"is not in the epoch record{hint}; available: {known}")
        return float(value)

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def _describe_best(self):
        if self.best is None:
            return "-inf" if self.mode == "max" else "inf"
        return f"{self.best:.5f}"


class ModelCheckpoint(_MonitorMixin, Callback):
    """Save the model whenever the monitored metric improves (seed 003's
    "val_loss improved from 1.206 to 1.055, saving model").

    Parameters
    ----------
    path : str or path-like
        File written with :func:`airi.save` (atomically: a crash never leaves half a file).
    monitor : str
        A key of the epoch record: ``"val_accuracy"``, ``"val_loss"``, ``"train_loss"`` ...
    mode : {"max", "min", "auto"}
        Whether larger is better; "auto" means max for accuracies, min otherwise.
    save_best_only : bool
        False saves after every epoch.
    min_delta : float
        The smallest change that counts as an improvement.
    full_checkpoint : bool
        Save a resumable trainer checkpoint instead of the bare model.
    tie_breaker : str, optional
        A second metric that decides between epochs whose monitored value ties with the
        best (exactly, or within ``min_delta``): e.g. ``"val_loss"`` under
        ``monitor="val_accuracy"``, where a small validation set makes ties common and
        the first of them is often an undertrained epoch. Its direction is "auto" (min
        for losses). None (the default) keeps the first epoch of a tie.
    """

    def __init__(self, path, monitor="val_accuracy", mode="auto", save_best_only=True,
                 min_delta=0.0, full_checkpoint=False, tie_breaker=None):
        self.path = path
        self.save_best_only = bool(save_best_only)
        self.full_checkpoint = bool(full_checkpoint)
        self._init_monitor(monitor, mode, min_delta)
        self.tie_breaker = tie_breaker
        self.tie_mode = None if tie_breaker is None else _resolve_mode(tie_breaker, "auto")
        self.best_tie = None

    def _wins_tie(self, value, record):
        """True when ``value`` ties with the best and the tie-breaker metric is better."""
        if self.tie_breaker is None or self.best is None or \
                abs(value - self.best) > self.min_delta:
            return False
        other = record.get(self.tie_breaker)
        if other is None:
            return False
        if self.best_tie is None:
            return True
        return other > self.best_tie if self.tie_mode == "max" else other < self.best_tie

    def on_epoch_end(self, trainer, record):
        """Save the model (on the main rank) if ``record[monitor]`` improved, or every
        epoch with ``save_best_only=False``.

        Parameters
        ----------
        trainer : Trainer
        record : dict
            The epoch's history entry; must hold the monitored metric.

        Raises
        ------
        ValueError
            If the monitored metric is missing from the record (e.g. no ``val``).
        """
        value = self._current(record)
        improved = self._improved(value)
        tie_won = not improved and self._wins_tie(value, record)
        if improved or tie_won:
            previous = self._describe_best()
            if tie_won:   # keep the best value itself: a tie must not lower the bar
                value = self.best
            self.best, self.best_epoch = value, record["epoch"]
            if self.tie_breaker is not None:
                self.best_tie = record.get(self.tie_breaker)
            how = (f"improved from {previous} to {value:.5f}" if improved else
                   f"tied at {value:.5f} with a better {self.tie_breaker} "
                   f"({self.best_tie:.5f})")
            trainer._log(f"  {self.monitor} {how}, saving model to {self.path}")
        if improved or tie_won or not self.save_best_only:
            self._save(trainer)

    def _save(self, trainer):
        if not trainer.parallel.is_main():
            return
        if self.full_checkpoint:
            trainer.save_checkpoint(self.path)
        else:
            from .serialization import save
            save(trainer.model, self.path)

    def state_dict(self):
        """The best value and its epoch, for checkpoints.

        Returns
        -------
        dict
            ``best`` (float or None), ``best_epoch`` (int or None) and ``best_tie``
            (the tie-breaker's value at the best epoch, or None).
        """
        return {"best": self.best, "best_epoch": self.best_epoch, "best_tie": self.best_tie}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s ``best`` and ``best_epoch``.

        Parameters
        ----------
        state : dict
        """
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.best_tie = state.get("best_tie")


class EarlyStopping(_MonitorMixin, Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs, and
    (``restore_best_weights``) put the best epoch's weights back in the model (seed 003's
    "reloading optimal weights").

    Parameters
    ----------
    monitor : str
        A key of the epoch record, e.g. ``"val_loss"``.
    patience : int
        Stop after this many epochs in a row without improvement.
    mode : {"min", "max", "auto"}
    min_delta : float
    restore_best_weights : bool
        At the end of training, load the weights of the best epoch (kept in memory).

    Attributes
    ----------
    stopped_epoch : int or None
        The epoch after which training stopped early (None if it ran to the end).
    """

    def __init__(self, monitor="val_loss", patience=5, mode="auto", min_delta=0.0,
                 restore_best_weights=True):
        if int(patience) < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self._init_monitor(monitor, mode, min_delta)
        self.wait = 0
        self.best_weights = None
        self.stopped_epoch = None

    def on_train_begin(self, trainer):
        """Reset :attr:`stopped_epoch` (the patience count survives a resume).

        Parameters
        ----------
        trainer : Trainer
        """
        self.stopped_epoch = None

    def on_epoch_end(self, trainer, record):
        """Track the monitored metric; after ``patience`` epochs without improvement
        set ``trainer.stop_training``. Keeps a copy of the best weights in memory when
        ``restore_best_weights``.

        Parameters
        ----------
        trainer : Trainer
        record : dict
            The epoch's history entry; must hold the monitored metric.

        Raises
        ------
        ValueError
            If the monitored metric is missing from the record (e.g. no ``val``).
        """
        value = self._current(record)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, record["epoch"], 0
            if self.restore_best_weights:
                self.best_weights = trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = record["epoch"]
            trainer.stop_training = True
            trainer._log(f"  early stopping: {self.monitor} has not improved for "
                         f"{self.wait} epochs (best {self.best:.5f} at epoch "
                         f"{self.best_epoch})")

    def on_train_end(self, trainer):
        """Load the best epoch's weights into the model (``restore_best_weights``),
        unless the last epoch was the best.

        Parameters
        ----------
        trainer : Trainer
        """
        if (self.restore_best_weights and self.best_weights is not None
                and trainer.history and trainer.history[-1]["epoch"] != self.best_epoch):
            trainer.model.load_state_dict(self.best_weights)
            trainer._log(f"  restored the weights of epoch {self.best_epoch} "
                         f"({self.monitor} {self.best:.5f})")

    def state_dict(self):
        """Everything a resumed run needs to continue the count, for checkpoints.

        Returns
        -------
        dict
            ``best``, ``best_epoch``, ``wait`` (epochs without improvement) and
            ``best_weights`` (the model's state_dict at the best epoch, or None).
        """
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_weights": self.best_weights}

    def load_state_dict(self, state):
        """Restore a state returned by :meth:`state_dict`.

        Parameters
        ----------
        state : dict
        """
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.wait = state.get("wait", 0)
        self.best_weights = state.get("best_weights")


class CSVLogger(Callback):
    """Write the history to a CSV file, one row per epoch (Keras' ``CSVLogger``).

    The columns are the keys of the epoch records (see :meth:`Trainer.fit`): ``epoch``,
    ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``seconds``,
    ``images_per_second``, ``lr`` (and any extra key a record carries); a missing value
    (no validation) is an empty cell. Floats are written in full precision. The file is
    rewritten when ``fit`` starts with the epochs the trainer already has (after a
    resume the file is complete) and a row is appended after every epoch, so it can be
    watched during training. Only the main rank writes under MPI.

    Parameters
    ----------
    path : str or path-like
        The CSV file (its folder must exist).
    separator : str, default ","
    append : bool, default False
        Append to an existing file instead of rewriting it (the header is written only
        to an empty file; earlier epochs of the trainer are not repeated).

    Examples
    --------
    >>> trainer.fit(train, epochs=5, val=val,
    ...             callbacks=[airi.trainer.CSVLogger("history.csv")])  # doctest: +SKIP
    """

    _FIRST = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")

    def __init__(self, path, separator=",", append=False):
        self.path = os.fspath(path)
        self.separator = str(separator)
        self.append = bool(append)
        self._columns = None

    def _columns_of(self, record):
        rest = [k for k in record if k not in self._FIRST]
        return [k for k in self._FIRST if k in record] + rest

    def _is_main(self, trainer):
        return trainer.parallel.is_main()

    def _write(self, records, mode):
        with open(self.path, mode, newline="") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if self._columns is None:
                self._columns = self._columns_of(records[0])
            if mode == "w" or f.tell() == 0:
                writer.writerow(self._columns)
            for record in records:
                writer.writerow(["" if record.get(k) is None else
                                 (repr(record[k]) if isinstance(record[k], float)
                                  else record[k]) for k in self._columns])

    def on_train_begin(self, trainer):
        """Rewrite the file with the trainer's history so far (unless ``append``)."""
        self._columns = None
        if not self._is_main(trainer) or self.append:
            return
        if trainer.history:
            self._write(trainer.history, "w")
        else:
            open(self.path, "w").close()

    def on_epoch_end(self, trainer, record):
        """Append the epoch's row (the header first, into an empty file)."""
        if self._is_main(trainer):
            self._write([record], "a")
