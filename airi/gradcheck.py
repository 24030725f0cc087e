"""Numerical gradient checks, so users can test their own layers.

``gradcheck`` compares the analytical gradients of a layer (its ``backward``) or of a
loss (its ``backward()``) with central differences computed in float64.
"""
import copy
import inspect

import numpy as np

from . import _config
from .sequential import call_forward

__all__ = ["gradcheck", "numerical_gradient"]


def numerical_gradient(f, x, eps=1e-6):
    """Central-difference gradient of the scalar function ``f()`` with respect to the
    array ``x``, which ``f`` reads and which is perturbed in place (then restored)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + eps
        plus = f()
        flat_x[i] = old - eps
        minus = f()
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2 * eps)
    return grad


def _relative_error(analytic, numeric):
    """max |a - n| relative to the scale of the gradients (0 when both vanish)."""
    analytic = np.asarray(analytic, dtype=np.float64)
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    if scale < 1e-12:
        return 0.0
    return float(np.abs(analytic - numeric).max() / scale)


def _takes_no_arguments(method):
    """True when ``method()`` can be called without arguments."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not inspect.Parameter.empty
               or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
               for p in parameters)


def _is_loss(obj):
    """Tell a loss from a layer, or raise a TypeError for anything else.

    A loss is callable (``loss(pred, target)``), its ``backward()`` takes no argument,
    and it has no trainable parameters. A layer has ``forward(x)`` and
    ``backward(dout)``, with or without parameters (a seed-style ``Relu`` is a layer).
    """
    backward = getattr(obj, "backward", None)
    forward = getattr(obj, "forward", None)
    has_params = bool(_named_params(obj))
    if (callable(obj) and callable(backward) and _takes_no_arguments(backward)
            and not (callable(forward) and has_params)):
        return True
    if callable(forward) and callable(backward):
        return False
    raise TypeError(
        "gradcheck: expected a layer (forward(x) and backward(dout) methods, e.g. an "
        "airi layer, a Sequential or your own layer) or a loss (loss(pred, target) -> "
        f"float and backward() -> d(loss)/d(pred)), got {type(obj).__name__}"
        + (" (a plain function has no backward: wrap it in a layer class)"
           if inspect.isroutine(obj) else ""))


def gradcheck(layer_or_fn, inputs, eps=1e-6, seed=0, training=None, dout=None):
    """Check a layer's or a loss's gradients against central differences (float64).

    Parameters
    ----------
    layer_or_fn : Layer, Sequential or loss
        A layer (``forward``/``backward``/``params``) is checked through the scalar
        ``sum(forward(x) * dout)`` with a fixed random ``dout``; a loss (``loss(pred,
        target)`` returning a float, ``backward()`` returning d(loss)/d(pred)) through its
        value. The object is deep-copied and converted to float64: the original is left
        untouched. A user layer whose ``forward(self, x)`` takes no ``training``
        argument is called without it (and runs in its own mode).
    inputs : ndarray or tuple of ndarrays
        The layer input, or ``(pred, target)`` for a loss. Float arrays are checked;
        integer arrays (labels) are passed through.
    eps : float
        The central-difference step.
    seed : int
        Seeds ``dout`` and airi's random generator, which is reset before every forward
        pass so that random layers (Dropout) use the same mask throughout.
    training : bool or None
        The mode of the forward passes (None: the layer's own mode).
    dout : ndarray, optional
        The upstream gradient to use instead of a random one.

    Returns
    -------
    dict of str -> float
        The max relative error for each input (``"input"``, or ``"input0"``, ``"input1"``
        ... for several) and each parameter (by its name, prefixed by the layer index
        for a Sequential).

    Raises
    ------
    TypeError
        When ``layer_or_fn`` is neither a layer nor a loss (e.g. a plain function).
    """
    single = isinstance(inputs, np.ndarray)
    inputs = [inputs] if single else list(inputs)
    inputs = [np.array(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f"
              else np.asarray(a) for a in inputs]
    names = ["input"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]
    is_loss = _is_loss(layer_or_fn)
    obj = copy.deepcopy(layer_or_fn)
    if hasattr(obj, "to"):
        obj.to(np.float64)

    saved_rng = _config.get_rng_state()
    try:
        _config.seed(seed)
        rng_state = _config.get_rng_state()
        if is_loss:
            def value():
                return float(obj(*inputs))

            value()
            analytic = {names[0]: obj.backward()}
            targets = {names[0]: inputs[0]}
        else:
            def run():
                _config.set_rng_state(rng_state)
                if len(inputs) == 1:   # also seed-style layers: forward(self, x)
                    return call_forward(obj, inputs[0], training)
                return obj.forward(*inputs, training=training)

            out = run()
            if dout is None:
                dout = np.random.default_rng(seed).standard_normal(out.shape)
            dout = np.asarray(dout, dtype=np.float64)

            def value():
                return float(np.sum(run() * dout))

            dx = obj.backward(dout.copy())
            analytic = {names[0]: dx}
            targets = {names[0]: inputs[0]}
            for pname, param in _named_params(obj):
                analytic[pname] = param.grad
                targets[pname] = param.data

        errors = {}
        for name, target in targets.items():
            if target.dtype.kind != "f":
                continue
            numeric = numerical_gradient(value, target, eps)
            grad = analytic[name]
            if grad is None:
                raise RuntimeError(f"gradcheck: no analytical gradient for {name!r}")
            errors[name] = _relative_error(grad, numeric)
        return errors
    finally:
        _config.set_rng_state(saved_rng)


def _named_params(obj):
    if hasattr(obj, "named_parameters"):
        return list(obj.named_parameters())
    return list(getattr(obj, "params", {}).items())
