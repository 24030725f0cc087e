"""``Linear``: a fully connected layer, ``out = x @ W + b``."""
import numpy as np

from .. import _parallel
from .. import init as initializers
from .._config import resolve_dtype
from .base import Layer, StateChecker, _positive_int

__all__ = ["Linear"]

# A GEMM is split over the threads only above this many multiply-adds per thread:
# below it, handing work to another thread costs more than it saves.
_PARALLEL_MIN_MACS = 1 << 20


def parallel_matmul(a, b, out, split_rows=True):
    """``out = a @ b`` (2-D) on airi's threads: ``out``'s rows (or its columns, with
    ``split_rows=False``) are cut into one block per thread, each a single-threaded
    GEMM (see :mod:`airi._parallel` for why BLAS's own threads are avoided)."""
    M, K = a.shape
    N = b.shape[1]
    workers = _parallel.workers_available()
    parts = workers if M * K * N >= _PARALLEL_MIN_MACS * workers else 1
    if split_rows:
        _parallel.run(lambda w, lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]),
                      M, -(-M // parts))
    else:
        _parallel.run(lambda w, lo, hi: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi]),
                      N, -(-N // parts))
    return out


def make_weight(shape, init, dtype):
    """A new weight of ``shape`` from the initialiser ``init`` (name or callable)."""
    w = initializers.get_initializer(init)(tuple(shape), dtype=dtype)
    w = np.asarray(w)
    if w.shape != tuple(shape):
        raise ValueError(f"init returned shape {w.shape}, expected {tuple(shape)}")
    return w.astype(dtype, copy=False)


def add_bias(out, b):
    """``out + b`` (b broadcast over the leading axes), in place when that keeps NumPy's
    promoted dtype (the usual case: no extra allocation)."""
    if np.result_type(out, b) == out.dtype:
        out += b
        return out
    return out + b


class Linear(Layer):
    """Fully connected layer: ``out = x @ W + b``.

    Parameters
    ----------
    input_size : int
        Number of input features D.
    hidden_size : int
        Number of output features M.
    bias : bool
        Learn the bias ``b`` (zeros at start).
    reg : float
        L2 regularisation strength: ``backward`` adds ``2 * reg * W`` to dW (the
        gradient of ``reg * sum(W**2)``), as in the seed.
    dtype : dtype, optional
        Parameter dtype; None means the default (float32).
    init : str or callable
        Weight initialisation: ``"kaiming"`` (He normal, default), ``"xavier"``,
        ``"xavier_uniform"``, or ``f(shape, dtype=...)``.

    Attributes
    ----------
    W : Parameter, shape (D, M)
    b : Parameter, shape (M,) (absent when ``bias=False``)

    Shapes
    ------
    forward: x (N, D) -> out (N, M); backward: dout (N, M) -> dx (N, D).
    """

    _cache_names = ("x",)

    def __init__(self, input_size, hidden_size, bias=True, reg=0.0, dtype=None,
                 init="kaiming"):
        super().__init__()
        self.input_size = _positive_int(input_size, "input_size", "Linear")
        self.hidden_size = _positive_int(hidden_size, "hidden_size", "Linear")
        self.bias = bool(bias)
        self.reg = float(reg)
        dtype = resolve_dtype(dtype)
        self.add_param("W", make_weight((self.input_size, self.hidden_size), init, dtype))
        if self.bias:
            self.add_param("b", initializers.zeros((self.hidden_size,), dtype=dtype))
        self.x = None

    def check_state(self):
        """The checks of the constructor, on attributes read from a model file."""
        check = StateChecker(self)
        check.boolean("training")
        D, M = check.positive_int("input_size"), check.positive_int("hidden_size")
        check.real("reg")
        shapes = {"W": (D, M)}
        if check.boolean("bias"):
            shapes["b"] = (M,)
        check.params(shapes, ("input_size", "hidden_size"))

    def forward(self, x, training=None):
        """x (N, D) -> out (N, M). Caches x when training."""
        x = self._check_input(x)
        if x.ndim != 2:
            hint = "; add a Flatten() layer before it" if x.ndim > 2 else ""
            raise ValueError(f"Linear: expected a 2-D input (N, {self.input_size}), got "
                             f"shape {x.shape}{hint}")
        x = self._check_input(x, dims={1: self.input_size})
        W = self.W.data
        out = parallel_matmul(x, W, np.empty((x.shape[0], self.hidden_size),
                                             dtype=np.result_type(x.dtype, W.dtype)))
        if self.bias:
            out = add_bias(out, self.b.data)
        self.x = x if self._is_training(training) else None
        return out

    def backward(self, dout):
        """dout (N, M) -> dx (N, D); sets W.grad (D, M) and b.grad (M,)."""
        return self._backward(dout, input_grad=True)

    def backward_params(self, dout):
        """dout (N, M) -> None; sets W.grad and b.grad without computing dx."""
        self._backward(dout, input_grad=False)

    def _backward(self, dout, input_grad):
        x = self._cached("x")
        dout = self._check_dout(dout, (x.shape[0], self.hidden_size))
        W = self.W.data
        dW = parallel_matmul(x.T, dout, np.empty(W.shape, np.result_type(x, dout)),
                             split_rows=False)
        if self.reg:
            dW += (2.0 * self.reg) * W
        self.W.set_grad(dW)
        if self.bias:
            self.b.set_grad(dout.sum(axis=0))
        if not input_grad:
            return None
        return parallel_matmul(dout, W.T, np.empty(x.shape, np.result_type(dout, W)))

    def extra_repr(self):
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"bias={self.bias}, reg={self.reg}")
