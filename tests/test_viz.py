"""airi.viz: each picture is a real PNG of the documented pixel size, drawn headless.

The pixel size is read from the PNG header (IHDR width and height) with ``struct``: no
image library is needed for that. Tests that draw are skipped when matplotlib (the
``plot`` extra) is missing; the import-time and error-message tests always run.
"""
import struct
import subprocess
import sys

import numpy as np
import pytest

import airi
from airi import Sequential, viz
from airi.layers import AvgPool2D, Conv2D, Flatten, Linear, MaxPool2D, Relu

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def png_size(path):
    """(width, height) from a PNG file's IHDR chunk; fails if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def assert_picture(path, returned, size):
    """A PNG of ``size`` (width, height) that is not a blank canvas."""
    assert returned == str(path)
    assert path.stat().st_size > 1000
    assert png_size(path) == size
    import matplotlib.image
    pixels = matplotlib.image.imread(str(path))
    assert pixels.shape[:2] == (size[1], size[0])
    assert pixels[..., :3].std() > 0.01, "the picture is blank"


def small_convnet():
    airi.seed(0)
    return Sequential([Conv2D(1, 6, 3, pad=1), Relu(), MaxPool2D(2),
                       Conv2D(6, 4, 3, stride=2, pad=1), Relu(), AvgPool2D(2),
                       Flatten(), Linear(4, 10)])  # 8x8 -> 8x8 -> 4x4 -> 2x2 -> 1x1


# ------------------------------------------------------------------ import and errors
def test_importing_airi_does_not_import_matplotlib():
    code = ("import sys, airi, airi.viz; "
            "sys.exit('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, "import airi pulled in matplotlib: " + result.stderr


def test_missing_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    # A None entry in sys.modules makes `import matplotlib.figure` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'airi\[plot\]'"):
        viz.plot_loss_curves({"a": [1.0, 0.5]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------- history
def test_plot_history_of_a_trainer_run(mpl, tmp_path):
    airi.seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = Sequential([Linear(4, 2)])
    trainer = airi.Trainer(model, airi.CrossEntropyLoss(),
                           airi.optim.SGD(model.parameters(), lr=0.1), verbose=False)
    history = trainer.fit((X, y), epochs=3, val=(X, y), batch_size=16)
    path = tmp_path / "run" / "curves.png"          # the folder is created
    assert_picture(path, viz.plot_history(history, path), (1000, 400))
    again = tmp_path / "from_trainer.png"                # the Trainer itself works too
    assert_picture(again, viz.plot_history(trainer, again), (1000, 400))


def test_plot_history_accepts_a_dict_of_lists_without_validation(mpl, tmp_path):
    history = {"train_loss": [2.0, 1.2, 0.8], "train_accuracy": [0.3, 0.6, 0.8],
               "val_loss": [None, None, None]}
    path = tmp_path / "h.png"
    assert_picture(path, viz.plot_history(history, path, title="no val"), (1000, 400))


def test_plot_history_rejects_something_that_is_not_a_history(mpl, tmp_path):
    with pytest.raises(ValueError, match="train_loss"):
        viz.plot_history({"loss": [1, 2]}, tmp_path / "h.png")
    with pytest.raises(ValueError, match="per-epoch dicts"):
        viz.plot_history([1.0, 2.0], tmp_path / "h.png")


# ---------------------------------------------------------------------------- filters
def pixels_of(path):
    import matplotlib.image
    return matplotlib.image.imread(str(path))[..., :3]


@pytest.mark.parametrize("in_channels, filters, kernel, size", [
    (1, 8, 3, (880, 146)),     # seed 000's 8 filters: one row of 8 cells + colour bar
    (3, 16, 5, (880, 262)),    # colour kernels, two rows
    (4, 3, 3, (380, 146)),     # mean over 4 input channels, 3 cells
])
def test_plot_filters_grid_size(mpl, tmp_path, in_channels, filters, kernel, size):
    airi.seed(1)
    conv = Conv2D(in_channels, filters, kernel)
    assert viz.filter_grid_size(filters) == ((size[0] - 80) // 100, (size[1] - 30) // 116)
    assert viz.filter_picture_size(filters) == size
    path = tmp_path / "filters.png"
    assert_picture(path, viz.plot_filters(conv, path), size)


def test_plot_filters_accepts_arrays_and_a_chosen_channel(mpl, tmp_path):
    weights = np.random.default_rng(0).normal(size=(10, 3, 3, 3))
    path = tmp_path / "f.png"
    assert_picture(path, viz.plot_filters(weights, path, channel=2), (880, 262))
    with pytest.raises(ValueError, match="channel 3 out of range"):
        viz.plot_filters(weights, path, channel=3)
    with pytest.raises(ValueError, match=r"\(F, C, kh, kw\)"):
        viz.plot_filters(np.zeros((3, 3)), path)


def test_plot_filters_of_a_model_shows_its_first_conv(mpl, tmp_path):
    model = small_convnet()                        # first Conv2D: 6 kernels of 1x3x3
    path = tmp_path / "model.png"
    assert_picture(path, viz.plot_filters(model, path), (680, 146))
    nested = Sequential(Flatten(), Sequential(Relu(), Conv2D(2, 3, 3)))
    assert_picture(path, viz.plot_filters(nested, path), (380, 146))
    layers = [Conv2D(3, 16, 5), Relu()]           # a seed-001 list of layers
    assert_picture(path, viz.plot_filters(layers, path), (880, 262))


def cell_centre(i, cols=8):
    """(row, column) pixel at the middle of kernel i's picture in plot_filters."""
    r, c = divmod(i, cols)
    return 30 + r * 116 + 2 + 47, c * 100 + 50


