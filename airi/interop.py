"""Weights to and from PyTorch, without importing it.

:func:`torch_state_dict` gives an airi model's weights with the names and layouts of
the equivalent ``torch.nn`` model built layer for layer; :func:`load_torch_state_dict`
loads such a dict (a PyTorch ``state_dict()``, or NumPy arrays) back into an airi model.

The equivalent PyTorch model
----------------------------
Layer for layer, each airi layer is its PyTorch namesake:

============================ ============================================================
airi                         torch.nn                       (entries, PyTorch layout)
============================ ============================================================
``Conv2D(C, F, k, stride,    ``Conv2d(C, F, k, stride, padding, bias=...)``
pad, bias)``                 ``weight`` (F, C, kh, kw), ``bias`` (F,): as airi's W, b
``Linear(D, M, bias)``       ``Linear(D, M, bias=...)``: ``weight`` (M, D), the
                             transpose of airi's W (D, M); ``bias`` (M,)
``BatchNorm1D/2D(C, eps,     ``BatchNorm1d/2d(C, eps, momentum)``: ``weight`` = gamma,
momentum)``                  ``bias`` = beta, ``running_mean``, ``running_var``,
                             ``num_batches_tracked`` (int64, shape (); airi does not count
                             batches and writes 0: PyTorch reads it only when
                             ``momentum=None``)
``MaxPool2D``, ``AvgPool2D`` ``MaxPool2d``, ``AvgPool2d`` (no entries), ...
``Relu``, ``LeakyRelu``,     ``ReLU``, ``LeakyReLU(alpha)``, ``Sigmoid``, ``Tanh``,
``Sigmoid``, ``Tanh``,       ``Flatten``, ``Softmax(dim=1)``, ``LogSoftmax(dim=1)``,
``Flatten``, ``Softmax``,    ``Dropout`` (no entries)
``LogSoftmax``, ``Dropout``
``GlobalAvgPool2D``          ``Sequential(AdaptiveAvgPool2d(1), Flatten())`` (no entries)
``Sequential``               ``nn.Sequential``: entries ``"<index>.<name>"``, every layer
                             counting (parameter-free ones too), as nn.Sequential numbers
                             its modules
``Residual(body, shortcut)`` a module with attributes ``body`` and ``shortcut`` (None for
                             the identity): ``"body.<...>"``, ``"shortcut.<...>"``
a layer of your own          its sub-layers under the attribute names it holds them by
                             (``"block.0.weight"``), as a torch module with the same
                             attribute names; its own Parameters and buffers
                             (``_buffer_names``) under their airi names, unchanged (name
                             them as your torch module does)
============================ ============================================================

So an entry's name is the airi path of its layer (the prefix of
``model.named_parameters()``) followed by PyTorch's name for the tensor.
"""
import numpy as np

__all__ = ["torch_state_dict", "load_torch_state_dict"]


class _Entry:
    """One tensor of the PyTorch state dict: how to read it from the airi layer (in
    PyTorch's layout) and how to write a value back."""

    def __init__(self, get, set_, note=""):
        self.get = get
        self.set = set_
        self.note = note      # a hint for shape errors (e.g. the Linear transpose)

    @property
    def shape(self):
        return np.shape(self.get())


def _array_entry(owner, attr):
    """A buffer stored as a plain array attribute (BatchNorm's running statistics)."""
    def set_(value):
        getattr(owner, attr)[...] = value
    return _Entry(lambda: np.array(getattr(owner, attr), copy=True), set_)


def _param_entry(param, transpose=False, note=""):
    if transpose:
        def set_(value):
            param.data[...] = value.T
        return _Entry(lambda: np.ascontiguousarray(param.data.T), set_, note)

    def set_(value):
        param.data[...] = value
    return _Entry(lambda: np.array(param.data, copy=True), set_, note)


def _batches_entry(layer):
    """``num_batches_tracked``: the layer's count if it keeps one, else 0."""
    def get():
        return np.array(int(getattr(layer, "num_batches_tracked", 0)), dtype=np.int64)

    def set_(value):
        if "num_batches_tracked" in vars(layer):
            layer.num_batches_tracked = int(value)
    return _Entry(get, set_)


def _own_params(layer):
    """The Parameters a layer holds itself (not those of its sub-layers), by name."""
    own = getattr(layer, "_own_named_parameters", None)     # nested layers (issue 15)
    if callable(own):
        return dict(own())
    params = getattr(layer, "params", {})
    # a container's ``params`` also lists its sub-layers' Parameters, by dotted names
    # ("0.W", "body.1.gamma"); the layer's own have plain names
    return {name: p for name, p in dict(params).items() if "." not in name}


def _children(layer):
    """(name, sub-layer) pairs in registration order; empty for a plain layer."""
    from . import Sequential
    if isinstance(layer, Sequential):
        return [(str(i), sub) for i, sub in enumerate(layer.layers)]
    named = getattr(layer, "named_children", None)
    if callable(named):
        return [(str(name), sub) for name, sub in named() if sub is not None]
    return []


