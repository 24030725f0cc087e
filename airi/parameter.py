"""``Parameter``: a trainable array and its gradient."""
import numpy as np

__all__ = ["Parameter"]


class Parameter:
    """A trainable array.

    Attributes
    ----------
    data : ndarray
        The values, updated in place by optimizers. Assigning a new float array of the
        same shape is allowed (layers read ``data`` when called).
    grad : ndarray or None
        dL/d(data), same shape and dtype as ``data``; None until a backward pass.
    name : str
        A label for messages and summaries.

    Parameters
    ----------
    data : array_like, float
        The initial values, any shape; kept as given (no copy of an ndarray) and
        updated in place by optimizers.
    name : str
        A label for messages and summaries, e.g. ``"W"``.

    Raises
    ------
    ValueError
        If ``data`` is not a float array.
    """

    __slots__ = ("_data", "grad", "name")

    def __init__(self, data, name=""):
        self._data = None
        self.name = name
        self.data = data
        self.grad = None

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        value = np.asarray(value)
        if value.dtype.kind != "f":
            raise ValueError(f"Parameter {self.name!r}: data must be a float array, "
                             f"got dtype {value.dtype}")
        if self._data is not None and value.shape != self._data.shape:
            raise ValueError(f"Parameter {self.name!r}: new data has shape {value.shape}, "
                             f"expected {self._data.shape}")
        self._data = value

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def size(self):
        return self._data.size

    def set_grad(self, g):
        """Store ``g`` as the gradient, in ``data``'s dtype and shape (no copy when
        it already has them)."""
        self.grad = np.asarray(g, dtype=self._data.dtype).reshape(self._data.shape)

    def zero_grad(self):
        """Drop the gradient: ``grad`` becomes None (the next backward sets it anew)."""
        self.grad = None

    def to(self, dtype):
        """Convert ``data`` (and ``grad``) to ``dtype`` in place; returns self."""
        dtype = np.dtype(dtype)
        self._data = self._data.astype(dtype, copy=False)
        if self.grad is not None:
            self.grad = self.grad.astype(dtype, copy=False)
        return self

    def __getstate__(self):
        # Gradients are not saved: model files stay small.
        return {"data": self._data, "name": self.name}

    def __setstate__(self, state):
        self._data = None
        self.name = state.get("name", "")
        self.data = state["data"]
        self.grad = None

    def check_state(self):
        """Check what a model file gave this Parameter (``airi.load`` calls it): a float
        array of native byte order and a str name."""
        try:
            data, name = self._data, self.name
        except AttributeError:
            raise ValueError("Parameter.data is missing") from None
        if type(data) is not np.ndarray or data.dtype.kind != "f" \
                or not data.dtype.isnative:
            raise ValueError(f"Parameter {str(name)[:40]!r}: data must be a float array "
                             f"(native byte order), got {getattr(data, 'dtype', data)!r:.60}")
        if type(name) is not str:
            raise ValueError("Parameter.name must be a str")

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.shape}, dtype={self.dtype})"
