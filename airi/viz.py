"""Pictures of training: curves, learned filters, activations and class probabilities.

People would rather look at filters and curves than read numbers. Every function here
draws one picture, writes it as a PNG file and returns the file's path. The pixel size
of each picture is fixed by its inputs (documented per function), so pictures from
different runs line up.

matplotlib is optional (the ``plot`` extra): it is imported only when a function is
called, never when ``airi`` or ``airi.viz`` is imported, and it always renders headless
with the Agg canvas (no display, no global pyplot state is touched). Without it each
function raises an ImportError that says how to install it::

    pip install 'airi[plot]'

Examples
--------
>>> history = trainer.fit(train, epochs=5, val=(X_test, y_test))   # doctest: +SKIP
>>> airi.viz.plot_history(history, "runs/demo/curves.png")            # doctest: +SKIP
>>> airi.viz.plot_filters(model[0], "runs/demo/filters.png")          # doctest: +SKIP
"""
import math
import os

import numpy as np

__all__ = [
    "plot_history", "plot_filters", "plot_feature_maps", "plot_class_probabilities",
    "plot_loss_curves", "plot_line_fit", "plot_confusion_matrix", "check_matplotlib",
    "filter_grid_size",
]

# Pictures are laid out in pixels; this dpi turns them into matplotlib's inches and
# font points (a 10 pt label is about 14 px tall).
DPI = 100

_INSTALL_HINT = "install the plot extra: pip install 'airi[plot]'"


# --------------------------------------------------------------------------- plumbing
def check_matplotlib():
    """Raise an ImportError saying how to install matplotlib if it is missing.

    Scripts call it before a long run whose pictures would otherwise fail at the end.
    """
    _matplotlib_classes()


def _matplotlib_classes():
    try:
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:
        raise ImportError(f"airi.viz needs matplotlib, which is not installed: "
                          f"{_INSTALL_HINT}") from exc
    return Figure, FigureCanvasAgg


