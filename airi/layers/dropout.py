"""``Dropout``: randomly silence activations while training (inverted dropout)."""
import numpy as np

from .. import _config
from .base import Layer, StateChecker

__all__ = ["Dropout"]


class Dropout(Layer):
    """Inverted dropout.

    In training mode every element of ``x`` is zeroed with probability ``p`` and the
    survivors are scaled by ``1 / (1 - p)``, so the expected activation is unchanged and
    eval mode is the identity (no rescaling at test time).

    The mask is drawn from airi's shared generator (``airi.seed(n)`` reproduces it), as
    float32 uniforms whatever the input dtype, so a float32 and a float64 run with the
    same seed drop the same elements.

    Parameters
    ----------
    p : float
        Probability of zeroing an element, in [0, 1].

    Shapes
    ------
    forward:  x (any shape) -> out (same shape and dtype)
    backward: dout (same shape) -> dx (same shape)
    """

    _cache_names = ("_mask", "_shape")

    def __init__(self, p=0.5):
        super().__init__()
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.number)) \
                or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self._mask = None
        self._shape = None

    def check_state(self):
        """The checks of the constructor, on attributes read from a model file."""
        check = StateChecker(self)
        check.boolean("training")
        check.real("p", 0.0, 1.0)
        check.params({})

    def forward(self, x, training=None):
        """x (any shape) -> out (same shape and dtype).

        Parameters
        ----------
        x : ndarray, float
        training : bool or None
            Training mode drops elements (a new mask per call, from airi's generator)
            and scales the rest by ``1 / (1 - p)``; eval mode returns ``x`` itself.
            None: the layer's mode.

        Returns
        -------
        ndarray, shape of x
        """
        x = self._check_input(x)
        self._shape = x.shape
        if not self._is_training(training) or self.p == 0.0:
            self._mask = None          # identity: backward passes dout through
            return x
        self._mask = self._draw_mask(x.shape, x.dtype)
        return x * self._mask

    def _draw_mask(self, shape, dtype):
        """Kept elements hold 1/(1-p), dropped ones 0, in ``dtype``."""
        keep = _config.get_rng().random(shape, dtype=np.float32) >= self.p
        mask = keep.astype(dtype)
        if self.p < 1.0:
            mask *= 1.0 / (1.0 - self.p)
        return mask

    def backward(self, dout):
        """dout (shape of the output) -> dx (shape of the input): ``dout * mask`` with
        the last forward's mask, or ``dout`` itself after an eval-mode forward."""
        shape = self._cached("_shape")
        dout = self._check_dout(dout, shape)
        if self._mask is None:
            return dout
        return dout * self._mask

    def extra_repr(self):
        return f"p={self.p}"
