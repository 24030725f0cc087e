"""Optimizers: SGD (with momentum and Nesterov), AdaGrad, RMSProp, Adadelta, Adam and
AdamW.

Each optimizer holds a list of :class:`airi.Parameter` and, on :meth:`Optimizer.step`,
moves every ``param.data`` that has a gradient, in place. The update rules are those
of ``torch.optim`` with its default options (same hyper-parameter names, same order of
operations), so a run can be compared with PyTorch step for step.

Typical loop (seed 004)::

    opt = airi.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for X, y in loader:
        opt.zero_grad()
        loss = criterion(model(X), y)
        model.backward(criterion.backward())
        opt.step()

Implementation notes
--------------------
* ``param.data`` is read at every step, so an array assigned to ``param.data`` (or a
  parameter converted with ``to(dtype)``) is what gets updated.
* Everything is computed with in-place ufuncs (``out=``) into per-parameter state
  buffers and a small shared scratch space, so a step allocates nothing once the
  buffers exist. Buffers take the parameter's dtype: float32 parameters stay float32.
* Hyper-parameters are plain attributes (``opt.lr = 0.01``), checked when assigned.
  ``param_groups`` gives the PyTorch view of the same values
  (``opt.param_groups[0]["lr"] = 0.01`` also works).
* :meth:`Optimizer.state_dict` is made of dicts, lists, tuples, Python scalars and
  NumPy arrays only, so ``airi.save`` can store it in a checkpoint.
"""
import math
import reprlib
from collections.abc import MutableMapping

import numpy as np

from .parameter import Parameter

__all__ = ["Optimizer", "SGD", "AdaGrad", "Adagrad", "RMSProp", "RMSprop", "Adadelta",
           "Adam", "AdamW"]


