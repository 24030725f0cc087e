"""Schedules that change an optimizer's hyper-parameters between epochs.

Learning-rate schedules follow ``torch.optim.lr_scheduler``: create the scheduler after
the optimizer, call :meth:`LRScheduler.step` once per epoch (after that epoch's
optimizer steps), read the rate with :meth:`LRScheduler.get_last_lr`::

    opt = airi.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = airi.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    for epoch in range(20):
        train_one_epoch(model, opt)      # uses opt.lr
        sched.step()

Every schedule here is a closed form of the epoch counter ``last_epoch`` (0 at
creation): the rate at epoch ``e`` depends only on ``e`` and the base rate, the
optimizer's ``lr`` when the scheduler was created. :class:`MomentumSchedule` does the
same for SGD's ``momentum`` (or Adam's ``beta1``), raising it over the first epochs as
the seed suggests (0.5 -> 0.99).

``state_dict()`` holds only Python scalars, lists and dicts (checkpoints store it);
``load_state_dict()`` restores the counter and re-applies the value for that epoch to
the optimizer, so the order in which a checkpoint restores optimizer and scheduler
does not matter.
"""
import bisect
import math

from .optim import Adam, Optimizer
from .validators import finite_number, positive_int

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
           "LinearLR", "LinearWarmup", "MomentumSchedule", "ChainedScheduler"]


