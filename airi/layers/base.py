"""The building block every airi layer derives from.

Layers nest: a layer owns the layers held in its attributes (directly, in a list, tuple
or dict, or inside a ``Sequential``), as ``torch.nn.Module`` owns its sub-modules. See
"Sub-layers" in :class:`Layer`.
"""
import difflib
import functools
import inspect
import reprlib

import numpy as np

from .._config import resolve_dtype
from ..parameter import Parameter
from ..validators import positive_int as _positive_int  # noqa: F401 (the layers' size check)

__all__ = ["Layer", "call_forward"]


# ------------------------------------------------------------------ sub-layer helpers
def _is_layer_like(value):
    """True for an object that acts as a layer inside another one: an airi Layer, a
    Sequential, or a user layer with ``forward``/``backward`` and parameters (``params``
    or ``parameters``). Losses (forward/backward but no parameters) and classes are not."""
    if isinstance(value, Layer):
        return True
    if isinstance(value, type):
        return False
    return (callable(getattr(value, "forward", None))
            and callable(getattr(value, "backward", None))
            and (hasattr(value, "params") or callable(getattr(value, "parameters", None))))


def _named_params_of(layer):
    """``(name, Parameter)`` pairs of any layer-like object (recursive for airi's)."""
    if callable(getattr(layer, "named_parameters", None)):
        return list(layer.named_parameters())
    return list(getattr(layer, "params", {}).items())


def _named_buffers_of(layer):
    """``(name, ndarray)`` pairs of the buffers (running statistics) of a layer-like
    object: its ``named_buffers()``, else the arrays named in its ``_buffer_names``."""
    if callable(getattr(layer, "named_buffers", None)):
        return list(layer.named_buffers())
    return [(name, getattr(layer, name)) for name in getattr(layer, "_buffer_names", ())
            if getattr(layer, name, None) is not None]


# type -> whether its ``forward`` takes a ``training`` argument (inspected once per class)
_TAKES_TRAINING = {}


def _forward_takes_training(layer):
    """True when ``layer.forward`` accepts ``training=`` (a ``training`` parameter or
    ``**kwargs``); False for seed-style layers written as ``def forward(self, x)``."""
    per_instance = "forward" in getattr(layer, "__dict__", {})  # patched on the object
    cls = type(layer)
    if not per_instance and cls in _TAKES_TRAINING:
        return _TAKES_TRAINING[cls]
    try:
        parameters = inspect.signature(layer.forward).parameters.values()
    except (TypeError, ValueError):   # no introspectable signature: assume the contract
        takes = True
    else:
        takes = any(p.name == "training" or p.kind is inspect.Parameter.VAR_KEYWORD
                    for p in parameters)
    if not per_instance:
        _TAKES_TRAINING[cls] = takes
    return takes


def call_forward(layer, x, training=None):
    """``layer.forward(x, training=training)``, or ``layer.forward(x)`` when the layer's
    ``forward`` has no ``training`` parameter (user layers written as in the seed).

    Parameters
    ----------
    layer : layer
        Anything with a ``forward`` method (an airi layer, a Sequential, a user layer).
    x : ndarray (N, ...)
        The input batch.
    training : bool or None
        The mode of this call; None means the layer's own mode. A layer whose forward
        takes no ``training`` argument always runs in its own mode.

    Returns
    -------
    ndarray
        The layer's output.
    """
    if training is None or not _forward_takes_training(layer):
        return layer.forward(x)
    return layer.forward(x, training=training)


def backward_params_of(layer, dout):
    """Parameter gradients only (dL/dx not wanted): ``layer.backward_params(dout)`` when
    the layer has it, else ``layer.backward(dout)`` with the result dropped."""
    if callable(getattr(layer, "backward_params", None)):
        layer.backward_params(dout)
    else:
        layer.backward(dout)


