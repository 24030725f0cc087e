"""``Linear``: a fully connected layer, ``out = x @ W + b`` (the maths is
:func:`airi.functional.linear_forward` / :func:`~airi.functional.linear_backward`)."""
from .. import functional as F
from .. import init as initializers
from .._config import resolve_dtype
from .base import Layer, StateChecker, _positive_int

__all__ = ["Linear"]


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
        self.add_param("W", initializers.make_weight((self.input_size, self.hidden_size),
                                                     init, dtype))
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
        out = F.linear_forward(x, self.W.data, self.b.data if self.bias else None)
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
        dx, dW, db = F.linear_backward(dout, x, self.W.data, input_grad=input_grad,
                                       bias=self.bias)
        if self.reg:
            dW += (2.0 * self.reg) * self.W.data
        self.W.set_grad(dW)
        if self.bias:
            self.b.set_grad(db)
        return dx

    def extra_repr(self):
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"bias={self.bias}, reg={self.reg}")
