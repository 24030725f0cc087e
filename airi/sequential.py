"""``Sequential``: a list of layers that behaves like one layer."""
import copy

import numpy as np

from ._config import get_default_dtype
# How a layer is called, and how the parameters and buffers of any layer-like object are
# found, is shared with nested layers: a Sequential inside a layer and a layer inside a
# Sequential follow the same rules.
from .layers.base import (_TAKES_TRAINING, _forward_takes_training, check_state_dict,  # noqa: F401
                          _named_buffers_of, _named_params_of, call_forward)

__all__ = ["Sequential", "call_forward"]


def _with_layer_context(exc, index, layer):
    """``exc`` again, its message prefixed with the failing layer's index and type.

    The same exception class is kept (so ``except ValueError`` still works) and the
    original is chained as ``__cause__``. A subclass whose constructor does not take a
    single message keeps its own instance and gets the context as a note instead."""
    prefix = f"Sequential layer {index} ({type(layer).__name__}): "
    try:
        new = type(exc)(prefix + str(exc))
    except Exception:
        exc.add_note(prefix.rstrip(": "))
        return exc
    new.__dict__.update(getattr(exc, "__dict__", {}))
    new.__cause__, new.__suppress_context__ = exc, True
    return new


class Sequential:
    """Layers applied one after the other; ``backward`` runs them in reverse.

    ``Sequential([l1, l2, ...])`` or ``Sequential(l1, l2, ...)``. It is list-like
    (``model[0]``, ``model[-1]``, ``model[1:3]`` which is a Sequential, ``len``,
    iteration, ``append``) and offers the layer API (``forward``, ``backward``,
    ``parameters``, ``zero_grad``, ``train``/``eval``, ``update``, ``to``,
    ``state_dict``), so a Sequential can also sit inside another one.

    Attributes
    ----------
    layers : list
        The layers, in order.
    training : bool
        The mode set by :meth:`train` / :meth:`eval` on the model and every layer. A
        layer added later (``append``, ``insert``, ``model[i] = layer``) is put in this
        mode. A new Sequential keeps its layers' modes and starts in training mode unless
        all of them are in eval mode.

    Shapes
    ------
    forward:  x (input shape of the first layer) -> output of the last layer
    backward: dout (shape of the output) -> dx (shape of x)

    Examples
    --------
    >>> from airi.layers import Conv2D, Relu, MaxPool2D, Flatten, Linear
    >>> model = Sequential(Conv2D(1, 8, 3), Relu(), MaxPool2D(2), Flatten(),
    ...                    Linear(8 * 13 * 13, 10))
    >>> print(model.summary((1, 28, 28)))  # doctest: +SKIP
    """

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = layers[0]
        self.layers = [self._check_layer(layer, f"layer {i}")
                       for i, layer in enumerate(layers)]
        # The layers keep the modes they were given; the Sequential starts in eval mode
        # only when every layer with a mode is in eval mode (e.g. Sequential(old.eval())).
        modes = [layer.training for layer in self.layers
                 if isinstance(getattr(layer, "training", None), bool)]
        self.training = any(modes) or not modes

    # ---------------------------------------------------------------- list-like
    @staticmethod
    def _check_layer(layer, where):
        for method in ("forward", "backward"):
            if not callable(getattr(layer, method, None)):
                raise TypeError(f"Sequential: {where} must be a layer with forward and "
                                f"backward methods, got {type(layer).__name__}")
        return layer

    def _adopt_mode(self, layer):
        """Put a layer joining the model in the model's mode (train or eval)."""
        if callable(getattr(layer, "train", None)):
            layer.train(self.training)
        return layer

    def append(self, layer):
        """Add ``layer`` at the end, in the model's current mode (see :attr:`training`);
        returns self."""
        layer = self._check_layer(layer, f"layer {len(self.layers)}")
        self.layers.append(self._adopt_mode(layer))
        return self

    def insert(self, index, layer):
        """Insert ``layer`` before position ``index`` (as ``list.insert``), in the
        model's current mode; returns self."""
        layer = self._check_layer(layer, f"layer {index}")
        self.layers.insert(index, self._adopt_mode(layer))
        return self

    def __len__(self):
        return len(self.layers)

    def check_state(self):
        """Check attributes read from a model file (``airi.load`` calls it): ``layers``
        a list of layers, ``training`` a bool; the layers are checked on their own.

        Raises
        ------
        ValueError
            Naming ``Sequential.<attribute>``.
        """
        import reprlib
        state = vars(self)
        layers = state.get("layers")
        if type(layers) is not list:
            raise ValueError(f"Sequential.layers must be a list of layers, got "
                             f"{reprlib.repr(layers)}")
        for i, layer in enumerate(layers):
            if not all(callable(getattr(type(layer), method, None))
                       for method in ("forward", "backward")):
                raise ValueError(f"Sequential.layers[{i}] must be a layer with forward and "
                                 f"backward methods, got {type(layer).__name__}")
        if type(state.get("training")) is not bool:
            raise ValueError(f"Sequential.training must be True or False, got "
                             f"{reprlib.repr(state.get('training'))}")

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            sub = Sequential(self.layers[index])
            sub.training = self.training
            return sub
        return self.layers[index]

    def __setitem__(self, index, layer):
        if isinstance(index, slice):
            raise TypeError("Sequential: assign layers one index at a time")
        self.layers[index] = self._adopt_mode(self._check_layer(layer, f"layer {index}"))

    # ---------------------------------------------------------- forward/back
    def forward(self, x, training=None):
        """Run ``x`` through every layer; ``training`` (if given) overrides the modes.

        Parameters
        ----------
        x : ndarray
            A batch (N, ...) of the first layer's input shape.
        training : bool or None
            The mode of this call for every layer (None: each layer's own mode).
            Layers whose ``forward`` takes no ``training`` argument run in their own mode.

        Returns
        -------
        ndarray
            The last layer's output (N, ...).

        Raises
        ------
        ValueError, RuntimeError
            Raised by a layer, with ``"Sequential layer i (TypeName): "`` prefixed to the
            message (the original exception is the ``__cause__``).
        """
        for i, layer in enumerate(self.layers):
            try:
                x = call_forward(layer, x, training)
            except (ValueError, RuntimeError) as exc:
                raise _with_layer_context(exc, i, layer)
        return x

    def __call__(self, x, training=None):
        return self.forward(x, training=training)

    def backward(self, dout, input_grad=True):
        """Back-propagate dL/d(output) through the layers in reverse.

        Parameters
        ----------
        dout : ndarray
            dL/d(output), the shape of the last forward's output.
        input_grad : bool
            False when dL/dx is not wanted (x is data, as in a training step): the
            first layer then only stores its parameter gradients
            (``Layer.backward_params``), which skips its most expensive product when it
            is a Conv2D or Linear, and None is returned. The Trainer passes False.

        Returns
        -------
        ndarray or None
            dL/dx, the shape of the last forward's input (None when ``input_grad`` is
            False). Every layer's parameter gradients are stored in their
            ``Parameter.grad``. A layer's ValueError or RuntimeError is re-raised with
            ``"Sequential layer i (TypeName): "`` prefixed.
        """
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            try:
                if i == 0 and not input_grad and hasattr(layer, "backward_params"):
                    layer.backward_params(dout)
                    return None
                dout = layer.backward(dout)
            except (ValueError, RuntimeError) as exc:
                raise _with_layer_context(exc, i, layer)
        return dout if input_grad else None

    def backward_params(self, dout):
        """``backward(dout, input_grad=False)``: parameter gradients only, returns None
        (what a training step needs; also lets a Sequential be the first block of
        another)."""
        return self.backward(dout, input_grad=False)

    # -------------------------------------------------------------- parameters
    def named_parameters(self):
        """Yield ``("index.name", Parameter)`` pairs, e.g. ``("0.W", ...)``; a Parameter
        shared by several layers is yielded once."""
        seen = set()
        for i, layer in enumerate(self.layers):
            for name, param in _named_params_of(layer):
                if id(param) not in seen:
                    seen.add(id(param))
                    yield f"{i}.{name}", param

    def named_children(self):
        """``(str(index), layer)`` for every layer, as ``Layer.named_children``."""
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def children(self):
        """The layers, as a list."""
        return list(self.layers)

    def named_buffers(self):
        """Yield ``("index.name", ndarray)`` for the buffers (BatchNorm's running
        statistics) of every layer, nested ones included (``"3.body.1.running_mean"``)."""
        for i, layer in enumerate(self.layers):
            for name, value in _named_buffers_of(layer):
                yield f"{i}.{name}", value

    @property
    def params(self):
        """dict ``"index.name" -> Parameter`` of every layer (as ``Layer.params``)."""
        return dict(self.named_parameters())

    def parameters(self):
        """Every Parameter of every layer, as a list (each once)."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        """Drop every layer's gradients and cached tensors."""
        for layer in self.layers:
            if hasattr(layer, "zero_grad"):
                layer.zero_grad()

    def update(self, lr=1e-3):
        """A plain SGD step on every parameter: ``data -= lr * grad``."""
        for param in self.parameters():
            if param.grad is not None:
                param.data -= lr * param.grad

    # ------------------------------------------------------------------ modes
    def train(self, mode=True):
        """Set training mode (``mode=False``: eval) on every layer; returns self."""
        self.training = bool(mode)
        for layer in self.layers:
            if hasattr(layer, "train"):
                layer.train(self.training)
        return self

    def eval(self):
        """Set eval mode on every layer; returns self."""
        return self.train(False)

    def to(self, dtype):
        """Convert every layer's parameters and running statistics; returns self."""
        for layer in self.layers:
            if hasattr(layer, "to"):
                layer.to(dtype)
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """Copies of every layer's arrays by ``"index.name"`` (``"0.W"``,
        ``"3.running_mean"`` ...)."""
        state = {}
        for i, layer in enumerate(self.layers):
            if hasattr(layer, "state_dict"):
                for name, value in layer.state_dict().items():
                    state[f"{i}.{name}"] = np.array(value, copy=True)
        return state

    def load_state_dict(self, state):
        """Copy ``state`` (from :meth:`state_dict`) into the layers.

        Everything is checked before anything is changed: a missing or unexpected key
        raises KeyError, a shape mismatch ValueError, both naming the key.
        """
        check_state_dict("Sequential.load_state_dict", self.state_dict(), state)
        for i, layer in enumerate(self.layers):
            prefix = f"{i}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if sub:
                layer.load_state_dict(sub)

    # ---------------------------------------------------------------- summary
    def _input_dtype(self):
        for param in self.parameters():
            return param.dtype
        return get_default_dtype()

    def summary(self, input_shape):
        """A Keras-like table of the layers, their output shapes and parameter counts.

        Parameters
        ----------
        input_shape : tuple of int
            The shape of ONE sample, without the batch axis, e.g. ``(3, 32, 32)``.

        Returns
        -------
        str
            The table. Shapes are found by running a batch of one zero sample through
            copies of the layers in eval mode: the model's caches, running statistics
            and mode are left untouched. As in Keras, "Param #" counts a layer's
            Parameters and buffers (BatchNorm's running mean and variance); the footer
            gives Trainable params (Parameters), Non-trainable params (buffers) and
            Total params = trainable + non-trainable.
        """
        input_shape = tuple(int(d) for d in np.atleast_1d(input_shape))
        x = np.zeros((1,) + input_shape, dtype=self._input_dtype())
        rows = []
        for i, layer in enumerate(self.layers):
            probe = copy.deepcopy(layer)   # pickling rules: caches are not copied
            try:
                x = call_forward(probe, x, False)
            except (ValueError, TypeError, RuntimeError) as exc:
                if type(exc) not in (ValueError, TypeError, RuntimeError):
                    raise  # a custom error class: keep it exactly as raised
                raise type(exc)(f"Sequential.summary: layer {i} ({type(layer).__name__}) "
                                f"failed on input of shape {_fmt_shape(x.shape)}: "
                                f"{exc}") from exc
            # As in Keras, a layer's count includes its buffers (BatchNorm's running
            # statistics): they are part of the model, only not trained.
            count = (sum(p.size for _, p in _named_params_of(layer))
                     + _buffer_size(layer))
            rows.append((f"{i}: {type(layer).__name__}", _fmt_shape(np.shape(x)),
                         f"{count:,}"))
        trainable = sum(p.size for p in self.parameters())
        return _format_table(rows, _fmt_shape((1,) + input_shape), trainable,
                             _buffer_size(self))

    # ------------------------------------------------------------------- repr
    def __repr__(self):
        if not self.layers:
            return "Sequential()"
        lines = ["Sequential("]
        for i, layer in enumerate(self.layers):
            text = repr(layer).replace("\n", "\n  ")
            lines.append(f"  ({i}): {text}")
        lines.append(")")
        return "\n".join(lines)