# ------------------------------------------------------------------ validation helpers
def _number(opt_name, name, value, low=0.0, high=None, high_open=False):
    """``value`` as a Python float in [low, high] (or [low, high)); ValueError otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{opt_name}: {name} must be a number, got {value!r}") from None
    if isinstance(value, (bool, np.bool_)) or not math.isfinite(x):
        raise ValueError(f"{opt_name}: {name} must be a finite number, got {value!r}")
    if x < low:
        raise ValueError(f"{opt_name}: {name} must be >= {low}, got {value!r}")
    if high is not None and (x >= high if high_open else x > high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{opt_name}: {name} must be in [{low}, {high}{bracket}, "
                         f"got {value!r}")
    return x


def _flag(opt_name, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{opt_name}: {name} must be True or False, got {value!r}")
    return bool(value)


def _betas(opt_name, value):
    try:
        beta1, beta2 = value
    except (TypeError, ValueError):
        raise ValueError(f"{opt_name}: betas must be a pair (beta1, beta2), "
                         f"got {value!r}") from None
    return (_number(opt_name, "betas[0]", beta1, 0.0, 1.0, high_open=True),
            _number(opt_name, "betas[1]", beta2, 0.0, 1.0, high_open=True))


def _check_params(opt_name, params):
    """The parameters as a list; ValueError for anything but distinct Parameters."""
    if isinstance(params, Parameter):
        raise ValueError(f"{opt_name}: params must be a list of Parameters, got a single "
                         f"Parameter (wrap it in a list: [{params.name or 'param'}])")
    if hasattr(params, "parameters") and callable(params.parameters):
        raise ValueError(f"{opt_name}: params must be a list of Parameters, got "
                         f"{type(params).__name__}; pass model.parameters()")
    try:
        params = list(params)
    except TypeError:
        raise ValueError(f"{opt_name}: params must be a list of Parameters, "
                         f"got {type(params).__name__}") from None
    if not params:
        raise ValueError(f"{opt_name}: got an empty parameter list (does the model have "
                         f"trainable parameters?)")
    seen = set()
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise ValueError(f"{opt_name}: params[{i}] is a {type(p).__name__}, expected "
                             f"an airi.Parameter")
        if id(p) in seen:
            raise ValueError(f"{opt_name}: params[{i}] ({p.name!r}) appears twice; it "
                             f"would be updated twice per step")
        seen.add(id(p))
    return params


# ------------------------------------------------------------------- scratch space
class _Scratch:
    """Reusable temporary arrays for the arithmetic of one parameter at a time.

    Slot ``k`` is one flat buffer per (dtype, array type) sized for the largest
    parameter; ``get(k, like)`` returns a view of it shaped like ``like``. Parameters are
    updated one after the other, so they can all share the same slots.
    """

    def __init__(self):
        self._buffers = {}

    def get(self, slot, like, capacity):
        key = (slot, like.dtype, type(like))
        buf = self._buffers.get(key)
        if buf is None or buf.size < like.size:
            # empty_like (not np.empty) so that a CuPy parameter gets a CuPy buffer.
            buf = np.empty_like(like, shape=(max(capacity, like.size),))
            self._buffers[key] = buf
        return buf[:like.size].reshape(like.shape)


def _lerp_(start, end, weight, tmp):
    """``start += weight * (end - start)`` in place, in the same two forms as
    ``torch.lerp`` (the one for weight >= 0.5 keeps ``end`` exact when weight is 1)."""
    np.subtract(end, start, out=tmp)
    if weight < 0.5:
        tmp *= weight
        start += tmp
    else:
        tmp *= 1.0 - weight
        np.subtract(end, tmp, out=start)


# ------------------------------------------------------------------- param_groups view
class _ParamGroup(MutableMapping):
    """PyTorch's ``param_groups[0]``: a dict-like view of the optimizer's
    hyper-parameters (writing ``group["lr"]`` sets ``optimizer.lr``)."""

    def __init__(self, optimizer):
        self._opt = optimizer

    def __getitem__(self, key):
        if key == "params":
            return self._opt.params
        if key in self._opt._hyper_names:
            return getattr(self._opt, key)
        raise KeyError(key)

    def __setitem__(self, key, value):
        if key not in self._opt._hyper_names:
            raise KeyError(f"{type(self._opt).__name__} has no hyper-parameter {key!r}")
        setattr(self._opt, key, value)

    def __delitem__(self, key):
        raise TypeError("hyper-parameters cannot be deleted")

    def __iter__(self):
        return iter(("params",) + self._opt._hyper_names)

    def __len__(self):
        return 1 + len(self._opt._hyper_names)

    def __repr__(self):
        return repr(dict(self))


# ------------------------------------------------------------------------ base class
class Optimizer:
    """Base class: a list of parameters, their per-parameter state and the
    hyper-parameters.

    Subclasses list their hyper-parameters in ``_hyper_names`` (constructor order),
    check each one in ``_check_hyper`` and implement ``_update(data, grad, state, hp,
    scratch)``.

    Attributes
    ----------
    params : list of Parameter
        The parameters updated by :meth:`step`, in the order given.
    state : list of dict
        Per-parameter state, by position in ``params`` (empty until that parameter's
        first update): ``"step"`` and the buffers of the rule, each an array with the
        parameter's shape and dtype.
    defaults : dict
        The hyper-parameters given to the constructor.
    param_groups : list of one dict-like
        PyTorch-style view of the current hyper-parameters and ``"params"``.
    """

    _hyper_names = ()
    _state_names = ()  # names of the array buffers this rule may keep

    def __init__(self, params, **hyper):
        name = type(self).__name__
        params = _check_params(name, params)
        object.__setattr__(self, "params", params)
        for key, value in hyper.items():
            setattr(self, key, value)  # checked by __setattr__
        self._check_combination()
        self.defaults = {key: getattr(self, key) for key in self._hyper_names}
        self.state = [{} for _ in params]
        self.param_groups = [_ParamGroup(self)]
        self._scratch = _Scratch()
        self._capacity = max(p.size for p in params)

    def __setattr__(self, name, value):
        if name in self._hyper_names:
            value = self._check_hyper(name, value)
        object.__setattr__(self, name, value)

    def _check_hyper(self, name, value):
        raise NotImplementedError

    def check_state(self):
        """Check attributes read from a model file (``airi.load`` calls it) as the
        constructor and :meth:`load_state_dict` would: the parameters, every
        hyper-parameter, the per-parameter state. The scratch size is recomputed from
        the parameters (never taken from the file).

        Raises
        ------
        ValueError
            Naming ``Class.attribute``.
        """
        name = type(self).__name__
        attrs = vars(self)

        def bad(key, expected, got):
            raise ValueError(f"{name}.{key} must be {expected}, got {reprlib.repr(got)}")

        params = attrs.get("params")
        if type(params) is not list or not params or not all(
                isinstance(p, Parameter) for p in params):
            bad("params", "a non-empty list of Parameters", params)
        for key in self._hyper_names:
            if key not in attrs:
                raise ValueError(f"{name}.{key} is missing")
            try:
                value = self._check_hyper(key, attrs[key])
            except ValueError as exc:
                raise ValueError(f"{name}.{key}: {exc}") from None
            object.__setattr__(self, key, value)
        self._check_combination()
        if type(attrs.get("defaults")) is not dict:
            bad("defaults", "a dict", attrs.get("defaults"))
        state = attrs.get("state")
        if type(state) is not list or len(state) != len(params) or not all(
                type(s) is dict for s in state):
            bad("state", f"a list of {len(params)} dicts", state)
        for i, (s, p) in enumerate(zip(state, params)):
            for key, value in s.items():
                if key == "step":
                    if type(value) is not int or value < 0:
                        bad(f"state[{i}]['step']", "an int >= 0", value)
                elif key not in self._state_names:
                    bad(f"state[{i}]", f"keys among {('step',) + self._state_names}", key)
                elif not (isinstance(value, np.ndarray) and value.dtype.kind == "f"
                          and value.shape == p.shape):
                    bad(f"state[{i}][{key!r}]", f"a float array of shape {p.shape}",
                        getattr(value, "shape", value))
        object.__setattr__(self, "_capacity", max(p.size for p in params))

    def _check_combination(self):
        """Checks that involve several hyper-parameters (run by the constructor)."""

    # ---------------------------------------------------------------- stepping
    def step(self, closure=None):
        """Update every parameter that has a gradient, in place.

        Parameters whose ``grad`` is None are skipped (their state is unchanged).

        Parameters
        ----------
        closure : callable, optional
            Called first (it should recompute the loss and the gradients); its
            return value is returned, as in PyTorch.

        Returns
        -------
        The closure's result, or None.
        """
        loss = closure() if closure is not None else None
        hp = {key: getattr(self, key) for key in self._hyper_names}
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            data = p.data
            if grad.shape != data.shape:
                raise ValueError(f"{type(self).__name__}: gradient of params[{i}] "
                                 f"({p.name!r}) has shape {grad.shape}, expected "
                                 f"{data.shape}")
            state = self.state[i]
            state["step"] = state.get("step", 0) + 1
            self._update(data, grad, state, hp, self._scratch_for(data))
        return loss

    def _scratch_for(self, data):
        return lambda slot: self._scratch.get(slot, data, self._capacity)

    def _update(self, data, grad, state, hp, scratch):
        raise NotImplementedError

    @staticmethod
    def _buffer(state, key, data, fill=0.0):
        """State buffer ``key`` shaped and typed like ``data`` (created filled with
        ``fill``; converted once if the parameter changed dtype)."""
        buf = state.get(key)
        if buf is None:
            buf = np.full_like(data, fill) if fill else np.zeros_like(data)
            state[key] = buf
        elif buf.dtype != data.dtype:
            buf = state[key] = buf.astype(data.dtype)
        return buf

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: ``grad = None`` (or fill them with zeros in place when
        ``set_to_none=False``)."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.fill(0)

    # ------------------------------------------------------------ state dicts
    def state_dict(self):
        """The optimizer's state as plain data (for checkpoints).

        Returns
        -------
        dict
            ``{"type": class name, "state": {position: {"step": int, buffer name:
            ndarray copy, ...}}, "param_groups": [{hyper-parameters..., "params":
            [0, 1, ...]}], "defaults": {...}}``; the layout of ``torch.optim``'s
            state dicts (plus ``type`` and ``defaults``).
        """
        state = {}
        for i, s in enumerate(self.state):
            if s:
                state[i] = {key: (value.copy() if hasattr(value, "shape") else value)
                            for key, value in s.items()}
        group = {key: getattr(self, key) for key in self._hyper_names}
        group["params"] = list(range(len(self.params)))
        return {"type": type(self).__name__, "state": state, "param_groups": [group],
                "defaults": dict(self.defaults)}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` of the same optimizer class on parameters of the
        same shapes: hyper-parameters (including ``lr``), step counts and buffers, which
        are copied into this optimizer's buffers (in the parameters' dtype).

        Everything is checked before anything changes; a mismatch raises ValueError.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict from "
                             f"Optimizer.state_dict(), got {type(state_dict).__name__}")
        saved_type = state_dict.get("type", name)
        if saved_type != name and _CANONICAL.get(saved_type) != name:
            raise ValueError(f"{name}.load_state_dict: state was saved by {saved_type}")
        groups = state_dict["param_groups"]
        if len(groups) != 1:
            raise ValueError(f"{name}.load_state_dict: expected one parameter group, "
                             f"got {len(groups)}")
        group = groups[0]
        n = len(group.get("params", ()))
        if n != len(self.params):
            raise ValueError(f"{name}.load_state_dict: state is for {n} parameters, this "
                             f"optimizer has {len(self.params)}")
        missing = [key for key in self._hyper_names if key not in group]
        if missing:
            raise ValueError(f"{name}.load_state_dict: hyper-parameters missing: {missing}")
        checked = {key: self._check_hyper(key, group[key]) for key in self._hyper_names}

        new_state = [{} for _ in self.params]
        for i, saved in dict(state_dict["state"]).items():
            if not isinstance(i, (int, np.integer)) or not 0 <= i < len(self.params):
                raise ValueError(f"{name}.load_state_dict: state for unknown parameter "
                                 f"position {i!r}")
            i = int(i)
            data = self.params[i].data
            for key, value in saved.items():
                if key == "step":
                    if isinstance(value, (bool, np.bool_)) or not isinstance(
                            value, (int, np.integer)) or value < 0:
                        raise ValueError(f"{name}.load_state_dict: step of params[{i}] "
                                         f"must be an int >= 0, got {reprlib.repr(value)}")
                    new_state[i]["step"] = int(value)
                    continue
                if key not in self._state_names:
                    raise ValueError(f"{name}.load_state_dict: unknown state {key!r} for "
                                     f"params[{i}]")
                value = np.asarray(value)
                if value.shape != data.shape:
                    raise ValueError(f"{name}.load_state_dict: {key} of params[{i}] has "
                                     f"shape {value.shape}, the parameter has {data.shape}")
                new_state[i][key] = value

        # All checked: now change this optimizer.
        for key, value in checked.items():
            object.__setattr__(self, key, value)
        self.defaults.update(state_dict.get("defaults", {}))
        for i, loaded in enumerate(new_state):
            data = self.params[i].data
            current = self.state[i]
            for key in [k for k in current if k not in loaded]:
                del current[key]
            for key, value in loaded.items():
                if key == "step":
                    current[key] = value
                    continue
                buf = current.get(key)
                if buf is None or buf.dtype != data.dtype or buf.shape != data.shape:
                    buf = current[key] = np.zeros_like(data)
                np.copyto(buf, value, casting="unsafe")

    # ------------------------------------------------------------------ misc
    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_scratch"], state["param_groups"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._scratch = _Scratch()
        self.param_groups = [_ParamGroup(self)]

    def __repr__(self):
        hp = ", ".join(f"{key}={getattr(self, key)!r}" for key in self._hyper_names)
        return f"{type(self).__name__}({hp}; {len(self.params)} parameters)"


# -------------------------------------------------------------------------------- SGD
class SGD(Optimizer):
    r"""Stochastic gradient descent, with optional momentum, Nesterov momentum and L2
    weight decay (``torch.optim.SGD``).

    For each parameter :math:`\theta` with gradient :math:`g`, at step :math:`t`:

    .. code-block:: text

        g = g + weight_decay * theta                      (if weight_decay != 0)
        if momentum != 0:
            b = g                                         (t = 1: buffer = first gradient)
            b = momentum * b + (1 - dampening) * g        (t > 1)
            g = g + momentum * b   if nesterov  else  b
        theta = theta - lr * g

    Note the momentum form: ``b`` accumulates gradients and ``lr`` multiplies it (the
    seed's ``v = mu * v - lr * dx; x += v`` gives the same steps when ``lr`` is
    constant).

    Parameters
    ----------
    params : iterable of Parameter
        The parameters to update (e.g. ``model.parameters()``).
    lr : float
        Learning rate (>= 0), required.
    momentum : float, default 0
        Momentum factor (>= 0); a :class:`airi.lr_scheduler.MomentumSchedule` may
        change ``optimizer.momentum`` between epochs.
    dampening : float, default 0
        Dampening for momentum, in [0, 1].
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    weight_decay : float, default 0
        L2 penalty added to the gradient.

    Notes
    -----
    State per parameter: ``step`` and ``momentum_buffer`` (only when momentum is used).
    """

    _hyper_names = ("lr", "momentum", "dampening", "nesterov", "weight_decay")
    _state_names = ("momentum_buffer",)

    def __init__(self, params, lr=None, momentum=0, dampening=0, nesterov=False,
                 weight_decay=0):
        if lr is None:
            raise ValueError("SGD: the learning rate lr is required, e.g. "
                             "SGD(model.parameters(), lr=0.01)")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         nesterov=nesterov, weight_decay=weight_decay)

    def _check_hyper(self, name, value):
        if name == "nesterov":
            return _flag("SGD", name, value)
        if name == "dampening":
            return _number("SGD", name, value, 0.0, 1.0)
        return _number("SGD", name, value)

    def _check_combination(self):
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires momentum > 0 and "
                             "dampening = 0")

    def _update(self, data, grad, state, hp, scratch):
        lr, momentum, dampening = hp["lr"], hp["momentum"], hp["dampening"]
        d = grad
        if hp["weight_decay"] != 0:
            d = np.multiply(data, hp["weight_decay"], out=scratch(0))
            d += grad
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.zeros_like(data)
                np.copyto(buf, d, casting="same_kind")
            else:
                if buf.dtype != data.dtype:
                    buf = state["momentum_buffer"] = buf.astype(data.dtype)
                buf *= momentum
                if dampening == 0:
                    buf += d
                else:
                    tmp = np.multiply(d, 1.0 - dampening, out=scratch(1))
                    buf += tmp
            if hp["nesterov"]:
                step = np.multiply(buf, momentum, out=scratch(1))
                step += d
                d = step
            else:
                d = buf
        step = np.multiply(d, lr, out=scratch(1))
        data -= step


# ---------------------------------------------------------------------------- AdaGrad
class AdaGrad(Optimizer):
    r"""AdaGrad: a learning rate per weight, shrinking with the sum of its squared
    gradients (``torch.optim.Adagrad``).

    .. code-block:: text

        g   = g + weight_decay * theta                    (if weight_decay != 0)
        clr = lr / (1 + (t - 1) * lr_decay)
        sum = sum + g * g                                 (sum starts at
                                                           initial_accumulator_value)
        theta = theta - clr * g / (sqrt(sum) + eps)

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1e-2
    lr_decay : float, default 0
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
    eps : float, default 1e-10
        Added to the square root (outside it).

    Notes
    -----
    State per parameter: ``step`` and ``sum``.
    """

    _hyper_names = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
    _state_names = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10):
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps)

    def _check_hyper(self, name, value):
        return _number(type(self).__name__, name, value)

    def _update(self, data, grad, state, hp, scratch):
        total = self._buffer(state, "sum", data, hp["initial_accumulator_value"])
        d = grad
        if hp["weight_decay"] != 0:
            d = np.multiply(data, hp["weight_decay"], out=scratch(0))
            d += grad
        clr = hp["lr"] / (1.0 + (state["step"] - 1) * hp["lr_decay"])
        tmp = np.multiply(d, d, out=scratch(1))
        total += tmp
        std = np.sqrt(total, out=tmp)
        std += hp["eps"]
        step = np.divide(d, std, out=tmp)
        step *= clr
        data -= step


Adagrad = AdaGrad


# ---------------------------------------------------------------------------- RMSProp
class RMSProp(Optimizer):
    r"""RMSProp: divide the gradient by a running root mean square of recent
    gradients (``torch.optim.RMSprop``).

    .. code-block:: text

        g   = g + weight_decay * theta                    (if weight_decay != 0)
        v   = alpha * v + (1 - alpha) * g * g
        if centered:
            m   = alpha * m + (1 - alpha) * g             (mean gradient)
            den = sqrt(v - m * m) + eps
        else:
            den = sqrt(v) + eps
        if momentum > 0:
            b = momentum * b + g / den                    (b starts at 0)
            theta = theta - lr * b
        else:
            theta = theta - lr * g / den

    ``eps`` is added after the square root, as in PyTorch (the seed's snippet).

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1e-2
    alpha : float, default 0.99
        Smoothing constant (the seed's ``decay_rate``), in [0, 1].
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum : float, default 0
    centered : bool, default False

    Notes
    -----
    State per parameter: ``step``, ``square_avg``, and ``momentum_buffer`` /
    ``grad_avg`` when used.
    """

    _hyper_names = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    _state_names = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
                 momentum=0, centered=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered)

    def _check_hyper(self, name, value):
        name_ = type(self).__name__
        if name == "centered":
            return _flag(name_, name, value)
        if name == "alpha":
            return _number(name_, name, value, 0.0, 1.0)
        return _number(name_, name, value)

    def _update(self, data, grad, state, hp, scratch):
        alpha, momentum = hp["alpha"], hp["momentum"]
        square_avg = self._buffer(state, "square_avg", data)
        d = grad
        if hp["weight_decay"] != 0:
            d = np.multiply(data, hp["weight_decay"], out=scratch(0))
            d += grad
        tmp = scratch(1)
        square_avg *= alpha
        np.multiply(d, 1.0 - alpha, out=tmp)
        tmp *= d
        square_avg += tmp
        if hp["centered"]:
            grad_avg = self._buffer(state, "grad_avg", data)
            _lerp_(grad_avg, d, 1.0 - alpha, tmp)
            np.multiply(grad_avg, grad_avg, out=tmp)
            np.subtract(square_avg, tmp, out=tmp)
            den = np.sqrt(tmp, out=tmp)
        else:
            den = np.sqrt(square_avg, out=tmp)
        den += hp["eps"]
        if momentum > 0:
            buf = self._buffer(state, "momentum_buffer", data)
            buf *= momentum
            buf += np.divide(d, den, out=tmp)
            step = np.multiply(buf, hp["lr"], out=tmp)
        else:
            step = np.divide(d, den, out=tmp)
            step *= hp["lr"]
        data -= step


RMSprop = RMSProp


# --------------------------------------------------------------------------- Adadelta
class Adadelta(Optimizer):
    r"""Adadelta (Zeiler 2012, ``torch.optim.Adadelta``): the step of each weight is
    its gradient scaled by the ratio of two running root mean squares, of past steps
    and of past gradients, so the rate adapts with no scale to tune (``lr`` = 1.0).

    .. code-block:: text

        g     = g + weight_decay * theta                  (if weight_decay != 0)
        v     = rho * v + (1 - rho) * g * g               (v, u start at 0)
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u     = rho * u + (1 - rho) * delta * delta
        theta = theta - lr * delta

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1.0
        Scales the steps (PyTorch's MNIST example uses 1.0 with a StepLR).
    rho : float, default 0.9
        Decay of both running averages, in [0, 1].
    eps : float, default 1e-6
        Added inside both square roots.
    weight_decay : float, default 0
        L2 penalty added to the gradient.

    Notes
    -----
    State per parameter: ``step``, ``square_avg`` (v) and ``acc_delta`` (u).
    """

    _hyper_names = ("lr", "rho", "eps", "weight_decay")
    _state_names = ("square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0):
        super().__init__(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)

    def _check_hyper(self, name, value):
        if name == "rho":
            return _number("Adadelta", name, value, 0.0, 1.0)
        return _number("Adadelta", name, value)

    def _update(self, data, grad, state, hp, scratch):
        rho, eps = hp["rho"], hp["eps"]
        square_avg = self._buffer(state, "square_avg", data)
        acc_delta = self._buffer(state, "acc_delta", data)
        d = grad
        if hp["weight_decay"] != 0:
            d = np.multiply(data, hp["weight_decay"], out=scratch(0))
            d += grad
        tmp, delta = scratch(1), scratch(2)
        square_avg *= rho
        np.multiply(d, 1.0 - rho, out=tmp)
        tmp *= d
        square_avg += tmp
        std = np.add(square_avg, eps, out=tmp)
        np.sqrt(std, out=std)
        np.add(acc_delta, eps, out=delta)
        np.sqrt(delta, out=delta)
        delta /= std
        delta *= d
        acc_delta *= rho
        np.multiply(delta, 1.0 - rho, out=tmp)
        tmp *= delta
        acc_delta += tmp
        delta *= hp["lr"]
        data -= delta


# ------------------------------------------------------------------------------- Adam
class Adam(Optimizer):
    r"""Adam: momentum on the gradient plus an RMSProp-like scale, with bias
    correction (``torch.optim.Adam``). ``weight_decay`` is a coupled L2 penalty (added
    to the gradient); for decoupled decay use :class:`AdamW`.

    .. code-block:: text

        g = g + weight_decay * theta                      (if weight_decay != 0)
        m = beta1 * m + (1 - beta1) * g                   (m, v start at 0)
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                             (amsgrad only; use v_max for v)
        step_size = lr / (1 - beta1 ** t)
        den = sqrt(v) / sqrt(1 - beta2 ** t) + eps
        theta = theta - step_size * m / den

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moments, each in [0, 1).
        A :class:`airi.lr_scheduler.MomentumSchedule` changes ``betas[0]``.
    eps : float, default 1e-8
    weight_decay : float, default 0
    amsgrad : bool, default False
        Use the running maximum of ``v`` (AMSGrad).

    Notes
    -----
    State per parameter: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v), and
    ``max_exp_avg_sq`` with amsgrad.
    """

    _hyper_names = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)

    def _check_hyper(self, name, value):
        name_ = type(self).__name__
        if name == "betas":
            return _betas(name_, value)
        if name == "amsgrad":
            return _flag(name_, name, value)
        return _number(name_, name, value)

    def _update(self, data, grad, state, hp, scratch):
        lr, (beta1, beta2), wd = hp["lr"], hp["betas"], hp["weight_decay"]
        exp_avg = self._buffer(state, "exp_avg", data)
        exp_avg_sq = self._buffer(state, "exp_avg_sq", data)
        d = grad
        if wd != 0:
            if self._decoupled:
                data *= 1.0 - lr * wd
            else:
                d = np.multiply(data, wd, out=scratch(0))
                d += grad
        tmp = scratch(1)
        _lerp_(exp_avg, d, 1.0 - beta1, tmp)
        exp_avg_sq *= beta2
        np.multiply(d, 1.0 - beta2, out=tmp)
        tmp *= d
        exp_avg_sq += tmp

        t = state["step"]
        step_size = lr / (1.0 - beta1 ** t)
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** t)
        second = exp_avg_sq
        if hp["amsgrad"]:
            second = self._buffer(state, "max_exp_avg_sq", data)
            np.maximum(second, exp_avg_sq, out=second)
        den = np.sqrt(second, out=tmp)
        den /= bias_correction2_sqrt
        den += hp["eps"]
        step = np.divide(exp_avg, den, out=tmp)
        step *= step_size
        data -= step


class AdamW(Adam):
    r"""Adam with decoupled weight decay (``torch.optim.AdamW``): the weights shrink
    by ``lr * weight_decay`` before the Adam step, instead of an L2 term in the
    gradient.

    .. code-block:: text

        theta = theta * (1 - lr * weight_decay)
        m, v, v_max, step_size, den as in Adam (with the raw gradient g)
        theta = theta - step_size * m / den

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 1e-2
    amsgrad : bool, default False
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)


# Names accepted in state dicts for the aliased classes.
_CANONICAL = {"Adagrad": "AdaGrad", "RMSprop": "RMSProp"}