def test_plot_filters_share_one_symmetric_scale_with_a_colour_bar(mpl, tmp_path):
    """Kernels +1, +0.5, 0 and -1 (1 x 1 each): a shared scale draws +0.5 paler than
    +1 (a per-kernel stretch would draw them alike), 0 white and -1 the mirror of +1."""
    weights = np.array([1.0, 0.5, 0.0, -1.0]).reshape(4, 1, 1, 1)
    path = tmp_path / "f.png"
    assert_picture(path, viz.plot_filters(weights, path), (480, 146))
    px = pixels_of(path)
    full, half, zero, minus = (px[cell_centre(i, cols=4)] for i in range(4))
    assert full[0] > full[2] + 0.15 and minus[2] > minus[0] + 0.15   # red +, blue -
    assert half.sum() > full.sum() + 0.3                           # paler: shared scale
    assert zero.min() > 0.9                                        # 0 is white
    bar = px[40:130, 400 + 12:400 + 26]                            # the colour bar
    assert bar.std() > 0.1


def test_plot_filters_rgb_view_of_a_three_channel_layer(mpl, tmp_path):
    """A first layer on colour images is shown in colour: 0 is mid grey, and a kernel
    that weighs only red is red."""
    weights = np.zeros((2, 3, 1, 1))
    weights[1, 0] = 1.0                              # kernel 1: +1 on the red channel
    path = tmp_path / "rgb.png"
    viz.plot_filters(weights, path)
    px = pixels_of(path)
    grey, red = px[cell_centre(0, cols=2)], px[cell_centre(1, cols=2)]
    np.testing.assert_allclose(grey, 0.5, atol=0.01)
    assert red[0] > 0.95 and abs(red[1] - 0.5) < 0.01 and abs(red[2] - 0.5) < 0.01


def test_plot_history_marks_the_kept_epoch(mpl, tmp_path):
    history = {"train_loss": [2.0, 1.2, 0.8, 0.7], "val_loss": [1.5, 1.0, 1.1, 1.2],
               "train_accuracy": [0.3, 0.6, 0.8, 0.85], "val_accuracy": [0.4, 0.7, 0.7,
                                                                        0.65]}

    def green_pixels(path):
        px = pixels_of(path)   # tab:green is (44, 160, 44)
        return int((np.abs(px - np.array([44, 160, 44]) / 255).max(axis=2) < 0.08).sum())

    plain, marked = tmp_path / "plain.png", tmp_path / "marked.png"
    viz.plot_history(history, plain, title="lenet on mnist-subset")
    assert_picture(marked, viz.plot_history(history, marked, title="lenet on mnist-subset",
                                            best_epoch=2), (1000, 400))
    assert green_pixels(plain) == 0 and green_pixels(marked) > 200


def test_plot_line_fit_and_log_scale_loss(mpl, tmp_path):
    x = np.linspace(-1, 1, 20)
    path = tmp_path / "fit.png"
    assert_picture(path, viz.plot_line_fit(x, 1 + 2 * x, {"fit": (1.0, 2.0)}, path),
                   (800, 500))
    with pytest.raises(ValueError, match="same number of points"):
        viz.plot_line_fit(x, x[:3], {"fit": (1.0, 2.0)}, path)
    loss = tmp_path / "loss.png"
    assert_picture(loss, viz.plot_loss_curves({"MSE": np.exp(-np.arange(50.0))}, loss,
                                              log_scale=True), (800, 500))


