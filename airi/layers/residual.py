"""``Residual``: a skip connection around a block of layers (He et al. 2016)."""
import numpy as np

from .base import Layer, StateChecker, backward_params_of, call_forward

__all__ = ["Residual"]


class Residual(Layer):
    """``y = body(x) + shortcut(x)``: a residual block, the shortcut being the identity
    when ``shortcut`` is None.

    The body and the shortcut are sub-layers (see "Sub-layers" in
    :class:`airi.layers.Layer`): their parameters, buffers and modes belong to the
    block, the body's listed first (``body.0.W`` ..., then ``shortcut.0.W`` ...).
    Any layer works as either path, most often a :class:`airi.Sequential`.

    Parameters
    ----------
    body : layer
        The residual branch, e.g. ``Sequential(Conv2D, BatchNorm2D, Relu, Conv2D,
        BatchNorm2D)``.
    shortcut : layer or None
        The skip branch; None is the identity (the body must then keep the shape).
        A projection such as ``Sequential(Conv2D(c, 2c, 1, stride=2, bias=False),
        BatchNorm2D(2c))`` matches a body that changes the shape.

    Shapes
    ------
    forward:  x (N, ...) -> body(x) + shortcut(x), the shape both paths produce
    backward: dout (that shape) -> dx = dbody/dx + dshortcut/dx (shape of x)

    Raises
    ------
    TypeError
        If ``body`` or ``shortcut`` is not a layer.
    ValueError
        (forward) If the two paths' outputs differ in shape; the message names both.

    Examples
    --------
    >>> from airi.layers import Conv2D, Relu, Residual
    >>> from airi import Sequential
    >>> block = Residual(Sequential(Conv2D(8, 8, 3, pad=1), Relu(),
    ...                             Conv2D(8, 8, 3, pad=1)))
    """

    _cache_names = ("_out_shape",)

    def __init__(self, body, shortcut=None):
        super().__init__()
        for what, layer in (("body", body), ("shortcut", shortcut)):
            if what == "shortcut" and layer is None:
                continue
            if not (callable(getattr(layer, "forward", None))
                    and callable(getattr(layer, "backward", None))):
                raise TypeError(f"Residual: {what} must be a layer (forward and backward "
                                f"methods), got {type(layer).__name__}")
        # Registration order is assignment order: the body's parameters come first.
        self.body = body
        self.shortcut = shortcut
        self.clear_cache()

    def check_state(self):
        """Check attributes read from a model file: ``body`` a layer, ``shortcut`` a
        layer or None (the loader checks their own attributes), no own parameters."""
        check = StateChecker(self)
        check.boolean("training")
        check.params({})
        check.layer_attr("body")
        if check.get("shortcut") is not None:
            check.layer_attr("shortcut")

    def forward(self, x, training=None):
        """x (N, ...) -> body(x) + shortcut(x) (identity shortcut: + x).

        ``training`` (if given) is passed on to both paths for this call."""
        main = call_forward(self.body, x, training)
        side = x if self.shortcut is None else call_forward(self.shortcut, x, training)
        if np.shape(main) != np.shape(side):
            what = "the input (identity shortcut)" if self.shortcut is None \
                else "the shortcut's output"
            raise ValueError(f"Residual: the body's output has shape {np.shape(main)} but "
                             f"{what} has shape {np.shape(side)}; they must match to be "
                             "added (give a projection shortcut that changes the shape "
                             "as the body does)")
        self._out_shape = np.shape(main)
        return main + side

    def backward(self, dout):
        """dout -> dL/dx, the sum of both paths' input gradients; the body's and the
        shortcut's parameter gradients are stored."""
        dout = self._check_dout(dout, self._cached("_out_shape"))
        dx = self.body.backward(dout)
        side = dout if self.shortcut is None else self.shortcut.backward(dout)
        return dx + side   # a new array: neither path's result is modified

    def backward_params(self, dout):
        """Parameter gradients only (the block is the first of a network): each path
        is asked for its parameter gradients only, dL/dx is not computed."""
        dout = self._check_dout(dout, self._cached("_out_shape"))
        backward_params_of(self.body, dout)
        if self.shortcut is not None:
            backward_params_of(self.shortcut, dout)

