"""Mini-batches and image transforms.

:class:`DataLoader` cuts arrays ``X`` (N, ...) and ``y`` (N, ...) into mini-batches,
shuffled every epoch, optionally transformed (augmentation, normalisation) and, for data
parallel training, sharded across ranks.

Transforms take a batch of images ``x`` of shape (N, C, H, W) (float) and return a new
array of the same dtype; they never modify their input. Their randomness comes from
airi's shared generator (``airi.seed(n)`` makes it reproducible)::

    norm = Normalize.fit(X_train)
    augment = Compose([RandomShift(2), norm])
    train = DataLoader(X_train, y_train, batch_size=64, transform=augment)
    for xb, yb in train:
        ...
"""
import reprlib

import numpy as np

from . import _config
from .validators import positive_int

__all__ = ["DataLoader", "Compose", "Normalize", "RandomCrop", "RandomShift",
           "RandomHorizontalFlip"]


def _as_array(a, name):
    """Arrays pass through untouched (NumPy or, later, CuPy); anything else is converted."""
    a = a if hasattr(a, "shape") and hasattr(a, "__getitem__") else np.asarray(a)
    if a.ndim == 0:
        raise ValueError(f"DataLoader: {name} must have a first (sample) axis, got a scalar")
    return a


class DataLoader:
    """Iterate over ``(X, y)`` in mini-batches ``(xb, yb)``.

    Parameters
    ----------
    X : ndarray, shape (N, ...)
        Inputs, for example images (N, C, H, W). Kept as given (no copy, no cast).
    y : ndarray, shape (N,) or (N, ...)
        Targets, one per sample.
    batch_size : int
        Samples per (global) batch. The last batch may be smaller unless ``drop_last``.
    shuffle : bool
        Draw a new random order each epoch (else the order of ``X``).
    drop_last : bool
        Drop a last batch smaller than ``batch_size``.
    seed : int or None
        None: each epoch's order comes from airi's shared generator, so ``airi.seed(n)``
        reproduces it (and a checkpoint that saves ``airi``'s RNG state resumes it).
        An int: the loader owns a generator seeded with it, advanced once per epoch;
        epoch k's order depends only on ``seed`` and k, whatever else draws random
        numbers. Its state is in :meth:`state_dict`.
    transform : callable, optional
        Applied to each input batch: ``xb = transform(xb)`` (see :class:`Compose`).
    rank, world_size : int
        Data parallelism: with ``world_size`` K > 1, every rank draws the same order
        (use the same seed on all ranks) and yields only its own contiguous shard of
        each global batch; the K shards of a batch are disjoint, cover it exactly once,
        and differ in size by at most one (the first ``B % K`` ranks get one more). A
        global batch smaller than K gives some ranks an empty shard (size 0), so that
        every rank still takes part in every step; average gradients weighted by shard
        size, or use ``drop_last=True``.

    Attributes
    ----------
    X, y : ndarray
        The data (``len(loader.X)`` is the number of samples).
    dataset_size : int
        Number of samples N.
    epoch : int
        Number of epochs started (iterations begun) so far.

    Notes
    -----
    ``len(loader)`` is the number of batches per epoch: ``ceil(N / batch_size)``, or
    ``N // batch_size`` with ``drop_last``; the same on every rank.

    Every ``iter(loader)`` (every ``for`` loop) starts a new epoch, except the first one
    after :meth:`load_state_dict` of a state saved mid-epoch, which continues that epoch
    with the same order from the next batch.

    Examples
    --------
    >>> loader = DataLoader(X_train, y_train, batch_size=64, seed=0)
    >>> for xb, yb in loader:      # xb: (64, 1, 28, 28), yb: (64,)
    ...     ...
    """

    def __init__(self, X, y, batch_size, shuffle=True, drop_last=False, seed=None,
                 transform=None, rank=0, world_size=1):
        X = _as_array(X, "X")
        y = _as_array(y, "y")
        if len(X) != len(y):
            raise ValueError(f"DataLoader: X and y must hold the same number of samples, "
                             f"got X of shape {tuple(X.shape)} and y of shape "
                             f"{tuple(y.shape)}")
        if len(X) == 0:
            raise ValueError("DataLoader: X and y are empty (need at least one sample)")
        self.batch_size = positive_int(batch_size, "batch_size", "DataLoader")
        self.world_size = positive_int(world_size, "world_size", "DataLoader")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) \
                or not 0 <= rank < self.world_size:
            raise ValueError(f"DataLoader: rank must be an integer in "
                             f"[0, world_size={self.world_size}), got {rank!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"DataLoader: transform must be callable, got "
                             f"{type(transform).__name__}")
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"DataLoader: seed must be an int or None, got {seed!r}")
        self.X = X
        self.y = y
        self.dataset_size = len(X)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = None if seed is None else int(seed)
        self.transform = transform
        self.rank = int(rank)
        self.epoch = 0
        self._rng = None if seed is None else np.random.default_rng(self.seed)
        self._order = None      # the current epoch's order (None when between epochs)
        self._position = 0      # batches of the current epoch handed out so far
        self._resume = False    # True after load_state_dict of a mid-epoch state

    # --- sizes -----------------------------------------------------------------------
    def __len__(self):
        full, rest = divmod(self.dataset_size, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def shard_bounds(self, batch_len):
        """``(start, stop)`` of this rank's contiguous share of a global batch.

        Parameters
        ----------
        batch_len : int
            Size B of the global batch.

        Returns
        -------
        (int, int)
            Shares differ by at most one sample: the first ``B % K`` ranks hold
            ``B // K + 1``, the others ``B // K``.
        """
        base, extra = divmod(batch_len, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    # --- order of an epoch -----------------------------------------------------------
    def _draw_order(self):
        """The sample order of a new epoch: int64 (N,), a permutation when shuffling."""
        if not self.shuffle:
            return np.arange(self.dataset_size, dtype=np.int64)
        # Read the shared generator at each epoch: airi.seed() replaces it.
        rng = self._rng if self._rng is not None else _config.get_rng()
        return rng.permutation(self.dataset_size).astype(np.int64, copy=False)

    def batch_indices(self, order, batch):
        """Indices of this rank's samples in batch number ``batch`` of an epoch.

        Parameters
        ----------
        order : ndarray of int, shape (N,)
            The epoch's sample order.
        batch : int
            Batch number, ``0 <= batch < len(self)``.

        Returns
        -------
        ndarray of int64, shape (b,)
            ``b`` is the rank's shard size (the whole batch when ``world_size`` is 1).
        """
        start = batch * self.batch_size
        global_batch = order[start:min(start + self.batch_size, self.dataset_size)]
        if self.world_size == 1:
            return global_batch
        lo, hi = self.shard_bounds(len(global_batch))
        return global_batch[lo:hi]

    def __iter__(self):
        if self._resume:
            self._resume = False
        else:
            self._order = self._draw_order()
            self._position = 0
            self.epoch += 1
        return self._batches(self._order, self._position)

    def _batches(self, order, position):
        n_batches = len(self)
        while position < n_batches:
            idx = self.batch_indices(order, position)
            position += 1
            # Counted when handed out: a run stopped after training on this batch
            # resumes with the next one. Only the newest iteration updates the loader.
            if self._order is order:
                self._position = position
            xb, yb = self.X[idx], self.y[idx]
            if self.transform is not None:
                xb = self.transform(xb)
            yield xb, yb
        if self._order is order:
            self._order = None
            self._position = 0

    # --- resuming --------------------------------------------------------------------
    def state_dict(self):
        """What a checkpoint needs to continue the shuffling exactly.

        Returns
        -------
        dict
            ``epoch``; ``rng_state`` (the loader's own generator state when it has a
            ``seed``, else None: then the order comes from airi's shared generator, whose
            state the checkpoint must hold too, see ``airi._config.get_rng_state``);
            ``order`` (int64 (N,)) and ``position`` (batches done) when saved in the
            middle of an epoch, else None and 0; ``dataset_size`` and ``batch_size`` to
            check the data on reload. Plain containers, ints and one array: it pickles.
        """
        mid_epoch = self._order is not None and self._position < len(self)
        return {
            "epoch": self.epoch,
            "rng_state": None if self._rng is None else self._rng.bit_generator.state,
            "order": self._order.copy() if mid_epoch else None,
            "position": self._position if mid_epoch else 0,
            "dataset_size": self.dataset_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`: the next ``for`` loop continues where it stopped.

        Raises
        ------
        ValueError
            If the state was saved for another number of samples or batch size, or for
            a loader with (or without) its own seed when this one has none (or one), or
            is not a state a DataLoader writes (see :meth:`check_state_dict`).
        """
        self.check_state_dict(state)
        if self._rng is not None:
            self._rng.bit_generator.state = state["rng_state"]
        self.epoch = int(state["epoch"])
        if state["order"] is None:
            self._order, self._position, self._resume = None, 0, False
        else:
            self._order = np.asarray(state["order"], dtype=np.int64).copy()
            self._position = int(state["position"])
            self._resume = True

    def check_state_dict(self, state):
        """Check, without applying it, that :meth:`load_state_dict` accepts ``state``:
        saved by a loader of this data set size and batch size, with its own seed when
        this one has one, and holding what a DataLoader writes (ints >= 0, a permutation
        of the samples, a position within the epoch, a generator state).

        Raises
        ------
        ValueError
            Naming the field that is wrong.
        """
        self._check_state(state)
        if state["dataset_size"] != self.dataset_size:
            raise ValueError(f"DataLoader.load_state_dict: state saved for "
                             f"{state['dataset_size']} samples, this loader has "
                             f"{self.dataset_size}")
        if state["order"] is not None and state["batch_size"] != self.batch_size:
            raise ValueError(f"DataLoader.load_state_dict: state saved mid-epoch with "
                             f"batch_size {state['batch_size']}, this loader has "
                             f"{self.batch_size}")
        if (state["rng_state"] is None) != (self._rng is None):
            raise ValueError("DataLoader.load_state_dict: the state and this loader "
                             "disagree on having their own seed (seed=None vs an int)")
        self._check_order(state)
        if self._rng is not None:
            probe = type(self._rng.bit_generator)()
            try:
                probe.state = state["rng_state"]
            except (TypeError, ValueError, KeyError):
                raise ValueError("DataLoader.load_state_dict: rng_state is not a state of "
                                 f"a {type(probe).__name__} generator") from None

    def _check_state(self, state):
        """Refuse a state no DataLoader writes (a damaged or tampered checkpoint) with a
        ValueError naming the field, before anything changes."""
        def bad(field, expected, got):
            raise ValueError(f"DataLoader.load_state_dict: {field} must be {expected}, got "
                             f"{reprlib.repr(got)}")
        if not isinstance(state, dict):
            bad("the state", "a dict", state)
        missing = {"epoch", "rng_state", "order", "position", "dataset_size",
                   "batch_size"} - set(state)
        if missing:
            bad("the state", f"a dict with {sorted(missing)}", sorted(map(str, state)))
        for field in ("epoch", "position", "dataset_size", "batch_size"):
            value = state[field]
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                    value, (int, np.integer)) or value < 0:
                bad(field, "an int >= 0", value)

    def _check_order(self, state):
        """The saved order of a mid-epoch state: a permutation of this data set."""
        def bad(field, expected, got):
            raise ValueError(f"DataLoader.load_state_dict: {field} must be {expected}, got "
                             f"{reprlib.repr(got)}")
        order = state["order"]
        if order is None:
            return
        n_batches = len(self)
        if not 0 <= state["position"] <= n_batches:
            bad("position", f"in 0..{n_batches} (batches per epoch)", state["position"])
        if not (isinstance(order, np.ndarray) and order.dtype.kind in "iu"
                and order.shape == (self.dataset_size,)):
            bad("order", f"an int array of shape ({self.dataset_size},)",
                getattr(order, "shape", order))
        if not np.array_equal(np.sort(order), np.arange(self.dataset_size)):
            bad("order", f"a permutation of 0..{self.dataset_size - 1}", order)

    def __repr__(self):
        shard = f", rank={self.rank}, world_size={self.world_size}" \
            if self.world_size > 1 else ""
        return (f"DataLoader(dataset_size={self.dataset_size}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, "
                f"transform={self.transform!r}{shard})")


# =====================================================================================
# Transforms: (N, C, H, W) float -> (N, C, H', W') of the same dtype
# =====================================================================================
def _check_batch(x, owner, ndim=4):
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"{owner}: expects a float batch, got dtype {x.dtype} (convert "
                         f"images to float first, e.g. scaled to [0, 1])")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{owner}: expects a batch of images (N, C, H, W), got shape "
                         f"{tuple(x.shape)}")
    return x


class Compose:
    """Apply transforms one after the other: ``Compose([RandomShift(2), norm])(x)``.

    Parameters
    ----------
    transforms : sequence of callables
        Each maps a batch (N, C, H, W) to a batch.
    """

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ValueError(f"Compose: {t!r} is not callable")

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self):
        return f"Compose({self.transforms!r})"


class Normalize:
    """Per-channel standardisation: ``(x - mean[c]) / std[c]``.

    Parameters
    ----------
    mean, std : float or sequence of float, length C
        Per-channel statistics (a single value applies to every channel). Compute them
        on the training set with :meth:`fit`, then use the same object for the test set.

    Notes
    -----
    Input (N, C, ...) float; output the same shape and dtype. A batch of shape (N, C)
    (flattened features) works too; a single-channel Normalize applies to any shape.
    """

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64)).copy()
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64)).copy()
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(f"Normalize: mean and std must be two sequences of the same "
                             f"length, got shapes {self.mean.shape} and {self.std.shape}")
        if np.any(self.std <= 0) or not np.all(np.isfinite(self.std)):
            raise ValueError(f"Normalize: std must be positive and finite, got {self.std}")

    @classmethod
    def fit(cls, X, eps=1e-8):
        """Per-channel mean and standard deviation of a training set.

        Parameters
        ----------
        X : ndarray, shape (N, C, H, W) (or (N, C))
            Training inputs. Read in chunks in float64: no full-size temporary.
        eps : float
            A channel whose std is below ``eps`` (constant) gets std 1.

        Returns
        -------
        Normalize
            With ``mean`` and ``std`` of shape (C,).
        """
        X = _check_batch(X, "Normalize.fit", ndim=None)
        if X.ndim < 2 or len(X) == 0:
            raise ValueError(f"Normalize.fit: expects (N, C, ...) with N >= 1, got shape "
                             f"{tuple(X.shape)}")
        axes = (0,) + tuple(range(2, X.ndim))
        per_channel = X.size // X.shape[1]
        chunk = max(1, (1 << 22) // max(1, X[0].size))  # about 32 MB of float64 per step
        total = np.zeros(X.shape[1])
        for start in range(0, len(X), chunk):
            total += X[start:start + chunk].astype(np.float64).sum(axis=axes)
        mean = total / per_channel
        squares = np.zeros(X.shape[1])
        shape = (1, -1) + (1,) * (X.ndim - 2)
        for start in range(0, len(X), chunk):
            centred = X[start:start + chunk].astype(np.float64) - mean.reshape(shape)
            squares += np.square(centred).sum(axis=axes)
        std = np.sqrt(squares / per_channel)
        std[std < eps] = 1.0
        return cls(mean, std)

    def _broadcast(self, values, x):
        channels = len(values)
        if channels == 1:
            return values.astype(x.dtype)
        if x.ndim < 2 or x.shape[1] != channels:
            raise ValueError(f"Normalize: statistics for {channels} channels, got a batch "
                             f"of shape {tuple(x.shape)} (expected (N, {channels}, ...))")
        return values.astype(x.dtype).reshape((1, channels) + (1,) * (x.ndim - 2))

    def __call__(self, x):
        x = _check_batch(x, "Normalize", ndim=None)
        return (x - self._broadcast(self.mean, x)) / self._broadcast(self.std, x)

    def inverse(self, x):
        """Undo the normalisation (for display): ``x * std[c] + mean[c]``."""
        x = _check_batch(x, "Normalize.inverse", ndim=None)
        return x * self._broadcast(self.std, x) + self._broadcast(self.mean, x)

    def __repr__(self):
        return (f"Normalize(mean={np.round(self.mean, 4).tolist()}, "
                f"std={np.round(self.std, 4).tolist()})")


def _pair(value, name, owner):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                              or v < 0 for v in value):
        raise ValueError(f"{owner}: {name} must be a non-negative int or a pair of them, "
                         f"got {value!r}")
    return int(value[0]), int(value[1])


def _random_crop(x, height, width, padding, owner):
    """Crop a random (height, width) window from each zero-padded image of x.

    x: (N, C, H, W) -> (N, C, height, width); every sample gets its own offset. One
    gather over the whole batch (no Python loop over samples or pixels).
    """
    n, c, h, w = x.shape
    pad_h, pad_w = padding
    if pad_h or pad_w:
        padded = np.zeros((n, c, h + 2 * pad_h, w + 2 * pad_w), dtype=x.dtype)
        padded[:, :, pad_h:pad_h + h, pad_w:pad_w + w] = x
    else:
        padded = x
    room_h = padded.shape[2] - height
    room_w = padded.shape[3] - width
    if room_h < 0 or room_w < 0:
        raise ValueError(f"{owner}: cannot crop {height}x{width} from images of "
                         f"{h}x{w} padded by {padding}")
    rng = _config.get_rng()
    top = rng.integers(0, room_h + 1, size=n)
    left = rng.integers(0, room_w + 1, size=n)
    rows = (top[:, None] + np.arange(height))[:, None, :, None]   # (N, 1, height, 1)
    cols = (left[:, None] + np.arange(width))[:, None, None, :]   # (N, 1, 1, width)
    samples = np.arange(n)[:, None, None, None]
    channels = np.arange(c)[None, :, None, None]
    return padded[samples, channels, rows, cols]


class RandomCrop:
    """Random crop of each image after zero padding (as in ``torchvision``).

    Parameters
    ----------
    size : int or (int, int)
        Output height and width.
    padding : int or (int, int)
        Zeros added on each side (top/bottom, left/right) before cropping.

    Notes
    -----
    Input (N, C, H, W) float; output (N, C, size_h, size_w), same dtype. Each image gets
    its own offset, drawn from airi's shared generator. ``RandomCrop(32, padding=4)`` is
    the classic CIFAR-10 augmentation.
    """

    def __init__(self, size, padding=0):
        self.size = _pair(size, "size", "RandomCrop")
        self.padding = _pair(padding, "padding", "RandomCrop")
        if min(self.size) < 1:
            raise ValueError(f"RandomCrop: size must be positive, got {size!r}")

    def __call__(self, x):
        x = _check_batch(x, "RandomCrop")
        return _random_crop(x, *self.size, self.padding, "RandomCrop")

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomShift:
    """Shift each image by a random whole number of pixels, filling with zeros.

    Parameters
    ----------
    max_shift : int or (int, int)
        Largest shift, vertical and horizontal; each image moves by (dy, dx) drawn
        uniformly from ``[-max_shift, max_shift]``.

    Notes
    -----
    Input (N, C, H, W) float; output the same shape and dtype. Equivalent to
    ``RandomCrop((H, W), padding=max_shift)``; suits digits (a shift of 2 on MNIST).
    """

    def __init__(self, max_shift=2):
        self.max_shift = _pair(max_shift, "max_shift", "RandomShift")

    def __call__(self, x):
        x = _check_batch(x, "RandomShift")
        return _random_crop(x, x.shape[2], x.shape[3], self.max_shift, "RandomShift")

    def __repr__(self):
        return f"RandomShift(max_shift={self.max_shift})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``.

    Parameters
    ----------
    p : float
        Probability of flipping each image, in [0, 1].

    Notes
    -----
    Input (N, C, H, W) float; output the same shape and dtype. For natural images
    (CIFAR-10); not for digits, whose mirror image is another symbol.
    """

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must lie in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, x):
        x = _check_batch(x, "RandomHorizontalFlip")
        flip = _config.get_rng().random(len(x)) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"
