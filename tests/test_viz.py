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
@pytest.mark.parametrize("in_channels, filters, kernel, size", [
    (1, 8, 3, (800, 130)),     # seed 000's 8 filters: one row of 8 cells
    (3, 16, 5, (800, 230)),    # colour kernels, two rows
    (4, 3, 3, (300, 130)),     # mean over 4 input channels, 3 cells
])
def test_plot_filters_grid_size(mpl, tmp_path, in_channels, filters, kernel, size):
    airi.seed(1)
    conv = Conv2D(in_channels, filters, kernel)
    assert viz.filter_grid_size(filters) == (size[0] // 100, (size[1] - 30) // 100)
    path = tmp_path / "filters.png"
    assert_picture(path, viz.plot_filters(conv, path), size)


def test_plot_filters_accepts_arrays_and_a_chosen_channel(mpl, tmp_path):
    weights = np.random.default_rng(0).normal(size=(10, 3, 3, 3))
    path = tmp_path / "f.png"
    assert_picture(path, viz.plot_filters(weights, path, channel=2), (800, 230))
    with pytest.raises(ValueError, match="channel 3 out of range"):
        viz.plot_filters(weights, path, channel=3)
    with pytest.raises(ValueError, match=r"\(F, C, kh, kw\)"):
        viz.plot_filters(np.zeros((3, 3)), path)


def test_plot_filters_of_a_model_shows_its_first_conv(mpl, tmp_path):
    model = small_convnet()                        # first Conv2D: 6 kernels of 1x3x3
    path = tmp_path / "model.png"
    assert_picture(path, viz.plot_filters(model, path), (600, 130))
    nested = Sequential(Flatten(), Sequential(Relu(), Conv2D(2, 3, 3)))
    assert_picture(path, viz.plot_filters(nested, path), (300, 130))
    layers = [Conv2D(3, 16, 5), Relu()]           # a seed-001 list of layers
    assert_picture(path, viz.plot_filters(layers, path), (800, 230))


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
    # Six layers output image stacks (2 conv, 2 relu, 2 pools): six rows of 8 cells.
    assert_picture(path, viz.plot_feature_maps(model, x, path), (160 + 800, 30 + 600))


def test_plot_feature_maps_chosen_layers_of_a_plain_list(mpl, tmp_path):
    model = small_convnet()
    layers = list(model)                       # seed 001's models are plain lists
    x = np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "maps.png"
    weights = [p.data.copy() for p in model.parameters()]
    out = viz.plot_feature_maps(layers, x, path, layers=[layers[1], 4], max_maps=4)
    assert_picture(path, out, (160 + 400, 30 + 200))
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