@pytest.mark.parametrize("given, got", [
    (Sequential([Flatten(), Linear(4, 2)]),
     r"; got a Sequential without a Conv2D layer \(Flatten, Linear\)"),
    (Sequential(), r"; got a Sequential without a Conv2D layer \(no layers\)"),
    (Linear(3, 2), r", got a Linear whose weights have shape \(3, 2\)"),
    (len, ", got builtin_function_or_method"),
    ("conv", ", got str"),
    (np.zeros((2, 3, 3)), r", got shape \(2, 3, 3\)"),
])
def test_plot_filters_says_what_it_expected_and_what_it_got(tmp_path, given, got):
    # Raised before matplotlib is needed: runs without the plot extra too.
    expected = (r"plot_filters: expected a Conv2D layer, a Sequential containing one, or "
                r"conv weights of shape \(F, C, kh, kw\)")
    with pytest.raises(ValueError, match=expected + got):
        viz.plot_filters(given, tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()


# ----------------------------------------------------------------------- feature maps
def test_plot_feature_maps_default_layers(mpl, tmp_path):
    model = small_convnet()
    x = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    path = tmp_path / "maps.png"
    # The input, then six layers that output image stacks (2 conv, 2 relu, 2 pools):
    # seven rows of 8 cells, and a colour bar band.
    assert_picture(path, viz.plot_feature_maps(model, x, path),
                   (160 + 800 + 80, 30 + 700))
    px = pixels_of(path)
    input_cell = px[30 + 5:30 + 95, 160 + 5:160 + 95]
    assert input_cell.std() > 0.05                      # the input image is drawn
    bar = px[130 + 10:130 + 90, 960 + 10:960 + 20]      # the first layer's colour bar
    assert bar.std() > 0.05


def test_plot_feature_maps_chosen_layers_of_a_plain_list(mpl, tmp_path):
    model = small_convnet()
    layers = list(model)                       # seed 001's models are plain lists
    x = np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "maps.png"
    weights = [p.data.copy() for p in model.parameters()]
    out = viz.plot_feature_maps(layers, x, path, layers=[layers[1], 4], max_maps=4)
    assert_picture(path, out, (160 + 400 + 80, 30 + 300))
    # Looking changes nothing: same weights, the layers' own mode untouched.
    assert all(np.array_equal(w, p.data) for w, p in zip(weights, model.parameters()))
    assert all(layer.training for layer in layers)


def test_plot_feature_maps_rejects_a_batch_and_unknown_layers(mpl, tmp_path):
    model = small_convnet()
    with pytest.raises(ValueError, match="one image"):
        viz.plot_feature_maps(model, np.zeros((2, 1, 8, 8), np.float32), tmp_path / "m.png")
    with pytest.raises(ValueError, match="out of range"):
        viz.plot_feature_maps(model, np.zeros((1, 8, 8), np.float32), tmp_path / "m.png",
                              layers=[42])
    with pytest.raises(ValueError, match="not a layer of the model"):
        viz.plot_feature_maps(model, np.zeros((1, 8, 8), np.float32), tmp_path / "m.png",
                              layers=[Relu()])


# ------------------------------------------------------------------ class probability
def test_plot_class_probabilities_of_a_digit(mpl, tmp_path):
    image = np.random.default_rng(0).random(784)           # a flat 28 x 28 digit
    logits = np.random.default_rng(1).normal(size=(1, 10))
    probs = np.exp(logits) / np.exp(logits).sum()
    path = tmp_path / "probs.png"
    assert_picture(path, viz.plot_class_probabilities(image, probs, path), (900, 450))


def test_plot_class_probabilities_colour_image_with_labels(mpl, tmp_path):
    image = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    probs = np.full(10, 0.1)
    labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
              "ship", "truck"]
    path = tmp_path / "p.png"
    assert_picture(path, viz.plot_class_probabilities(image, probs, path, labels=labels),
                   (900, 450))


def test_plot_class_probabilities_rejects_bad_input(mpl, tmp_path):
    image = np.zeros((28, 28))
    with pytest.raises(ValueError, match="probabilities in"):
        viz.plot_class_probabilities(image, np.log(np.full(10, 0.1)), tmp_path / "p.png")
    with pytest.raises(ValueError, match="3 labels for 10 classes"):
        viz.plot_class_probabilities(image, np.full(10, 0.1), tmp_path / "p.png",
                                     labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="square"):
        viz.plot_class_probabilities(np.zeros(783), np.full(10, 0.1), tmp_path / "p.png")


# ----------------------------------------------------------------------- loss curves
def test_plot_loss_curves(mpl, tmp_path):
    rng = np.random.default_rng(0)
    curves = {name: np.exp(-np.arange(100) / s) + 0.05 * rng.random(100)
              for name, s in (("SGD", 40), ("Adam", 15))}
    path = tmp_path / "curves.png"
    assert_picture(path, viz.plot_loss_curves(curves, path, smooth=5), (800, 500))
    with pytest.raises(ValueError, match="no curves"):
        viz.plot_loss_curves({}, path)