# Argument names users bring from PyTorch and Keras, and what airi calls the same thing,
# for the error message only: airi keeps one spelling of its API (no aliases). For each
# foreign name, airi's candidates in order; the first one the layer accepts is named.
FOREIGN_ARGUMENTS = {
    "kernel_size": ("filter_size", "pool_size"),
    "kernel": ("filter_size", "pool_size"),
    "out_channels": ("num_filters",),
    "filters": ("num_filters",),
    "padding": ("pad",),
    "in_features": ("input_size",),
    "in_dim": ("input_size",),
    "input_dim": ("input_size",),
    "out_features": ("hidden_size",),
    "out_dim": ("hidden_size",),
    "output_dim": ("hidden_size",),
    "units": ("hidden_size",),
    "use_bias": ("bias",),
    "strides": ("stride",),
    "rate": ("p",),
    "epsilon": ("eps",),
    "negative_slope": ("alpha",),
    "kernel_initializer": ("init",),
    "weight_decay": ("reg",),
}

# Layer names of PyTorch and Keras whose airi layer is called differently.
FOREIGN_LAYERS = {
    "Dense": "Linear",
    "Conv2d": "Conv2D",
    "Convolution2D": "Conv2D",
    "MaxPool2d": "MaxPool2D",
    "MaxPooling2D": "MaxPool2D",
    "AvgPool2d": "AvgPool2D",
    "AveragePooling2D": "AvgPool2D",
    "BatchNorm1d": "BatchNorm1D",
    "BatchNorm2d": "BatchNorm2D",
    "BatchNormalization": "BatchNorm1D or BatchNorm2D",
    "LeakyReLU": "LeakyRelu",
    "Flatten2D": "Flatten",
}


def foreign_layer_error(module, name):
    """The AttributeError for ``module.name`` (a module's ``__getattr__``): names
    airi's layer when ``name`` is PyTorch's or Keras' name for it."""
    if name in FOREIGN_LAYERS:
        return AttributeError(f"{module} has no {name!r}: airi calls it "
                              f"{FOREIGN_LAYERS[name]}")
    return AttributeError(f"module {module!r} has no attribute {name!r}")


def _unknown_argument_error(layer, name, accepted):
    """TypeError for a keyword ``name`` that ``layer``'s constructor does not take."""
    for candidate in FOREIGN_ARGUMENTS.get(name, ()):
        if candidate in accepted:
            return TypeError(f"{layer} has no argument {name!r}: did you mean "
                             f"{candidate!r}?")
    close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
    if close:
        return TypeError(f"{layer} has no argument {name!r}: did you mean {close[0]!r}?")
    if not accepted:
        return TypeError(f"{layer} takes no arguments, got {name!r}")
    return TypeError(f"{layer} has no argument {name!r}; its arguments are "
                     + ", ".join(accepted))


