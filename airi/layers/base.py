"""The building block every airi layer derives from."""
import reprlib

import numpy as np

from .._config import resolve_dtype
from ..parameter import Parameter
from ..validators import positive_int as _positive_int  # noqa: F401 (the layers' size check)

__all__ = ["Layer"]


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


class Layer:
    """Base class of all layers: a Lego block with a forward and a backward pass.

    Subclasses implement ``forward(x, training=None)``, which caches what the backward
    pass needs, and ``backward(dout)``, which stores the parameter gradients in
    ``Parameter.grad`` and returns dL/dx. Parameters are created with
    :meth:`add_param`; the names of cached tensors are listed in ``_cache_names`` so that
    ``zero_grad`` and pickling drop them.

    Attributes
    ----------
    params : dict of str -> Parameter
        The trainable parameters (empty for layers without any).
    training : bool
        The mode set by :meth:`train` / :meth:`eval` (training when never set).
    """

    _cache_names = ()

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

    def parameters(self):
        """The layer's Parameters, as a list."""
        return list(self.params.values())

    def update(self, lr=1e-3):
        """A plain SGD step on this layer's own parameters: ``data -= lr * grad``."""
        for p in self.params.values():
            if p.grad is not None:
                p.data -= lr * p.grad

    def zero_grad(self):
        """Drop the gradients and the tensors cached by the last forward pass."""
        for p in self.params.values():
            p.grad = None
        self.clear_cache()

    def clear_cache(self):
        """Drop the tensors cached by the last forward pass (those named in
        ``_cache_names``); a ``backward`` afterwards raises RuntimeError."""
        for name in self._cache_names:
            setattr(self, name, None)

    def to(self, dtype):
        """Convert every parameter (and running statistic) to ``dtype`` in place."""
        dtype = resolve_dtype(dtype)
        for p in self.params.values():
            p.to(dtype)
        return self

    # ------------------------------------------------------------------- modes
    def train(self, mode=True):
        """Put the layer in training mode (``mode=False`` means eval); returns self."""
        self.training = bool(mode)
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
        """Parameter arrays (and buffers) by name, as copies."""
        return {name: p.data.copy() for name, p in self.params.items()}

    def load_state_dict(self, state):
        """Copy arrays from ``state`` (as returned by :meth:`state_dict`) into the
        parameters, in place (their dtype is kept).

        Parameters
        ----------
        state : dict of str -> array_like
            One entry per parameter name, each of that parameter's shape.

        Raises
        ------
        KeyError
            If an entry is missing.
        ValueError
            If an entry has the wrong shape.
        """
        for name, p in self.params.items():
            if name not in state:
                raise KeyError(f"{self._name()}: state has no entry {name!r}")
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"{self._name()}: {name} has shape {value.shape}, "
                                 f"expected {p.shape}")
            p.data[...] = value

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
        return f"{self._name()}({self.extra_repr()})"
