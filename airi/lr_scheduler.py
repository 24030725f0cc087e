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

Two schedules are different: :class:`OneCycleLR` is stepped once per *batch* (its
``step_per_batch`` attribute is True; the Trainer honours it), and
:class:`ReduceLROnPlateau` is stepped with a validation metric, ``step(val_loss)``, and
lowers the rate when the metric stops improving.

``state_dict()`` holds only Python scalars, lists and dicts (checkpoints store it);
``load_state_dict()`` restores the counter and re-applies the value for that epoch to
the optimizer, so the order in which a checkpoint restores optimizer and scheduler
does not matter.
"""
import bisect
import math
import reprlib

from .optim import Adam, Optimizer
from .validators import finite_number, positive_int

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
           "LinearLR", "LinearWarmup", "MomentumSchedule", "ChainedScheduler",
           "OneCycleLR", "ReduceLROnPlateau"]


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

    #: Attributes that are counts (positive ints) where a schedule has them.
    _COUNTS = ("step_size", "T_max", "total_iters", "warmup_epochs", "epochs")

    def check_state(self):
        """Check attributes read from a model file (``airi.load`` calls it): the
        optimizer, ``last_epoch`` (an int >= 0: the constructor's step() made it 0),
        counts as positive ints, every other value a number (not NaN), a bool, a str,
        None or a list of numbers, nested schedules as schedules. A schedule with
        other kinds of state overrides :meth:`_check_field`.

        Raises
        ------
        ValueError
            Naming ``Class.attribute``.
        """
        name = type(self).__name__
        for key, value in vars(self).items():
            if key == "optimizer":
                if not isinstance(value, Optimizer):
                    raise ValueError(f"{name}.optimizer must be an airi optimizer, got "
                                     f"{type(value).__name__}")
            elif key in self._nested:
                if value is not None and not isinstance(value, (_Schedule,
                                                                ChainedScheduler)):
                    raise ValueError(f"{name}.{key} must be a schedule or None, got "
                                     f"{type(value).__name__}")
            else:
                self._check_field(key, value)
        if "optimizer" not in vars(self) or "last_epoch" not in vars(self):
            raise ValueError(f"{name}.optimizer and {name}.last_epoch are required")

    def _check_field(self, key, value):
        """A plain field of the schedule's state (see :meth:`check_state`)."""
        name = type(self).__name__

        def bad(expected):
            raise ValueError(f"{name}.{key} must be {expected}, got {reprlib.repr(value)}")

        def number(v):     # inf is allowed (e.g. a plateau schedule's best so far)
            return type(v) in (int, float, bool) and v == v

        if key == "last_epoch":
            if type(value) is not int or value < 0:
                bad("an int >= 0")
        elif key in self._COUNTS:
            if type(value) is not int or value < 1:
                bad("a positive int")
        elif isinstance(value, (list, tuple)):
            if not all(number(v) for v in value):
                bad("a list of numbers")
        elif value is not None and type(value) is not str and not number(value):
            bad("a number, a str or None")

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
        for key, value in saved.items():     # all checked before anything changes
            if key not in self._nested:
                self._check_field(key, value)
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

    def check_state(self):
        """Check attributes read from a model file (``airi.load`` calls it)."""
        schedulers = vars(self).get("schedulers")
        if type(schedulers) is not list or not schedulers or not all(
                isinstance(s, (_Schedule, ChainedScheduler)) for s in schedulers):
            raise ValueError("ChainedScheduler.schedulers must be a non-empty list of "
                             f"schedules, got {reprlib.repr(schedulers)}")
        if not isinstance(vars(self).get("optimizer"), Optimizer):
            raise ValueError("ChainedScheduler.optimizer must be an airi optimizer")

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



# ------------------------------------------------------------------------ one cycle
def _anneal_cos(start, end, pct):
    """Cosine from ``start`` (pct 0) to ``end`` (pct 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start, end, pct):
    return (end - start) * pct + start


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin 2017, ``torch.optim.lr_scheduler.OneCycleLR``):
    the rate rises from ``max_lr / div_factor`` to ``max_lr`` over the first
    ``pct_start`` of the steps, then anneals to ``initial_lr / final_div_factor``; the
    momentum (SGD's ``momentum``, RMSProp's, or Adam's ``beta1``) moves the opposite way,
    ``max_momentum`` -> ``base_momentum`` -> ``max_momentum``.

    Stepped once per **batch** (``step_per_batch = True``): ``total_steps`` is the
    number of optimizer steps of the whole run. Creating it sets the rate (and momentum)
    of step 0; stepping more than ``total_steps`` times is an error, as in PyTorch.

    Parameters
    ----------
    optimizer : airi.optim.Optimizer
        Its own ``lr`` is ignored (overwritten with ``max_lr / div_factor``).
    max_lr : float
        The peak rate (> 0), required.
    total_steps : int, optional
        Steps in the cycle; else ``epochs * steps_per_epoch``.
    epochs, steps_per_epoch : int, optional
        Used when ``total_steps`` is None.
    pct_start : float, default 0.3
        Share of the cycle spent raising the rate, in [0, 1].
    anneal_strategy : {"cos", "linear"}, default "cos"
    cycle_momentum : bool, default True
        Cycle the momentum too; the optimizer must have one (``momentum`` or ``betas``).
    base_momentum, max_momentum : float, default 0.85, 0.95
    div_factor : float, default 25
        ``initial_lr = max_lr / div_factor``.
    final_div_factor : float, default 1e4
        ``min_lr = initial_lr / final_div_factor``.
    three_phase : bool, default False
        Three phases as in fast.ai's original: up, back down to ``initial_lr``
        (symmetrically), then down to ``min_lr``.

    Attributes
    ----------
    total_steps : int
    initial_lr, max_lr, min_lr : float
    phases : list of dict
        ``end_step``, ``start_lr``, ``end_lr``, ``start_momentum``, ``end_momentum``
        (names of the values above), as in PyTorch.
    """

    step_per_batch = True

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None,
                 steps_per_epoch=None, pct_start=0.3, anneal_strategy="cos", cycle_momentum=True,
                 base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False):
        name = "OneCycleLR"
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"{name}: expected an airi.optim optimizer, "
                             f"got {type(optimizer).__name__}")
        if total_steps is not None:
            self.total_steps = positive_int(total_steps, "total_steps", name)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (positive_int(epochs, "epochs", name)
                                * positive_int(steps_per_epoch, "steps_per_epoch", name))
        else:
            raise ValueError(f"{name}: give total_steps, or both epochs and "
                             "steps_per_epoch")
        pct_start = finite_number(pct_start, "pct_start", name, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{name}: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self.max_lr = finite_number(max_lr, "max_lr", name, 0.0)
        div_factor = finite_number(div_factor, "div_factor", name, 0.0, low_open=True)
        final_div_factor = finite_number(final_div_factor, "final_div_factor", name, 0.0,
                                         low_open=True)
        self.initial_lr = self.max_lr / div_factor
        self.min_lr = self.initial_lr / final_div_factor
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum = finite_number(base_momentum, "base_momentum", name, 0.0)
        self.max_momentum = finite_number(max_momentum, "max_momentum", name, 0.0)
        if self.cycle_momentum and not self._has_momentum(optimizer):
            raise ValueError(f"{name}: {type(optimizer).__name__} has no momentum or "
                             "beta1 to cycle; pass cycle_momentum=False")
        total = self.total_steps
        if three_phase:
            self.phases = [
                dict(end_step=float(pct_start * total) - 1, start_lr="initial_lr",
                     end_lr="max_lr", start_momentum="max_momentum",
                     end_momentum="base_momentum"),
                dict(end_step=float(2 * pct_start * total) - 2, start_lr="max_lr",
                     end_lr="initial_lr", start_momentum="base_momentum",
                     end_momentum="max_momentum"),
                dict(end_step=total - 1, start_lr="initial_lr", end_lr="min_lr",
                     start_momentum="max_momentum", end_momentum="max_momentum")]
        else:
            self.phases = [
                dict(end_step=float(pct_start * total) - 1, start_lr="initial_lr",
                     end_lr="max_lr", start_momentum="max_momentum",
                     end_momentum="base_momentum"),
                dict(end_step=total - 1, start_lr="max_lr", end_lr="min_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum")]
        self.three_phase = bool(three_phase)
        self._last_momentum = None
        super().__init__(optimizer)

    _PHASE_VALUES = {"start_lr": ("initial_lr", "max_lr", "min_lr"),
                     "end_lr": ("initial_lr", "max_lr", "min_lr"),
                     "start_momentum": ("base_momentum", "max_momentum"),
                     "end_momentum": ("base_momentum", "max_momentum")}

    def _check_field(self, key, value):
        """``phases`` (2 or 3 dicts naming the values each phase goes between) and
        ``anneal_strategy`` have their own checks; the rest as every schedule's."""
        if key == "phases":
            keys = {"end_step", *self._PHASE_VALUES}
            ok = type(value) in (list, tuple) and len(value) in (2, 3) and all(
                type(phase) is dict and set(phase) == keys
                and type(phase["end_step"]) in (int, float)
                and phase["end_step"] == phase["end_step"]
                and all(phase[k] in names for k, names in self._PHASE_VALUES.items())
                for phase in value)
            if not ok:
                raise ValueError(f"OneCycleLR.phases must be 2 or 3 phases as OneCycleLR "
                                 f"makes them, got {reprlib.repr(value)}")
        elif key == "anneal_strategy":
            if value not in ("cos", "linear"):
                raise ValueError(f"OneCycleLR.anneal_strategy must be 'cos' or 'linear', "
                                 f"got {reprlib.repr(value)}")
        elif key == "total_steps":
            if type(value) is not int or value < 1:
                raise ValueError(f"OneCycleLR.total_steps must be a positive int, got "
                                 f"{reprlib.repr(value)}")
        else:
            super()._check_field(key, value)

    @staticmethod
    def _has_momentum(optimizer):
        names = getattr(optimizer, "_hyper_names", ())
        return "momentum" in names or "betas" in names

    def _values_at(self, step):
        """(lr, momentum) at ``step``, PyTorch's phase walk."""
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {step} times; the cycle has "
                             f"total_steps={self.total_steps} (step once per batch)")
        anneal = _anneal_cos if self.anneal_strategy == "cos" else _anneal_linear
        start_step = 0.0
        for i, phase in enumerate(self.phases):
            end_step = phase["end_step"]
            if step <= end_step or i == len(self.phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                lr = anneal(getattr(self, phase["start_lr"]),
                            getattr(self, phase["end_lr"]), pct)
                momentum = anneal(getattr(self, phase["start_momentum"]),
                                  getattr(self, phase["end_momentum"]), pct)
                return lr, momentum
            start_step = phase["end_step"]
        raise AssertionError("unreachable")

    def _lr_at(self, step):
        return self._values_at(step)[0]

    def _apply(self):
        lr, momentum = self._values_at(self.last_epoch)
        # Step total_steps (after the last batch) extrapolates the last phase; with a
        # linear anneal that can dip below 0, which PyTorch writes as is (it is never
        # used) and airi's optimizers refuse: write 0 instead.
        lr = max(lr, 0.0)
        self.optimizer.lr = float(lr)
        self._last_lr = [float(lr)]
        if self.cycle_momentum:
            if "betas" in self.optimizer._hyper_names:
                self.optimizer.betas = (momentum, self.optimizer.betas[1])
            else:
                self.optimizer.momentum = momentum
            self._last_momentum = momentum

    def get_last_momentum(self):
        """The momentum (or beta1) last written to the optimizer (None when not
        cycled)."""
        return self._last_momentum


# ------------------------------------------------------------------------ plateau
class ReduceLROnPlateau:
    """Lower the rate when a metric has stopped improving
    (``torch.optim.lr_scheduler.ReduceLROnPlateau``).

    Call ``step(metric)`` once per epoch with the validation metric (the Trainer feeds
    it the metric it monitors). When the metric has not improved for more than
    ``patience`` epochs, ``lr = max(lr * factor, min_lr)`` (skipped when the change is
    below ``eps``), then ``cooldown`` epochs pass before bad epochs count again.

    "Improved" means, for ``mode="min"``: ``metric < best * (1 - threshold)``
    (``threshold_mode="rel"``) or ``metric < best - threshold`` ("abs"); for "max":
    ``metric > best * (1 + threshold)`` or ``metric > best + threshold``.

    Parameters
    ----------
    optimizer : airi.optim.Optimizer
    mode : {"min", "max"}, default "min"
        "min" for a loss, "max" for an accuracy.
    factor : float, default 0.1
        In [0, 1).
    patience : int, default 10
        Bad epochs tolerated before lowering the rate (>= 0).
    threshold : float, default 1e-4
    threshold_mode : {"rel", "abs"}, default "rel"
    cooldown : int, default 0
    min_lr : float, default 0
    eps : float, default 1e-8

    Attributes
    ----------
    best : float
        The best metric so far (inf / -inf at the start).
    num_bad_epochs : int
    last_epoch : int
        Number of ``step`` calls.
    """

    step_per_batch = False

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        name = "ReduceLROnPlateau"
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"{name}: expected an airi.optim optimizer, "
                             f"got {type(optimizer).__name__}")
        if mode not in ("min", "max"):
            raise ValueError(f"{name}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{name}: threshold_mode must be 'rel' or 'abs', got "
                             f"{threshold_mode!r}")
        factor = finite_number(factor, "factor", name, 0.0)
        if factor >= 1.0:
            raise ValueError(f"{name}: factor must be < 1.0 (it multiplies the rate), got "
                             f"{factor!r}")
        self.optimizer = optimizer
        self.mode = mode
        self.factor = factor
        self.patience = _non_negative_int(patience, "patience", name)
        self.threshold = finite_number(threshold, "threshold", name, 0.0)
        self.threshold_mode = threshold_mode
        self.cooldown = _non_negative_int(cooldown, "cooldown", name)
        self.min_lr = finite_number(min_lr, "min_lr", name, 0.0)
        self.eps = finite_number(eps, "eps", name, 0.0)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [float(optimizer.lr)]

    def is_better(self, metric, best):
        """Whether ``metric`` improves on ``best`` by more than the threshold."""
        if self.mode == "min":
            bound = best * (1.0 - self.threshold) if self.threshold_mode == "rel" \
                else best - self.threshold
            return metric < bound
        bound = best * (self.threshold + 1.0) if self.threshold_mode == "rel" \
            else best + self.threshold
        return metric > bound

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def step(self, metrics):
        """Record this epoch's ``metrics`` (a number) and lower the rate if it has
        plateaued."""
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise ValueError(f"ReduceLROnPlateau.step: expected the metric (a number), "
                             f"got {metrics!r}") from None
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [float(self.optimizer.lr)]

    def _reduce_lr(self):
        old = float(self.optimizer.lr)
        new = max(old * self.factor, self.min_lr)
        if old - new > self.eps:
            self.optimizer.lr = new

    def get_last_lr(self):
        """The rate after the last step, as a one-element list (PyTorch)."""
        return list(self._last_lr)

    _STATE_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
                   "min_lr", "eps", "best", "num_bad_epochs", "cooldown_counter",
                   "last_epoch", "_last_lr")

    def state_dict(self):
        """Everything but the optimizer, as plain data (for checkpoints)."""
        state = {"type": "ReduceLROnPlateau"}
        for key in self._STATE_KEYS:
            value = getattr(self, key)
            state[key] = list(value) if isinstance(value, (list, tuple)) else value
        return state

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` (the optimizer's rate is not changed: it is in
        the optimizer's own state). Everything is checked before anything changes."""
        if not isinstance(state_dict, dict) or \
                state_dict.get("type", "ReduceLROnPlateau") != "ReduceLROnPlateau":
            raise ValueError("ReduceLROnPlateau.load_state_dict: expected a state saved by "
                             "ReduceLROnPlateau")
        missing = [k for k in self._STATE_KEYS if k not in state_dict]
        if missing:
            raise ValueError(f"ReduceLROnPlateau.load_state_dict: missing {missing}")
        for key in self._STATE_KEYS:
            self._check_field(key, state_dict[key])
        for key in self._STATE_KEYS:
            value = state_dict[key]
            setattr(self, key, list(value) if isinstance(value, tuple) else value)

    def _check_field(self, key, value):
        """One saved attribute, as the constructor and :meth:`step` make it."""
        def bad(expected):
            raise ValueError(f"ReduceLROnPlateau.{key} must be {expected}, got "
                             f"{reprlib.repr(value)}")

        def number(v):     # inf is allowed: the best metric before the first step
            return type(v) in (int, float) and v == v

        if key == "mode":
            if value not in ("min", "max"):
                bad("'min' or 'max'")
        elif key == "threshold_mode":
            if value not in ("rel", "abs"):
                bad("'rel' or 'abs'")
        elif key in ("patience", "cooldown", "num_bad_epochs", "cooldown_counter",
                     "last_epoch"):
            if type(value) is not int or value < 0:
                bad("an int >= 0")
        elif key == "_last_lr":
            if type(value) not in (list, tuple) or len(value) != 1 \
                    or not number(value[0]):
                bad("a list of one number")
        elif key == "factor":
            if not number(value) or not 0 <= value < 1:
                bad("a number in [0, 1)")
        elif not number(value):
            bad("a number")

    def check_state(self):
        """Check attributes read from a model file (``airi.load`` calls it)."""
        if not isinstance(vars(self).get("optimizer"), Optimizer):
            raise ValueError("ReduceLROnPlateau.optimizer must be an airi optimizer")
        for key in self._STATE_KEYS:
            if key not in vars(self):
                raise ValueError(f"ReduceLROnPlateau.{key} is missing")
            self._check_field(key, vars(self)[key])

    def __repr__(self):
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, "
                f"patience={self.patience}, best={self.best})")


def _non_negative_int(value, name, owner):
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 0:
        raise ValueError(f"{owner}: {name} must be an integer >= 0, got {value!r}")
    return int(value)
