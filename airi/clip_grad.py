"""Gradient clipping: ``airi.clip_grad_norm_`` (``torch.nn.utils.clip_grad_norm_``)."""
import math

import numpy as np

from .parameter import Parameter

__all__ = ["clip_grad_norm_"]


def _params_with_grads(parameters):
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    elif callable(getattr(parameters, "parameters", None)):
        raise ValueError(f"clip_grad_norm_: expected Parameters, got "
                         f"{type(parameters).__name__}; pass model.parameters()")
    params = list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise ValueError(f"clip_grad_norm_: parameters[{i}] is a "
                             f"{type(p).__name__}, expected an airi.Parameter")
    return [p for p in params if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients in place so that their total norm is at most ``max_norm``.

    The total norm is that of all gradients together (as if concatenated into one
    vector): ``(sum_p ||g_p||^q)^(1/q)`` for ``norm_type`` q, the largest ``|g|`` for
    ``inf``. When it exceeds ``max_norm``, every gradient is multiplied by
    ``max_norm / (total_norm + 1e-6)``, as PyTorch does. Parameters without a gradient
    are skipped.

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
        E.g. ``model.parameters()``.
    max_norm : float
        The largest total norm allowed (>= 0).
    norm_type : float, default 2.0
        q > 0, or ``float("inf")``.
    error_if_nonfinite : bool, default False
        Raise a RuntimeError when the total norm is nan or inf (otherwise the
        gradients are scaled by nan and the caller sees it).

    Returns
    -------
    float
        The total norm of the gradients *before* clipping (log it: a rising norm
        warns of divergence).
    """
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm!r}")
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or inf, got "
                         f"{norm_type!r}")
    params = _params_with_grads(parameters)
    if not params:
        return 0.0
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(p.grad), initial=0.0)) for p in params)
    else:
        norms = np.array([np.linalg.norm(p.grad.reshape(-1).astype(np.float64), norm_type)
                          for p in params])
        total = float(np.linalg.norm(norms, norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           f"gradients is {total}; pass error_if_nonfinite=False to clip "
                           "anyway")
    coef = min(max_norm / (total + 1e-6), 1.0) if math.isfinite(total) else \
        max_norm / (total + 1e-6)
    if coef < 1.0 or not math.isfinite(total):
        for p in params:
            p.grad *= p.grad.dtype.type(coef)
    return total