def _new_figure(width_px, height_px):
    """A matplotlib Figure of exactly ``width_px`` x ``height_px`` pixels, on an Agg
    canvas (headless, independent of pyplot and of the user's backend)."""
    Figure, FigureCanvasAgg = _matplotlib_classes()
    # Agg truncates width*dpi to an integer; the half pixel keeps rounding errors of
    # the division from losing a pixel.
    fig = Figure(figsize=((width_px + 0.5) / DPI, (height_px + 0.5) / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Render ``fig`` to the PNG file ``path`` (its folder is created) and return the
    path as a string. ``print_png`` renders at the figure's own dpi and size, ignoring
    rcParams such as ``savefig.bbox = tight`` that would change the pixel size."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.canvas.print_png(path)
    return path


def _as_array(x):
    """``x`` as an ndarray (a Parameter gives its data)."""
    data = getattr(x, "data", x)
    return np.asarray(data)


def _to_image(image, what="image"):
    """An array ready for ``imshow``: (H, W) grey or (H, W, 3) colour, float.

    Accepts (H, W), (1, H, W), (3, H, W) (NCHW without the batch), (H, W, 3), a batch
    of one of those, or a flat vector of a square grey image (784 -> 28 x 28).
    """
    img = np.asarray(_as_array(image), dtype=np.float64)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 2 and img.shape[0] == 1 and img.shape[1] > 1:
        img = img[0]
    if img.ndim == 1:
        side = math.isqrt(img.size)
        if side * side != img.size:
            raise ValueError(f"airi.viz: a flat {what} must hold a square grey image "
                             f"(e.g. 784 = 28 x 28), got {img.size} values")
        return img.reshape(side, side)
    if img.ndim == 3:
        if img.shape[0] == 1:
            return img[0]
        if img.shape[0] == 3:
            return np.transpose(img, (1, 2, 0))
        if img.shape[2] in (1, 3):
            return img[:, :, 0] if img.shape[2] == 1 else img
    if img.ndim == 2:
        return img
    raise ValueError(f"airi.viz: cannot show a {what} of shape {np.shape(image)}; expected "
                     "(H, W), (1, H, W), (3, H, W), (H, W, 3) or a flat square image")


def _rescale01(a):
    """Stretch ``a`` to [0, 1] (a constant array becomes 0.5) so colour images show."""
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-12:
        return np.full_like(a, 0.5)
    return (a - lo) / (hi - lo)


# --------------------------------------------------------------------------- history
_HISTORY_KEYS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


def _history_columns(history):
    """The history as a dict of per-epoch lists.

    Accepts what ``Trainer.fit`` returns (a list of per-epoch dicts), a dict of lists,
    or an object with a ``history`` attribute holding either (the ``Trainer`` itself, a
    Keras ``History``). Missing values (no validation set) become NaN.
    """
    inner = getattr(history, "history", None)
    if inner is not None and not callable(inner):
        history = inner
    if isinstance(history, dict):
        columns = {k: list(v) for k, v in history.items()
                   if isinstance(v, (list, tuple, np.ndarray))}
    else:
        rows = list(history)
        if rows and not all(isinstance(r, dict) for r in rows):
            raise ValueError("plot_history: expected a list of per-epoch dicts or a dict "
                             f"of lists, got a sequence of {type(rows[0]).__name__}")
        keys = {k for r in rows for k in r}
        columns = {k: [r.get(k) for r in rows] for k in keys}
    if not any(k in columns for k in _HISTORY_KEYS):
        raise ValueError("plot_history: the history has none of "
                         f"{', '.join(_HISTORY_KEYS)}; got keys {sorted(columns)}")

    def as_floats(values):
        return np.array([np.nan if v is None else float(v) for v in values])

    return {k: as_floats(columns[k]) for k in _HISTORY_KEYS if k in columns}


def plot_history(history, path, title=None, best_epoch=None):
    """Loss and accuracy per epoch, for the training and the validation data.

    Parameters
    ----------
    history : list of dict, dict of lists, or Trainer
        What ``Trainer.fit`` returns (or the Trainer, whose ``history`` it is): per epoch
        ``train_loss``, ``train_accuracy`` and, when a validation set was given,
        ``val_loss`` and ``val_accuracy`` (accuracies as fractions in [0, 1]). Missing
        entries are skipped.
    path : str or os.PathLike
        Where to write the PNG (its folder is created).
    title : str, optional
        A title over both panels, e.g. the model and the data set ("lenet on
        mnist-subset").
    best_epoch : int, optional
        The epoch whose model was kept (1-based, e.g. ``ModelCheckpoint.best_epoch``):
        a dotted vertical line and a ring on the validation (else training) curves
        mark it, and the legend names it.

    Returns
    -------
    str
        ``path``. The picture is 1000 x 400 pixels: loss on the left, accuracy on the
        right, epochs counted from 1.
    """
    cols = _history_columns(history)
    n = max(len(v) for v in cols.values())
    epochs = np.arange(1, n + 1)
    fig = _new_figure(1000, 400)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        for split, style in (("train", "o-"), ("val", "s--")):
            values = cols.get(f"{split}_{metric}")
            if values is None or np.all(np.isnan(values)):
                continue
            ax.plot(epochs[:len(values)], values, style, markersize=4,
                    label="train" if split == "train" else "validation")
        if best_epoch is not None and 1 <= int(best_epoch) <= n:
            _mark_kept_epoch(ax, cols, metric, int(best_epoch))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend()
        if n <= 20:
            ax.set_xticks(epochs)
    ax_loss.set_title("loss per epoch")
    ax_acc.set_title("accuracy per epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _mark_kept_epoch(ax, cols, metric, epoch):
    """A dotted line at the kept epoch and a ring on its value (validation curve if
    there is one, else training)."""
    ax.axvline(epoch, color="tab:green", linestyle=":", linewidth=1.5,
               label=f"kept: epoch {epoch}")
    for split in ("val", "train"):
        values = cols.get(f"{split}_{metric}")
        if values is not None and epoch <= len(values) and np.isfinite(values[epoch - 1]):
            ax.plot([epoch], [values[epoch - 1]], "o", markersize=11, markerfacecolor="none",
                    markeredgecolor="tab:green", markeredgewidth=2)
            break


def plot_loss_curves(curves, path, title="training loss", xlabel="step", smooth=1,
                     log_scale=False):
    """Several loss curves on one set of axes, e.g. one per optimizer.

    Parameters
    ----------
    curves : dict of str -> sequence of float
        Curve label -> loss values (one per step or per epoch).
    path : str or os.PathLike
        Where to write the PNG.
    title, xlabel : str
        Axis title and x label.
    smooth : int
        Width of a moving average applied to each curve (1: raw values), which makes
        noisy per-batch losses readable.
    log_scale : bool
        A logarithmic loss axis, for losses that fall by orders of magnitude (a linear
        axis shows them flat after the first steps).

    Returns
    -------
    str
        ``path``. The picture is 800 x 500 pixels.
    """
    if not curves:
        raise ValueError("plot_loss_curves: no curves given")
    smooth = max(1, int(smooth))
    fig = _new_figure(800, 500)
    ax = fig.subplots()
    for label, values in curves.items():
        values = np.asarray(values, dtype=np.float64).ravel()
        if smooth > 1 and values.size >= smooth:
            values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
            steps = np.arange(smooth, smooth + values.size)
        else:
            steps = np.arange(1, values.size + 1)
        ax.plot(steps, values, label=str(label))
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss" + (f" (moving average of {smooth})" if smooth > 1 else "")
                  + (" (log scale)" if log_scale else ""))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_line_fit(x, y, fits, path, title=None, xlabel="x", ylabel="y"):
    """Data points and fitted straight lines over them (a regression's result).

    Parameters
    ----------
    x, y : array_like, shape (N,)
        The data.
    fits : dict of str -> (intercept, slope)
        Line label -> its two coefficients; each is drawn over the range of ``x``.
    path : str or os.PathLike
        Where to write the PNG.
    title, xlabel, ylabel : str, optional

    Returns
    -------
    str
        ``path``. The picture is 800 x 500 pixels.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size or x.size == 0:
        raise ValueError(f"plot_line_fit: x and y must hold the same number of points, "
                         f"got {x.size} and {y.size}")
    fig = _new_figure(800, 500)
    ax = fig.subplots()
    ax.scatter(x, y, s=12, alpha=0.6, color="tab:gray", label=f"data ({x.size} points)")
    line_x = np.array([x.min(), x.max()])
    styles = ["-", "--", ":", "-."]
    for k, (label, (intercept, slope)) in enumerate(fits.items()):
        ax.plot(line_x, intercept + slope * line_x, styles[k % len(styles)], linewidth=2,
                label=f"{label}: y = {float(intercept):.3f} + {float(slope):.3f} x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- filters
FILTER_CELL_PX = 100   # width of one kernel's picture
FILTER_LABEL_PX = 16   # under each kernel: its title
FILTER_COLUMNS = 8     # kernels per row
TITLE_PX = 30          # band above a grid for its title
COLORBAR_PX = 80       # band right of a grid for its colour bar


def _filter_images(weights, channel):
    """One image per filter from conv weights (F, C, kh, kw): (kh, kw, 3) RGB when C is
    3 (and no channel is chosen), else grey (kh, kw) of ``channel`` or of the mean over
    the input channels."""
    if weights.ndim != 4:
        raise ValueError("plot_filters: expected conv weights of shape (F, C, kh, kw), "
                         f"got shape {weights.shape}")
    n_channels = weights.shape[1]
    if channel is not None:
        if not 0 <= channel < n_channels:
            raise ValueError(f"plot_filters: channel {channel} out of range for "
                             f"{n_channels} input channels")
        return [w[channel] for w in weights], "grey"
    if n_channels == 3:
        return [np.transpose(w, (1, 2, 0)) for w in weights], "rgb"
    return [w.mean(axis=0) for w in weights], "grey"


_FILTERS_EXPECTED = ("a Conv2D layer, a Sequential containing one, or conv weights of "
                     "shape (F, C, kh, kw)")


def _first_conv(layers):
    """The first Conv2D in a list of layers, looking inside nested Sequentials."""
    from .layers import Conv2D
    for layer in layers:
        if isinstance(layer, Conv2D):
            return layer
        inner = getattr(layer, "layers", None)
        if isinstance(inner, list):
            found = _first_conv(inner)
            if found is not None:
                return found
    return None


def _conv_weights(conv_layer):
    """The float64 (F, C, kh, kw) weights ``plot_filters`` draws, from a Conv2D, a
    model holding one, a Parameter or an array; ValueError for anything else."""
    from .parameter import Parameter
    given = type(conv_layer).__name__
    layers = getattr(conv_layer, "layers", None)
    if layers is None and isinstance(conv_layer, (list, tuple)) and conv_layer \
            and all(callable(getattr(item, "forward", None)) for item in conv_layer):
        layers = conv_layer                      # a plain list of layers (seed 001)
    if isinstance(layers, (list, tuple)):
        conv_layer = _first_conv(layers)
        if conv_layer is None:
            names = ", ".join(type(layer).__name__ for layer in layers) or "no layers"
            raise ValueError(f"plot_filters: expected {_FILTERS_EXPECTED}; got a {given} "
                             f"without a Conv2D layer ({names})")
    weights = conv_layer
    if not isinstance(conv_layer, (np.ndarray, Parameter, list, tuple)):
        params = getattr(conv_layer, "params", None)
        weights = params.get("W") if isinstance(params, dict) else None
        if weights is None:
            weights = getattr(conv_layer, "W", None)
        if weights is None:
            raise ValueError(f"plot_filters: expected {_FILTERS_EXPECTED}, got {given}")
    try:
        weights = np.asarray(_as_array(weights), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"plot_filters: expected {_FILTERS_EXPECTED}, got {given} that "
                         "is not a numeric array") from None
    if weights.ndim != 4:
        holder = "" if given in ("ndarray", "Parameter", "list", "tuple") else \
            f"a {given} whose weights have "
        raise ValueError(f"plot_filters: expected {_FILTERS_EXPECTED}, got {holder}shape "
                         f"{weights.shape}")
    return weights


def filter_grid_size(num_filters):
    """(columns, rows) of the grid ``plot_filters`` draws for ``num_filters`` kernels."""
    cols = max(1, min(int(num_filters), FILTER_COLUMNS))
    rows = max(1, math.ceil(int(num_filters) / cols))
    return cols, rows


def filter_picture_size(num_filters):
    """(width, height) in pixels of the picture ``plot_filters`` draws."""
    cols, rows = filter_grid_size(num_filters)
    return (cols * FILTER_CELL_PX + COLORBAR_PX,
            TITLE_PX + rows * (FILTER_CELL_PX + FILTER_LABEL_PX))


def plot_filters(conv_layer, path, channel=None, title=None):
    """The learned kernels of a convolution as a grid of small images, on one shared,
    symmetric colour scale with a colour bar.

    Parameters
    ----------
    conv_layer : Conv2D, Sequential, Parameter or ndarray
        A convolution layer (weight ``W`` of shape (F, C, kh, kw)), that Parameter, or
        the array itself. A Sequential (or a list of layers, as in seed 001) shows its
        first Conv2D layer.
    path : str or os.PathLike
        Where to write the PNG.
    channel : int, optional
        Show this input channel of every kernel. By default kernels with 3 input
        channels (a first layer on colour images) are shown in colour, each channel of
        a weight w as ``0.5 + w / (2 m)`` (m the largest |weight| of the layer: 0 is
        mid grey, the same for every kernel), and others as the mean over their input
        channels on a blue (negative) - white (0) - red (positive) scale from -m to m.
    title : str, optional
        Defaults to "F learned kernels (C x kh x kw)".

    Raises
    ------
    ValueError
        For a model without a Conv2D layer, or anything that is not a convolution or
        its (F, C, kh, kw) weights (the message says what was given).

    Returns
    -------
    str
        ``path``. The grid has ``min(F, 8)`` columns and ``ceil(F / 8)`` rows of
        cells 100 pixels wide and 116 tall (the kernel, then its title "filter i"),
        under a 30-pixel title band, with an 80-pixel colour bar band on the right: for
        F = 8 the picture is 880 x 146 pixels, for F = 16 it is 880 x 262 (see
        :func:`filter_picture_size`).
    """
    weights = _conv_weights(conv_layer)
    images, mode = _filter_images(weights, channel)
    n_filters = len(images)
    cols, rows = filter_grid_size(n_filters)
    width, height = filter_picture_size(n_filters)
    fig = _new_figure(width, height)
    grid_right = cols * FILTER_CELL_PX / width
    row_px = FILTER_CELL_PX + FILTER_LABEL_PX
    # shared and symmetric: one colour means one weight value in every kernel
    limit = max(float(np.abs(np.stack(images)).max()), 1e-12)
    picture = None
    for i in range(n_filters):
        r, c = divmod(i, cols)
        top = 1 - (TITLE_PX + r * row_px + 2) / height
        ax = fig.add_axes([(c * FILTER_CELL_PX + 3) / width,
                           top - (FILTER_CELL_PX - 6) / height,
                           (FILTER_CELL_PX - 6) / width, (FILTER_CELL_PX - 6) / height])
        ax.set_axis_off()
        if mode == "rgb":
            ax.imshow(np.clip(0.5 + images[i] / (2 * limit), 0, 1),
                      interpolation="nearest")
        else:
            picture = ax.imshow(images[i], cmap="RdBu_r", vmin=-limit, vmax=limit,
                                interpolation="nearest")
        fig.text((c + 0.5) * FILTER_CELL_PX / width,
                 1 - (TITLE_PX + r * row_px + FILTER_CELL_PX + FILTER_LABEL_PX / 2) / height,
                 f"filter {i}", ha="center", va="center", fontsize=8)
    _colorbar(fig, picture, limit, mode, left=grid_right, width=width, height=height)
    f, c, kh, kw = weights.shape
    shown = {"rgb": "RGB view", "grey": (f"channel {channel}" if channel is not None
                                         else "mean over input channels" if c > 1
                                         else "")}[mode]
    default = f"{f} learned kernels ({c} x {kh} x {kw})" + (f", {shown}" if shown else "")
    fig.suptitle(title or default, x=grid_right / 2,
                 y=1 - 0.5 * TITLE_PX / height, va="center", fontsize=10)
    return _save(fig, path)


def _colorbar(fig, picture, limit, mode, left, width, height):
    """The colour bar of a filter grid, in the band right of ``left`` (a fraction)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize as ColorNormalize
    bar_top = 1 - (TITLE_PX + 4) / height
    bar_height = max(bar_top - 8 / height, 0.2)
    cax = fig.add_axes([left + 12 / width, bar_top - bar_height, 14 / width, bar_height])
    if picture is None:      # RGB: each channel's brightness on the same grey ramp
        picture = ScalarMappable(norm=ColorNormalize(-limit, limit), cmap="gray")
    bar = fig.colorbar(picture, cax=cax)
    bar.set_ticks([-limit, 0.0, limit])
    bar.set_ticklabels([f"{-limit:.2g}", "0", f"{limit:.2g}"])
    bar.ax.tick_params(labelsize=7)
    bar.set_label("weight per channel" if mode == "rgb" else "weight", fontsize=8)


# ---------------------------------------------------------------------- feature maps
MAP_CELL_PX = 100     # side of one activation map's picture
LABEL_PX = 160        # column on the left naming each layer


def _layer_list(model):
    """The layers of a Sequential (or of a plain list of layers, as in seed 001)."""
    layers = getattr(model, "layers", None)
    if layers is None:
        layers = model
    try:
        return list(layers)
    except TypeError:
        raise ValueError("plot_feature_maps: model must be a Sequential or a list of "
                         f"layers, got {type(model).__name__}") from None


def _chosen_indices(layers, chosen, outputs_4d):
    """Indices of the layers to show: ``chosen`` holds indices or layer objects; None
    means every layer whose output is an image stack (N, C, H, W)."""
    if chosen is None:
        return [i for i in range(len(layers)) if outputs_4d(i)]
    if isinstance(chosen, (int, np.integer)) or not isinstance(chosen, (list, tuple)):
        chosen = [chosen]
    indices = []
    for item in chosen:
        if isinstance(item, (int, np.integer)):
            i = int(item)
            if not -len(layers) <= i < len(layers):
                raise ValueError(f"plot_feature_maps: layer index {i} out of range for "
                                 f"a model of {len(layers)} layers")
            indices.append(i % len(layers))
        else:
            matches = [i for i, layer in enumerate(layers) if layer is item]
            if not matches:
                raise ValueError(f"plot_feature_maps: {item!r} is not a layer of the model")
            indices.append(matches[0])
    return sorted(set(indices))


def plot_feature_maps(model, x, path, layers=None, max_maps=8, title=None):
    """The input image, then the activations of chosen layers for it, one row of maps
    per layer; the maps of a row share one colour scale, shown by a colour bar.

    Seed 003's activation picture: feed one image through the network and look at what
    each convolution kept of it. The model runs in evaluation mode
    (``forward(x, training=False)``) up to the last chosen layer; nothing is trained and
    no gradient is stored.

    Parameters
    ----------
    model : Sequential or list of layers
    x : ndarray, shape (C, H, W) or (1, C, H, W)
        One input image (a batch of one).
    path : str or os.PathLike
        Where to write the PNG.
    layers : int, layer, or list of those, optional
        The layers whose outputs to show (indices into the model or the layer objects).
        By default every layer whose output is an image stack (N, C, H, W).
    max_maps : int
        Maps (channels) shown per layer: the first ``max_maps`` (8, as in the seed).
    title : str, optional

    Returns
    -------
    str
        ``path``. The picture is ``160 + 100 * max_maps + 80`` pixels wide (a label
        column, one 100-pixel cell per map, a colour bar band) and ``30 + 100 * (rows
        + 1)`` tall: the input's row, then one row per chosen layer; 1040 x 430 for
        three layers with the defaults.
    """
    layer_list = _layer_list(model)
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError("plot_feature_maps: x must be one image, shape (C, H, W) or "
                         f"(1, C, H, W), got {np.shape(x)}")
    max_maps = max(1, int(max_maps))

    # One forward pass, keeping every output (cheap for a single image); with chosen
    # layers it stops after the last of them.
    chosen = None if layers is None else _chosen_indices(layer_list, layers, None)
    stop = len(layer_list) if chosen is None else max(chosen, default=-1) + 1
    outputs = []
    out = x.copy()
    for layer in layer_list[:stop]:
        out = layer.forward(out, training=False)
        outputs.append(np.asarray(out))
    if chosen is None:
        chosen = _chosen_indices(layer_list, None, lambda i: outputs[i].ndim == 4)
    if not chosen:
        raise ValueError("plot_feature_maps: no layer of the model outputs an image "
                         "stack (N, C, H, W); choose layers explicitly")

    rows = len(chosen) + 1                    # the input first
    width = LABEL_PX + MAP_CELL_PX * max_maps + COLORBAR_PX
    height = TITLE_PX + MAP_CELL_PX * rows
    fig = _new_figure(width, height)
    grid = fig.add_gridspec(rows, max_maps, left=LABEL_PX / width,
                            right=1 - COLORBAR_PX / width, bottom=0.005,
                            top=1 - TITLE_PX / height, wspace=0.06, hspace=0.12)

    def label(r, text):
        fig.text(LABEL_PX / width - 0.01, 1 - (TITLE_PX + MAP_CELL_PX * (r + 0.5)) / height,
                 text, ha="right", va="center", fontsize=9)

    def colour_bar(r, picture):
        top = 1 - (TITLE_PX + MAP_CELL_PX * r + 8) / height
        cax = fig.add_axes([1 - (COLORBAR_PX - 10) / width, top - (MAP_CELL_PX - 16) / height,
                            10 / width, (MAP_CELL_PX - 16) / height])
        bar = fig.colorbar(picture, cax=cax)
        bar.ax.tick_params(labelsize=7)
        bar.ax.yaxis.set_major_locator(_max_n_locator(3))

    image = x[0]
    label(0, "input\n" + " x ".join(str(s) for s in image.shape))
    ax = fig.add_subplot(grid[0, 0])
    ax.set_axis_off()
    if image.shape[0] == 3:               # colour: as the eye sees it
        ax.imshow(_rescale01(np.transpose(image, (1, 2, 0)).astype(np.float64)),
                  interpolation="nearest")
    else:
        colour_bar(0, ax.imshow(image[0].astype(np.float64), cmap="gray",
                                interpolation="nearest"))
    for r, i in enumerate(chosen, start=1):
        act = outputs[i][0]
        if act.ndim == 1:               # a dense layer: show its vector as a strip
            act = act[None, None, :]
        elif act.ndim == 2:
            act = act[None]
        shape = " x ".join(str(s) for s in act.shape)
        label(r, f"{i}: {type(layer_list[i]).__name__}\n{shape}")
        shown = act[:max_maps].astype(np.float64)
        lo, hi = float(shown.min()), float(shown.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        picture = None
        for m in range(max_maps):
            ax = fig.add_subplot(grid[r, m])
            ax.set_axis_off()
            if m < act.shape[0]:
                aspect = "auto" if act.shape[1] == 1 else None   # stretch 1-row strips
                picture = ax.imshow(shown[m], cmap="viridis", vmin=lo, vmax=hi,
                                    interpolation="nearest", aspect=aspect)
        colour_bar(r, picture)
    fig.suptitle(title or "activations for one input",
                 y=1 - 0.5 * TITLE_PX / height, va="center", fontsize=10)
    return _save(fig, path)


def _max_n_locator(n):
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(n)


# ----------------------------------------------------------------- class probability
def plot_class_probabilities(image, probs, path, labels=None, title=None):
    """One image beside a bar chart of its predicted class probabilities.

    Seed 004's ``view_classify``: after training, look at one digit and at how sure the
    network is of each class.

    Parameters
    ----------
    image : ndarray
        The input: a flat grey square image (784,), (28, 28), (1, 28, 28), a colour
        image (3, H, W) or (H, W, 3), or a batch of one of those.
    probs : ndarray, shape (K,) or (1, K)
        Class probabilities (e.g. ``np.exp`` of a LogSoftmax output, or a Softmax
        output); values in [0, 1].
    path : str or os.PathLike
        Where to write the PNG.
    labels : sequence of str, optional
        Names of the K classes (default 0 .. K-1).
    title : str, optional
        Over the image; defaults to the most probable class and its probability.

    Returns
    -------
    str
        ``path``. The picture is 900 x 450 pixels: the image on the left, one
        horizontal bar per class on the right.
    """
    img = _to_image(image)
    p = np.asarray(_as_array(probs), dtype=np.float64)
    if p.ndim == 2 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 1 or p.size == 0:
        raise ValueError("plot_class_probabilities: probs must have shape (K,) or (1, K), "
                         f"got {np.shape(probs)}")
    if not np.all(np.isfinite(p)) or p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError("plot_class_probabilities: probs must be probabilities in [0, 1] "
                         "(use np.exp on log-probabilities, softmax on logits)")
    k = p.size
    names = [str(i) for i in range(k)] if labels is None else [str(s) for s in labels]
    if len(names) != k:
        raise ValueError(f"plot_class_probabilities: {len(names)} labels for {k} classes")

    fig = _new_figure(900, 450)
    ax_img, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.2]})
    if img.ndim == 3:
        ax_img.imshow(_rescale01(img), interpolation="nearest")
    else:
        ax_img.imshow(img, cmap="gray", interpolation="nearest")
    ax_img.set_axis_off()
    best = int(np.argmax(p))
    ax_img.set_title(title or f"prediction: {names[best]} ({p[best]:.0%})")
    positions = np.arange(k)
    colours = ["tab:orange" if i == best else "tab:blue" for i in range(k)]
    ax_bar.barh(positions, p, color=colours)
    ax_bar.set_yticks(positions)
    ax_bar.set_yticklabels(names)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1.1)
    ax_bar.set_title("class probability")
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------ confusion matrix
def plot_confusion_matrix(cm, path, class_names=None, title=None):
    """A confusion matrix as a heat map, each cell labelled with its count.

    Parameters
    ----------
    cm : array_like (K, K)
        Counts, rows = true class, columns = predicted class (as returned by
        :func:`airi.metrics.confusion_matrix`).
    path : str or os.PathLike
        Where to write the PNG.
    class_names : sequence of str, optional
        Names of the K classes (default 0 .. K-1).
    title : str, optional
        Defaults to the accuracy (trace / total).

    Returns
    -------
    str
        ``path``. The picture is 600 x 560 pixels for up to 10 classes and grows by
        40 pixels per class beyond that. Cell colours are the row fractions (the recall
        of each true class), so rare classes are as visible as common ones.
    """
    counts = np.asarray(_as_array(cm))
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"plot_confusion_matrix: cm must be a square (K, K) matrix, got "
                         f"shape {counts.shape}")
    if counts.dtype.kind not in "iuf" or not np.all(np.isfinite(counts)) \
            or counts.min() < 0:
        raise ValueError("plot_confusion_matrix: cm must hold counts >= 0")
    k = counts.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else \
        [str(s) for s in class_names]
    if len(names) != k:
        raise ValueError(f"plot_confusion_matrix: {len(names)} class names for {k} "
                         "classes")
    rows = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    extra = 40 * max(0, k - 10)
    fig = _new_figure(600 + extra, 560 + extra)
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ticks = np.arange(k)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(names, rotation=45 if max(map(len, names)) > 3 else 0)
    ax.set_yticklabels(names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                value = counts[i, j]
                text = f"{value:g}" if counts.dtype.kind == "f" else str(int(value))
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if fractions[i, j] > 0.5 else "black")
    total = counts.sum()
    accuracy = float(np.trace(counts) / total) if total else 0.0
    ax.set_title(title or f"confusion matrix (accuracy {accuracy:.1%})")
    fig.tight_layout()
    return _save(fig, path)