class _Schedule:
    """Shared machinery: the epoch counter, ``step``, and plain state dicts.

    Subclasses set their own attributes, then call ``super().__init__(optimizer)``,
    which applies the value of epoch 0; they implement ``_apply()``, which writes the
    value for ``self.last_epoch`` into the optimizer.
    """

    _nested = ()  # attributes holding other schedules (saved as their state dicts)

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"{type(self).__name__}: expected an airi.optim optimizer, "
                             f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.last_epoch = -1
        self.step()

    def step(self, epoch=None):
        """Move to the next epoch (or to ``epoch``) and update the optimizer.

        Call it once per epoch, after that epoch's ``optimizer.step()`` calls.
        """
        if epoch is None:
            self.last_epoch += 1
        else:
            if int(epoch) < 0:
                raise ValueError(f"{type(self).__name__}.step: epoch must be >= 0, "
                                 f"got {epoch!r}")
            self.last_epoch = int(epoch)
        self._apply()

    def _apply(self):
        raise NotImplementedError

    def get_last_lr(self):
        """The optimizer's current learning rate, as a one-element list (PyTorch)."""
        return [self.optimizer.lr]

    def state_dict(self):
        """The schedule's state (everything but the optimizer) as plain data."""
        state = {"type": type(self).__name__}
        for key, value in vars(self).items():
            if key == "optimizer":
                continue
            if key in self._nested:
                value = None if value is None else value.state_dict()
            elif isinstance(value, (list, tuple)):
                value = list(value)
            state[key] = value
        return state

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` of the same class, then apply its epoch's value
        to the optimizer."""
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            raise ValueError(f"{name}.load_state_dict: expected a dict, "
                             f"got {type(state_dict).__name__}")
        saved = dict(state_dict)
        saved_type = saved.pop("type", name)
        if saved_type != name:
            raise ValueError(f"{name}.load_state_dict: state was saved by {saved_type}")
        expected = set(vars(self)) - {"optimizer"}
        if set(saved) != expected:
            raise ValueError(f"{name}.load_state_dict: keys {sorted(saved)} do not match "
                             f"the expected {sorted(expected)}")
        for key in self._nested:
            inner = getattr(self, key)
            if (inner is None) != (saved[key] is None):
                raise ValueError(f"{name}.load_state_dict: {key} does not match")
            if inner is not None:
                inner.load_state_dict(saved.pop(key))
            else:
                saved.pop(key)
        for key, value in saved.items():
            setattr(self, key, list(value) if isinstance(value, tuple) else value)
        self.last_epoch = int(self.last_epoch)
        self._apply()

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if k not in ("optimizer",) + self._nested
                           and not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


# ------------------------------------------------------------------ learning rates
class LRScheduler(_Schedule):
    """Base class of learning-rate schedules (on its own: a constant rate).

    Subclasses implement ``_lr_at(epoch)``, the closed form of the rate.

    Parameters
    ----------
    optimizer : airi.optim.Optimizer
        Its ``lr`` when the scheduler is created is the base rate.

    Attributes
    ----------
    last_epoch : int
        Number of ``step()`` calls so far (0 after creation).
    base_lr : float
        The optimizer's ``lr`` at creation (``base_lrs`` is ``[base_lr]``).
    """

    def __init__(self, optimizer):
        if isinstance(optimizer, Optimizer):
            self.base_lr = float(optimizer.lr)
        self._last_lr = []
        super().__init__(optimizer)

    @property
    def base_lrs(self):
        return [self.base_lr]

    def _lr_at(self, epoch):
        return self.base_lr

    def get_lr(self):
        """The rate of the current epoch, as a one-element list."""
        return [self._lr_at(self.last_epoch)]

    def get_last_lr(self):
        """The rate last written to the optimizer, as a one-element list (PyTorch)."""
        return list(self._last_lr)

    def _apply(self):
        lr = float(self._lr_at(self.last_epoch))
        self.optimizer.lr = lr
        self._last_lr = [lr]


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs.

    ``lr(e) = base_lr * gamma ** (e // step_size)``

    Parameters
    ----------
    optimizer : airi.optim.Optimizer
    step_size : int
        Epochs between two decays (>= 1).
    gamma : float, default 0.1
        Decay factor (> 0).
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = positive_int(step_size, "step_size", "StepLR")
        self.gamma = finite_number(gamma, "gamma", "StepLR", 0.0, low_open=True)
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """Multiply the rate by ``gamma`` at each milestone epoch.

    ``lr(e) = base_lr * gamma ** (number of milestones <= e)``

    Parameters
    ----------
    optimizer : airi.optim.Optimizer
    milestones : list of int
        Epochs at which the rate decays (a repeated milestone decays twice).
    gamma : float, default 0.1
    """

    def __init__(self, optimizer, milestones, gamma=0.1):
        self.milestones = sorted(positive_int(m, "milestones[i]", "MultiStepLR")
                                 for m in milestones)
        self.gamma = finite_number(gamma, "gamma", "MultiStepLR", 0.0, low_open=True)
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every epoch: ``lr(e) = base_lr * gamma ** e``.

    Parameters
    ----------
    optimizer : airi.optim.Optimizer
    gamma : float
        Decay factor (> 0).
    """

    def __init__(self, optimizer, gamma):
        self.gamma = finite_number(gamma, "gamma", "ExponentialLR", 0.0, low_open=True)
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        return self.base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the base rate down to ``eta_min`` over ``T_max`` epochs
    (PyTorch's closed form, without restarts).

    ``lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2``

    Past ``T_max`` the cosine goes up again, as in PyTorch: pick ``T_max`` = the number
    of epochs.

    Parameters
    ----------
    optimizer : airi.optim.Optimizer
    T_max : int
        Epochs of the half period (>= 1).
    eta_min : float, default 0
        The final rate.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0):
        self.T_max = positive_int(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = finite_number(eta_min, "eta_min", "CosineAnnealingLR", 0.0)
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        cosine = (1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0
        return self.eta_min + (self.base_lr - self.eta_min) * cosine


class LinearLR(LRScheduler):
    """Scale the rate by a factor going linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` epochs, then constant (``torch``'s LinearLR).

    ``lr(e) = base_lr * (start + (end - start) * min(e, total_iters) / total_iters)``

    Parameters
    ----------
    optimizer : airi.optim.Optimizer
    start_factor : float, default 1/3
        In (0, 1].
    end_factor : float, default 1.0
        In [0, 1].
    total_iters : int, default 5
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        self.start_factor = finite_number(start_factor, "start_factor", "LinearLR", 0.0, 1.0,
                                   low_open=True)
        self.end_factor = finite_number(end_factor, "end_factor", "LinearLR", 0.0, 1.0)
        self.total_iters = positive_int(total_iters, "total_iters", "LinearLR")
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        progress = min(epoch, self.total_iters) / self.total_iters
        return self.base_lr * (self.start_factor
                               + (self.end_factor - self.start_factor) * progress)


class LinearWarmup(LRScheduler):
    """Linear warm-up over the first epochs, then another schedule (or a constant
    rate).

    ``lr(e) = base_lr * (start_factor + (1 - start_factor) * e / warmup_epochs)`` for
    ``e < warmup_epochs``; afterwards ``after``'s rate at epoch ``e - warmup_epochs``
    (``base_lr`` when there is no ``after``).

    Parameters
    ----------
    optimizer : airi.optim.Optimizer
    warmup_epochs : int
        Length of the warm-up (>= 1).
    start_factor : float, default 0.1
        Fraction of the base rate used at epoch 0, in (0, 1].
    after : LRScheduler, optional
        The schedule that follows, created on the same optimizer *before* this one
        (e.g. ``LinearWarmup(opt, 2, after=CosineAnnealingLR(opt, T_max=18))``). Only
        call this scheduler's ``step()``; it drives ``after``.
    """

    _nested = ("after",)

    def __init__(self, optimizer, warmup_epochs, start_factor=0.1, after=None):
        self.warmup_epochs = positive_int(warmup_epochs, "warmup_epochs", "LinearWarmup")
        self.start_factor = finite_number(start_factor, "start_factor", "LinearWarmup", 0.0, 1.0,
                                   low_open=True)
        if after is not None:
            if not isinstance(after, LRScheduler):
                raise ValueError(f"LinearWarmup: after must be a learning-rate scheduler, "
                                 f"got {type(after).__name__}")
            if after.optimizer is not optimizer:
                raise ValueError("LinearWarmup: after must drive the same optimizer")
        self.after = after
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        if epoch < self.warmup_epochs:
            progress = epoch / self.warmup_epochs
            return self.base_lr * (self.start_factor + (1.0 - self.start_factor) * progress)
        if self.after is None:
            return self.base_lr
        return self.after._lr_at(epoch - self.warmup_epochs)

    def _apply(self):
        if self.after is not None:
            # Keep the inner schedule's counter meaningful (never below its start).
            self.after.last_epoch = max(0, self.last_epoch - self.warmup_epochs)
        super()._apply()
        if self.after is not None:
            self.after._last_lr = list(self._last_lr)


# ------------------------------------------------------------------------ momentum
class MomentumSchedule(_Schedule):
    """Raise the momentum linearly over the first ``epochs`` epochs, then keep it.

    ``momentum(e) = start + (end - start) * min(e, epochs) / epochs``

    Seed 001: "start with a momentum of about 0.5 and raise it gradually to 0.99 over
    the epochs". The value goes to ``optimizer.momentum`` (SGD, RMSProp) or to
    ``optimizer.betas[0]`` (Adam, AdamW).

    Parameters
    ----------
    optimizer : SGD, RMSProp, Adam or AdamW
    start : float, default 0.5
    end : float, default 0.99
    epochs : int
        Number of ``step()`` calls after which ``end`` is reached (required).
    """

    def __init__(self, optimizer, start=0.5, end=0.99, epochs=None):
        if epochs is None:
            raise ValueError("MomentumSchedule: epochs is required, e.g. "
                             "MomentumSchedule(opt, 0.5, 0.99, epochs=10)")
        self.start = finite_number(start, "start", "MomentumSchedule", 0.0)
        self.end = finite_number(end, "end", "MomentumSchedule", 0.0)
        self.epochs = positive_int(epochs, "epochs", "MomentumSchedule")
        if isinstance(optimizer, Optimizer) and not isinstance(optimizer, Adam) \
                and "momentum" not in optimizer._hyper_names:
            raise ValueError(f"MomentumSchedule: {type(optimizer).__name__} has no "
                             f"momentum (use SGD, RMSProp, Adam or AdamW)")
        self._last_momentum = None
        super().__init__(optimizer)

    def _momentum_at(self, epoch):
        progress = min(epoch, self.epochs) / self.epochs
        return self.start + (self.end - self.start) * progress

    def _apply(self):
        value = self._momentum_at(self.last_epoch)
        if isinstance(self.optimizer, Adam):
            self.optimizer.betas = (value, self.optimizer.betas[1])
        else:
            self.optimizer.momentum = value
        self._last_momentum = value

    def get_last_momentum(self):
        """The momentum (or beta1) last written to the optimizer."""
        return self._last_momentum


# ------------------------------------------------------------------------ chaining
class ChainedScheduler:
    """Step several schedules together, e.g. a learning-rate schedule and a
    :class:`MomentumSchedule` (they must change different hyper-parameters).

    Parameters
    ----------
    schedulers : list of schedules
        Already created; their ``step()`` is called in order.
    """

    def __init__(self, schedulers):
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError("ChainedScheduler: needs at least one scheduler")
        for s in schedulers:
            if not isinstance(s, (_Schedule, ChainedScheduler)):
                raise ValueError(f"ChainedScheduler: {type(s).__name__} is not a "
                                 f"scheduler")
        self.schedulers = schedulers
        self.optimizer = schedulers[0].optimizer

    @property
    def last_epoch(self):
        """int: the epoch count of the first schedule (all step together)."""
        return self.schedulers[0].last_epoch

    def step(self, epoch=None):
        """Step every schedule, in order (once per epoch).

        Parameters
        ----------
        epoch : int, optional
            Jump to this epoch instead of the next one (passed to each schedule).
        """
        for s in self.schedulers:
            s.step(epoch)

    def get_last_lr(self):
        """The learning rate now set on the optimizer.

        Returns
        -------
        list of float
            One entry (airi optimizers have a single learning rate).
        """
        return [self.optimizer.lr]

    def state_dict(self):
        """The states of all schedules, for checkpoints.

        Returns
        -------
        dict
            ``type`` and ``schedulers`` (a list of each schedule's state_dict, in order).
        """
        return {"type": "ChainedScheduler",
                "schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state_dict):
        """Restore a state returned by :meth:`state_dict`.

        Parameters
        ----------
        state_dict : dict
            Must hold one state per schedule.

        Raises
        ------
        ValueError
            If the number of saved states differs from the number of schedules.
        """
        saved = state_dict.get("schedulers") if isinstance(state_dict, dict) else None
        if saved is None or len(saved) != len(self.schedulers):
            raise ValueError("ChainedScheduler.load_state_dict: expected the states of "
                             f"{len(self.schedulers)} schedulers")
        for s, state in zip(self.schedulers, saved):
            s.load_state_dict(state)

    def __repr__(self):
        return f"ChainedScheduler({self.schedulers!r})"
