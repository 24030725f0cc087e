"""``Sequential``: a list of layers that behaves like one layer."""
import copy

import numpy as np

from ._config import get_default_dtype

__all__ = ["Sequential"]


def _layer_forward(layer, x, training):
    # Only pass ``training`` when it was given, so that user layers written as in the
    # seed (``def forward(self, x)``) also work inside a Sequential.
    if training is None:
        return layer.forward(x)
    return layer.forward(x, training=training)


def _named_params_of(layer):
    if hasattr(layer, "named_parameters"):
        return list(layer.named_parameters())
    return list(getattr(layer, "params", {}).items())


class Sequential:
    """Layers applied one after the other; ``backward`` runs them in reverse.

    ``Sequential([l1, l2, ...])`` or ``Sequential(l1, l2, ...)``. It is list-like
    (``model[0]``, ``model[-1]``, ``model[1:3]`` which is a Sequential, ``len``,
    iteration, ``append``) and offers the layer API (``forward``, ``backward``,
    ``parameters``, ``zero_grad``, ``train``/``eval``, ``update``, ``to``,
    ``state_dict``), so a Sequential can also sit inside another one.

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
        self.layers = []
        self.training = True
        for layer in layers:
            self.append(layer)

    # ---------------------------------------------------------------- list-like
    @staticmethod
    def _check_layer(layer, where):
        for method in ("forward", "backward"):
            if not callable(getattr(layer, method, None)):
                raise TypeError(f"Sequential: {where} must be a layer with forward and "
                                f"backward methods, got {type(layer).__name__}")
        return layer

    def append(self, layer):
        """Add ``layer`` at the end; returns self."""
        self.layers.append(self._check_layer(layer, f"layer {len(self.layers)}"))
        return self

    def __len__(self):
        return len(self.layers)

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
        self.layers[index] = self._check_layer(layer, f"layer {index}")

    # ---------------------------------------------------------- forward/back
    def forward(self, x, training=None):
        """Run ``x`` through every layer; ``training`` (if given) overrides the modes."""
        for layer in self.layers:
            x = _layer_forward(layer, x, training)
        return x

    def __call__(self, x, training=None):
        return self.forward(x, training=training)

    def backward(self, dout):
        """Back-propagate dL/d(output) through the layers in reverse; returns dL/dx."""
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

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
        expected = self.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise KeyError(f"Sequential.load_state_dict: {'; '.join(parts)}")
        for key, current in expected.items():
            shape = np.shape(state[key])
            if shape != current.shape:
                raise ValueError(f"Sequential.load_state_dict: {key!r} has shape {shape}, "
                                 f"the model expects {current.shape}")
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
            and mode are left untouched.
        """
        input_shape = tuple(int(d) for d in np.atleast_1d(input_shape))
        x = np.zeros((1,) + input_shape, dtype=self._input_dtype())
        rows = []
        for i, layer in enumerate(self.layers):
            probe = copy.deepcopy(layer)   # pickling rules: caches are not copied
            try:
                x = _layer_forward(probe, x, False)
            except (ValueError, TypeError, RuntimeError) as exc:
                if type(exc) not in (ValueError, TypeError, RuntimeError):
                    raise  # a custom error class: keep it exactly as raised
                raise type(exc)(f"Sequential.summary: layer {i} ({type(layer).__name__}) "
                                f"failed on input of shape {_fmt_shape(x.shape)}: "
                                f"{exc}") from exc
            count = sum(p.size for _, p in _named_params_of(layer))
            rows.append((f"{i}: {type(layer).__name__}", _fmt_shape(np.shape(x)),
                         f"{count:,}"))
        total = sum(p.size for p in self.parameters())
        return _format_table(rows, _fmt_shape((1,) + input_shape), total)

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


def _format_table(rows, input_shape, total):
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
    out += [f"Total params: {total:,}", f"Trainable params: {total:,}",
            "Non-trainable params: 0", "_" * width]
    return "\n".join(out)
