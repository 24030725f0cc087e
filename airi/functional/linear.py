"""The fully connected layer's maths, stateless: ``out = x @ W + b``."""
import numpy as np

from .. import _parallel, _planner

__all__ = ["linear_forward", "linear_backward"]


def _matmul(a, b, out, split_rows=True):
    """``out = a @ b`` (2-D) on airi's threads: ``out``'s rows (or its columns, with
    ``split_rows=False``) in one block per thread when the product is large, each a
    single-threaded GEMM."""
    M, K = a.shape
    N = b.shape[1]
    parts = _planner.matmul_parts(M, K, N)
    if split_rows:
        _parallel.run(lambda w, lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]),
                      M, -(-M // parts))
    else:
        _parallel.run(lambda w, lo, hi: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi]),
                      N, -(-N // parts))
    return out


def _add_bias(out, b):
    """``out + b`` (b broadcast over the rows), in place when that keeps NumPy's
    promoted dtype (the usual case: no extra allocation)."""
    if np.result_type(out, b) == out.dtype:
        out += b
        return out
    return out + b


def linear_forward(x, W, b=None):
    """``out = x @ W + b``.

    Parameters
    ----------
    x : ndarray (N, D)
    W : ndarray (D, M)
    b : ndarray (M,) or None

    Returns
    -------
    out : ndarray (N, M)
        dtype of x promoted with W (and b).
    """
    out = _matmul(x, W, np.empty((x.shape[0], W.shape[1]),
                                 dtype=np.result_type(x.dtype, W.dtype)))
    return out if b is None else _add_bias(out, b)


def linear_backward(dout, x, W, *, input_grad=True, bias=True):
    """Gradients of :func:`linear_forward`.

    Parameters
    ----------
    dout : ndarray (N, M)
    x : ndarray (N, D)
        The forward's input.
    W : ndarray (D, M)
    input_grad : bool
        Compute dx (False when the input is data).
    bias : bool
        Compute db.

    Returns
    -------
    dx : ndarray (N, D) or None
        ``dout @ W.T``
    dW : ndarray (D, M)
        ``x.T @ dout``
    db : ndarray (M,) or None
        ``dout.sum(0)``
    """
    dW = _matmul(x.T, dout, np.empty(W.shape, np.result_type(x, dout)), split_rows=False)
    db = dout.sum(axis=0) if bias else None
    dx = _matmul(dout, W.T, np.empty(x.shape, np.result_type(dout, W))) \
        if input_grad else None
    return dx, dW, db