def _checking_argument_names(init):
    """Wrap a layer's ``__init__`` so that an unknown keyword gets an error naming what
    airi calls it (see FOREIGN_ARGUMENTS) instead of Python's bare TypeError."""
    signature = inspect.signature(init)
    params = list(signature.parameters.values())[1:]          # without self
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return init                                           # takes any keyword
    accepted = [p.name for p in params
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    known = frozenset(accepted)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for name in kwargs:
            if name not in known:
                raise _unknown_argument_error(type(self).__name__, name, accepted)
        init(self, *args, **kwargs)

    __init__._airi_checks_names = True
    return __init__


def _short(value):
    """A bounded repr for messages about values read from files."""
    return reprlib.repr(value)


class StateChecker:
    """Checks the attributes of a layer rebuilt from a file, as its constructor checks
    its arguments; used by :meth:`Layer.check_state`. Every method raises ValueError
    naming ``Class.attribute``, what was expected and (a bounded repr of) what was found.

    Parameters
    ----------
    layer : Layer
        The layer whose attributes are checked.
    """

    def __init__(self, layer):
        self.layer = layer
        self.owner = type(layer).__name__

    def fail(self, name, expected, got=None, found=True):
        what = f", got {_short(got)}" if found else ""
        raise ValueError(f"{self.owner}.{name} must be {expected}{what}")

    def get(self, name):
        """The attribute ``name`` (a ValueError when the file did not set it)."""
        try:
            return vars(self.layer)[name]
        except KeyError:
            raise ValueError(f"{self.owner}.{name} is missing") from None

    def positive_int(self, name):
        value = self.get(name)
        if type(value) is not int or value < 1:
            self.fail(name, "a positive int", value)
        return value

    def int_pair(self, name, minimum):
        """A tuple of two Python ints, each >= ``minimum`` (what
        ``airi.functional.pair`` makes of a constructor argument)."""
        value = self.get(name)
        if not (type(value) is tuple and len(value) == 2
                and all(type(v) is int and v >= minimum for v in value)):
            self.fail(name, f"a pair (tuple) of ints >= {minimum}", value)
        return value

    def boolean(self, name):
        value = self.get(name)
        if type(value) is not bool:
            self.fail(name, "True or False", value)
        return value

    def real(self, name, low=-float("inf"), high=float("inf"), low_open=False):
        """A Python float in [low, high] (``(low, high]`` with ``low_open``)."""
        value = self.get(name)
        if type(value) is not float or not (low < value if low_open else low <= value) \
                or not value <= high:
            bracket = "(" if low_open else "["
            self.fail(name, f"a float in {bracket}{low}, {high}]", value)
        return value

    def choice(self, name, options):
        value = self.get(name)
        if type(value) is not str or value not in options:
            self.fail(name, f"one of {options}", value)
        return value

    def params(self, shapes, sizes=()):
        """``params`` holds exactly the Parameters named in ``shapes`` (name -> shape),
        each also the attribute of that name and a float array of native byte order
        (parameters may differ in dtype: ``param.data`` may be given any float dtype).
        ``sizes`` names the attributes the shapes come from (for the message)."""
        params = self.get("params")
        if type(params) is not dict or list(params) != list(shapes) or not all(
                isinstance(p, Parameter) for p in params.values()):
            self.fail("params", f"a dict of Parameters {list(shapes)}", params)
        for name, shape in shapes.items():
            param = params[name]
            if vars(self.layer).get(name) is not param:
                self.fail(name, f"the Parameter params[{name!r}]", found=False)
            data = param.data
            self._float_array(name, data, shape, sizes)

    def buffer(self, name, shape, sizes=()):
        """A float ndarray of ``shape`` (native byte order)."""
        return self._float_array(name, self.get(name), shape, sizes)

    def _float_array(self, name, value, shape, sizes=()):
        if type(value) is not np.ndarray or value.dtype.kind != "f" \
                or not value.dtype.isnative:
            self.fail(name, "a float array (native byte order)",
                      getattr(value, "dtype", type(value).__name__))
        if value.shape != tuple(shape):
            origin = ", ".join(f"{size}={vars(self.layer).get(size)!r}" for size in sizes)
            self.fail(name, f"of shape {tuple(shape)} (from {origin or 'the layer sizes'})",
                      value.shape)
        return value

    def layer_attr(self, name):
        """A nested layer (an attribute holding a layer, e.g. a residual block's body).
        Its own attributes are checked by the loader on their own."""
        value = self.get(name)
        if not isinstance(value, Layer) and not (callable(getattr(value, "forward", None))
                                                 and callable(getattr(value, "backward",
                                                                      None))):
            self.fail(name, "a layer", type(value).__name__)
        return value


def check_state_dict(where, expected, state):
    """Check a ``state`` dict against the ``expected`` one (same keys, same shapes) before
    anything is copied: a missing or unexpected key raises KeyError, a shape mismatch
    ValueError, each naming ``where`` and the key. Used by every ``load_state_dict``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise KeyError(f"{where}: {'; '.join(parts)}")
    for key, current in expected.items():
        shape = np.shape(state[key])
        if shape != current.shape:
            raise ValueError(f"{where}: {key!r} has shape {shape}, expected {current.shape}")


class Layer:
    """Base class of all layers: a Lego block with a forward and a backward pass.

    Subclasses implement ``forward(x, training=None)``, which caches what the backward
    pass needs, and ``backward(dout)``, which stores the parameter gradients in
    ``Parameter.grad`` and returns dL/dx. Parameters are created with
    :meth:`add_param`; the names of cached tensors are listed in ``_cache_names`` so that
    ``zero_grad`` and pickling drop them.

    Sub-layers
    ----------
    A layer owns the layers held in its attributes, as ``torch.nn.Module`` owns its
    sub-modules: a layer assigned directly (``self.body = Sequential(...)``), the layers
    in a list or tuple (``self.blocks = [Conv2D(...), Relu()]``, named ``blocks.0``,
    ``blocks.1``, ...) or in a dict with string keys, and a ``Sequential`` (whose layers
    are named by index). They are registered by being assigned: the attribute's name
    is their name and the order of first assignment is their order (Python keeps the
    attribute dict in that order; a list appended to later is seen as it is now).
    :meth:`parameters`, :meth:`named_parameters` (dotted names such as ``body.0.W``),
    :meth:`state_dict` / :meth:`load_state_dict` (running statistics included),
    :meth:`train` / :meth:`eval`, :meth:`to`, :meth:`zero_grad` and :meth:`update`
    reach them at any depth, so optimizers, ``airi.save`` / ``airi.load``, summaries
    and the MPI gradient reducer see every parameter. As in PyTorch, a layer's own
    parameters come first, then each sub-layer's in order; a Parameter (or layer)
    reachable twice is listed once. ``forward`` and ``backward`` are the layer's own:
    it calls its sub-layers itself (see :class:`airi.layers.Residual`).

    Attributes
    ----------
    params : dict of str -> Parameter
        The layer's own trainable parameters (empty for layers without any); those of
        its sub-layers are reached through :meth:`named_parameters`.
    training : bool
        The mode set by :meth:`train` / :meth:`eval` (training when never set).
    """

    _cache_names = ()
    _buffer_names = ()   # arrays of non-trained state (saved, converted by ``to``)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_airi_checks_names", False):
            cls.__init__ = _checking_argument_names(init)

    def __init__(self):
        self.params = {}
        self.training = True

    # ------------------------------------------------------------- parameters
    def add_param(self, name, data):
        """Register ``data`` as the Parameter ``name`` (also reachable as an attribute)."""
        param = Parameter(data, name=name)
        self.params[name] = param
        setattr(self, name, param)
        return param

    def _held_items(self):
        """``(name, value)`` for every attribute value, and for every item of an
        attribute that is a list or tuple (``"blocks.0"``) or a dict with string keys
        (``"heads.a"``), in the order the attributes were first assigned. The ``params``
        dict and the cached tensors are left out. Sub-layers and stray Parameters are
        found among these."""
        skip = set(type(self)._cache_names) | {"params"}
        for attr, value in list(vars(self).items()):
            if attr in skip:
                continue
            if isinstance(value, (list, tuple)):
                yield from ((f"{attr}.{i}", v) for i, v in enumerate(value))
            elif isinstance(value, dict):
                yield from ((f"{attr}.{k}", v) for k, v in value.items()
                            if isinstance(k, str))
            else:
                yield attr, value

    def _own_named_parameters(self):
        """The layer's own Parameters: those of ``params`` (in order), then any
        Parameter assigned as an attribute without :meth:`add_param`, directly
        (``self.w = Parameter(...)``) or in a list, tuple or dict (``"ws.0"``), so that
        none is silently left out."""
        own = dict(getattr(self, "params", None) or {})
        known = {id(p) for p in own.values()}
        for name, value in self._held_items():
            if isinstance(value, Parameter) and id(value) not in known:
                own[name] = value
                known.add(id(value))
        return own.items()

    def named_children(self):
        """The direct sub-layers, with their names, in the order they were assigned.

        Yields
        ------
        (str, layer)
            ``("body", layer)`` for an attribute, ``("blocks.0", layer)`` for the items
            of a list or tuple (by index) or a dict (by key). Each layer object once.
        """
        seen = {id(self)}
        for name, value in self._held_items():
            if id(value) not in seen and _is_layer_like(value):
                seen.add(id(value))
                yield name, value

    def children(self):
        """The direct sub-layers, as a list (see :meth:`named_children`)."""
        return [child for _, child in self.named_children()]

    def named_parameters(self, prefix="", recurse=True):
        """Every Parameter with its dotted name: the layer's own (``"W"``), then each
        sub-layer's, prefixed by its name (``"body.0.W"``, ``"shortcut.1.gamma"``).

        Parameters
        ----------
        prefix : str
            Put before every name (``prefix + "." + name``).
        recurse : bool
            False: only the layer's own parameters.

        Yields
        ------
        (str, Parameter)
            Each Parameter once, even when several layers share it.
        """
        seen = set()
        head = prefix + "." if prefix else ""
        pairs = list(self._own_named_parameters())
        if recurse:
            for child_name, child in self.named_children():
                pairs += [(f"{child_name}.{name}", p)
                          for name, p in _named_params_of(child)]
        for name, param in pairs:
            if id(param) not in seen:
                seen.add(id(param))
                yield head + name, param

    def parameters(self, recurse=True):
        """The layer's Parameters, as a list: its own, then its sub-layers' (each
        once); ``recurse=False`` gives only its own."""
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self):
        """The arrays of model state that are not trained (BatchNorm's running
        statistics), with dotted names, the layer's own then its sub-layers'.

        Yields
        ------
        (str, ndarray)
        """
        for name in type(self)._buffer_names:
            value = getattr(self, name, None)
            if value is not None:
                yield name, value
        for child_name, child in self.named_children():
            for name, value in _named_buffers_of(child):
                yield f"{child_name}.{name}", value

    def update(self, lr=1e-3):
        """A plain SGD step on every parameter (sub-layers' included):
        ``data -= lr * grad``."""
        for p in self.parameters():
            if p.grad is not None:
                p.data -= lr * p.grad

    def zero_grad(self):
        """Drop the gradients and the tensors cached by the last forward pass (of the
        sub-layers too)."""
        for _, p in self._own_named_parameters():
            p.grad = None
        self.clear_cache()
        for child in self.children():
            if callable(getattr(child, "zero_grad", None)):
                child.zero_grad()

    def clear_cache(self):
        """Drop the tensors cached by the last forward pass (those named in
        ``_cache_names``); a ``backward`` afterwards raises RuntimeError."""
        for name in self._cache_names:
            setattr(self, name, None)

    def to(self, dtype):
        """Convert every parameter and buffer (running statistics), the sub-layers'
        included, to ``dtype`` in place; returns self."""
        dtype = resolve_dtype(dtype)
        for _, p in self._own_named_parameters():
            p.to(dtype)
        for name in type(self)._buffer_names:
            value = getattr(self, name, None)
            if value is not None:
                setattr(self, name, value.astype(dtype, copy=False))
        for child in self.children():
            if callable(getattr(child, "to", None)):
                child.to(dtype)
        return self

    # ------------------------------------------------------------------- modes
    def train(self, mode=True):
        """Put the layer and its sub-layers in training mode (``mode=False`` means
        eval); returns self."""
        self.training = bool(mode)
        for child in self.children():
            if callable(getattr(child, "train", None)):
                child.train(self.training)
        return self

    def eval(self):
        """Put the layer in evaluation mode; returns self."""
        return self.train(False)

    def _is_training(self, training):
        """The mode of this call: an explicit ``training`` argument wins."""
        return self.training if training is None else bool(training)

    # ------------------------------------------------------------ forward/back
    def __call__(self, x, training=None):
        """Same as :meth:`forward`."""
        return self.forward(x, training=training)

    def forward(self, x, training=None):
        """Compute the layer's output and cache what :meth:`backward` needs.

        Parameters
        ----------
        x : ndarray, shape (N, ...)
            A batch of inputs (float32 or float64).
        training : bool or None
            The mode of this call; None means the layer's mode (:meth:`train` /
            :meth:`eval`, training when never set).

        Returns
        -------
        out : ndarray, shape (N, ...)
            The output; its shape depends on the layer.
        """
        raise NotImplementedError

    def backward(self, dout):
        """Back-propagate: store the parameter gradients and return dL/dx.

        Parameters
        ----------
        dout : ndarray
            dL/d(out), the shape of the last forward's output.

        Returns
        -------
        dx : ndarray
            dL/dx, the shape of the last forward's input. Each Parameter's ``grad``
            receives dL/d(parameter), shaped like the parameter.

        Raises
        ------
        RuntimeError
            If nothing is cached (no training-mode forward since the last zero_grad).
        """
        raise NotImplementedError

    def backward_params(self, dout):
        """Like :meth:`backward`, but only the parameter gradients are wanted: dL/dx is
        not needed (the layer is the first of a network whose input is data).

        Stores every Parameter's ``grad`` exactly as ``backward`` does and returns
        None. The default calls ``backward`` and drops dx; layers whose dx is costly
        (Conv2D, Linear) skip computing it, as PyTorch does for an input that needs no
        gradient.
        """
        self.backward(dout)

    # ---------------------------------------------------------------- helpers
    def _name(self):
        return type(self).__name__

    def _check_input(self, x, ndim=None, dims=None, what="input", expected=None):
        """Validate ``x``: a float ndarray with ``ndim`` dimensions and, for each
        ``axis: size`` in ``dims``, that size. Raises ValueError naming the layer.

        ``expected`` describes the layout in messages, e.g. ``"(N, C, H, W)"`` (the
        default for ``ndim=4``); a 3-D batch given to a 4-D layer gets a hint about the
        missing channel axis."""
        if not isinstance(x, np.ndarray):
            if isinstance(x, Parameter):
                x = x.data
            else:
                x = np.asarray(x)
        if x.dtype.kind != "f":
            raise ValueError(f"{self._name()}: {what} must be a float array, got dtype "
                             f"{x.dtype} (convert it, e.g. x.astype(np.float32))")
        if ndim is not None and x.ndim != ndim:
            raise ValueError(self._ndim_message(x.shape, ndim, what, expected))
        if dims:
            for axis, size in dims.items():
                if x.shape[axis] != size:
                    expected = ["*"] * x.ndim
                    expected[axis] = str(size)
                    raise ValueError(
                        f"{self._name()}: expected {what} of shape ({', '.join(expected)}), "
                        f"got {x.shape}")
        return x

    def _ndim_message(self, shape, ndim, what, expected):
        """The message for an input with the wrong number of dimensions."""
        if expected is None and ndim == 4:
            expected = "(N, C, H, W)"
        if expected is None:
            return f"{self._name()}: expected a {ndim}-D {what}, got shape {shape}"
        message = f"{self._name()}: expected {expected} {what} ({ndim}-D), got shape {shape}"
        if ndim == 4 and len(shape) == 3:
            message += ("; a batch of one-channel images needs a channel axis: x[:, None] "
                        "(a single image needs a batch axis: x[None])")
        elif ndim == 4 and len(shape) == 2:
            message += "; flat images need reshaping, e.g. x.reshape(-1, 1, 28, 28)"
        return message

    def _cached(self, name):
        """The cached tensor ``name``, or a RuntimeError if forward has not run."""
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(f"{self._name()}: backward called before forward (or after "
                               "zero_grad / an eval-mode forward); nothing is cached")
        return value

    def _check_dout(self, dout, shape):
        if not isinstance(dout, np.ndarray) or dout.shape != tuple(shape):
            got = dout.shape if isinstance(dout, np.ndarray) else type(dout).__name__
            raise ValueError(f"{self._name()}: backward expected dout of shape "
                             f"{tuple(shape)}, got {got}")
        return dout

    # ------------------------------------------------------------ state/pickle
    def state_dict(self):
        """Copies of the layer's arrays by dotted name: its own parameters and buffers
        (``"W"``, ``"running_mean"``), then each sub-layer's, prefixed by its name
        (``"body.1.running_var"``).

        Returns
        -------
        dict of str -> ndarray
        """
        state = {name: p.data.copy() for name, p in self._own_named_parameters()}
        for name in type(self)._buffer_names:
            value = getattr(self, name, None)
            if value is not None:
                state[name] = np.array(value, copy=True)
        for child_name, child in self.named_children():
            if callable(getattr(child, "state_dict", None)):
                for name, value in child.state_dict().items():
                    state[f"{child_name}.{name}"] = np.array(value, copy=True)
        return state

    def load_state_dict(self, state):
        """Copy arrays from ``state`` (as returned by :meth:`state_dict`) into the
        parameters, buffers and sub-layers, in place (their dtype is kept).

        Everything is checked before anything is changed.

        Parameters
        ----------
        state : dict of str -> array_like
            One entry per name of :meth:`state_dict`, each of that array's shape.

        Raises
        ------
        KeyError
            If an entry is missing or unexpected (the message lists them).
        ValueError
            If an entry has the wrong shape.
        """
        check_state_dict(f"{self._name()}.load_state_dict", self.state_dict(), state)
        self._copy_state(state)

    def _copy_state(self, state):
        """Copy a checked ``state`` into the own arrays, then into each sub-layer."""
        for name, p in self._own_named_parameters():
            p.data[...] = np.asarray(state[name])
        for name in type(self)._buffer_names:
            if getattr(self, name, None) is not None:
                getattr(self, name)[...] = np.asarray(state[name])
        for child_name, child in self.named_children():
            if callable(getattr(child, "load_state_dict", None)):
                prefix = child_name + "."
                child.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                       if k.startswith(prefix)})

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._cache_names:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        # The names come from the class, never from the file (a file could name
        # range(10**15) here); caches always start empty.
        for name in type(self)._cache_names:
            self.__dict__[name] = None

    def check_state(self):
        """Check that the attributes a file gave this layer are ones its constructor
        could have made; ``airi.load`` calls it on every layer it rebuilds and turns the
        ValueError into a ``ModelFileError`` naming the file.

        The base class checks ``training`` and that ``params`` is a dict of Parameters;
        a layer with sizes or parameters overrides it (calling ``super().check_state()``
        is not needed when it checks ``params`` itself) using :class:`StateChecker`::

            def check_state(self):
                check = StateChecker(self)
                n = check.positive_int("size")
                check.boolean("training")
                check.params({"W": (n, n)})

        A layer holding other layers checks them with ``check.layer_attr(name)`` (the
        loader checks each nested layer's own attributes on its own). Checks must not
        loop over or allocate by values read from the file before bounding them.

        Raises
        ------
        ValueError
            Naming ``Class.attribute``, what was expected and what was found.
        """
        check = StateChecker(self)
        state = vars(self)
        # A custom layer that never called Layer.__init__ may lack them: not an error.
        if "training" in state:
            check.boolean("training")
        params = state.get("params", {})
        if type(params) is not dict or not all(
                type(k) is str and isinstance(p, Parameter) for k, p in params.items()):
            check.fail("params", "a dict of name -> Parameter", params)

    def extra_repr(self):
        return ""

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{self._name()}({self.extra_repr()})"
        lines = [f"{self._name()}({self.extra_repr()}"]
        for name, child in children:
            text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {text}")
        lines.append(")")
        return "\n".join(lines)