def _fmt_shape(shape):
    """(1, 16, 28, 28) -> '(None, 16, 28, 28)': the batch axis is free, as in Keras."""
    dims = ["None"] + [str(d) for d in tuple(shape)[1:]]
    return "(" + ", ".join(dims) + (",)" if len(dims) == 1 else ")")


def _buffer_size(layer):
    """Number of values in the buffers (non-trained state such as BatchNorm's
    ``running_mean``/``running_var``) of a layer at any depth, or of a Sequential."""
    return sum(np.size(value) for _, value in _named_buffers_of(layer))


def _format_table(rows, input_shape, trainable, non_trainable):
    header = ("Layer (type)", "Output Shape", "Param #")
    widths = [max(len(header[c]), *(len(r[c]) for r in rows)) + 4 if rows
              else len(header[c]) + 4 for c in range(3)]
    width = sum(widths)

    def line(cells):
        return "".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()

    out = ['Model: "Sequential"', f"Input shape: {input_shape}", "_" * width,
           line(header), "=" * width]
    for k, row in enumerate(rows):
        out.append(line(row))
        out.append("_" * width if k < len(rows) - 1 else "=" * width)
    if not rows:
        out.append("=" * width)
    # Keras' convention: Total = Trainable (Parameters) + Non-trainable (buffers).
    out += [f"Total params: {trainable + non_trainable:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {non_trainable:,}", "_" * width]
    return "\n".join(out)