def _layer_entries(layer):
    """PyTorch name -> _Entry of the tensors a layer holds itself."""
    from . import Sequential
    from .layers import BatchNorm1D, BatchNorm2D, Conv2D, Linear
    if isinstance(layer, Sequential):
        return {}                       # only its layers hold tensors
    params = _own_params(layer)
    if isinstance(layer, (Conv2D, Linear)):
        entries = {}
        if "W" in params:
            entries["weight"] = _param_entry(
                params["W"], transpose=isinstance(layer, Linear),
                note=("PyTorch's Linear weight is (out_features, in_features), the "
                      "transpose of airi's W" if isinstance(layer, Linear) else ""))
        if "b" in params:
            entries["bias"] = _param_entry(params["b"])
        return entries
    if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
        return {"weight": _param_entry(params["gamma"]),
                "bias": _param_entry(params["beta"]),
                "running_mean": _array_entry(layer, "running_mean"),
                "running_var": _array_entry(layer, "running_var"),
                "num_batches_tracked": _batches_entry(layer)}
    entries = {name: _param_entry(p) for name, p in params.items()}
    for name in getattr(type(layer), "_buffer_names", ()):     # a user layer's buffers
        if isinstance(getattr(layer, name, None), np.ndarray):
            entries[name] = _array_entry(layer, name)
    return entries


def _entries(model):
    """Every tensor of the model: (full PyTorch name, layer path, layer, _Entry)."""
    found = []

    def walk(layer, prefix):
        for name, entry in _layer_entries(layer).items():
            found.append((prefix + name, prefix.rstrip("."), layer, entry))
        for name, sub in _children(layer):
            walk(sub, f"{prefix}{name}.")

    walk(model, "")
    return found


def torch_state_dict(model):
    """The model's weights as the equivalent ``torch.nn`` model's ``state_dict``.

    Parameters
    ----------
    model : Sequential or layer
        An airi model (any nesting) or a single layer.

    Returns
    -------
    dict of str -> ndarray
        Copies, in PyTorch's names and layouts (see the module's table): e.g. for
        ``lenet``, ``"0.weight"`` (16, 1, 5, 5), ``"0.bias"`` (16,), ``"7.weight"``
        (128, 800). ``torch.nn.Module.load_state_dict({k: torch.from_numpy(v) ...})``
        takes it.
    """
    return {name: entry.get() for name, _, _, entry in _entries(model)}


def _as_numpy(value, key):
    """A NumPy array from an array, a number, or anything with ``.numpy()`` (a torch
    tensor: detached and moved to the CPU first, without importing torch)."""
    if not isinstance(value, np.ndarray) and callable(getattr(value, "numpy", None)):
        for step in ("detach", "cpu"):
            if callable(getattr(value, step, None)):
                value = getattr(value, step)()
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"load_torch_state_dict: {key!r} must hold numbers, got dtype "
                        f"{array.dtype}")
    return array


def _describe(path, layer):
    where = f"layer {path}" if path else "the model"
    return f"{where} ({type(layer).__name__})"


def load_torch_state_dict(model, state_dict):
    """Load PyTorch-named weights (as :func:`torch_state_dict` gives them) into ``model``.

    Every name and shape is checked before anything is changed; values are copied into
    the existing arrays, in place, converted to their dtype (a float64 tensor loaded into
    a float32 model is rounded).

    Parameters
    ----------
    model : Sequential or layer
        The airi model, built layer for layer like the PyTorch model the weights came
        from.
    state_dict : mapping of str -> array_like
        NumPy arrays, or anything with a ``.numpy()`` method (PyTorch tensors: a
        ``torch_model.state_dict()`` can be passed as it is; torch is never imported).

    Returns
    -------
    model
        The same model, for chaining.

    Raises
    ------
    KeyError
        Names the model has that ``state_dict`` lacks (missing keys) and names
        ``state_dict`` has that the model does not (unexpected keys), all in one message.
    ValueError
        A shape mismatch, naming each key, its layer, the expected and the actual shape.
    TypeError
        ``state_dict`` is not a mapping, or a value is not numeric.
    """
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError("load_torch_state_dict: state_dict must be a mapping of names to "
                        f"arrays (e.g. torch_model.state_dict()), got "
                        f"{type(state_dict).__name__}")
    entries = _entries(model)
    expected = [name for name, _, _, _ in entries]
    given = [str(k) for k in state_dict.keys()]
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in given if k not in set(expected)]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise KeyError(f"load_torch_state_dict: {'; '.join(parts)} (the airi model has "
                       f"{len(expected)} entries; build it layer for layer like the "
                       "PyTorch model: see airi.interop)")
    values, problems = {}, []
    for name, path, layer, entry in entries:
        value = _as_numpy(state_dict[name], name)
        want = entry.shape
        if value.shape != want:
            hint = f" ({entry.note})" if entry.note and value.shape == want[::-1] else ""
            problems.append(f"{name!r} of {_describe(path, layer)}: expected shape "
                            f"{want}, got {value.shape}{hint}")
        values[name] = value
    if problems:
        raise ValueError("load_torch_state_dict: shape mismatch: " + "; ".join(problems))
    for name, _, _, entry in entries:
        entry.set(values[name])
    return model
