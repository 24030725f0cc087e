"""The model zoo: shapes, parameter counts, dtypes, the registry."""
import numpy as np
import pytest

import airi
from airi import models
from airi.layers import BatchNorm2D, Conv2D, Linear, Softmax

DIGITS, COLOUR = (1, 28, 28), (3, 32, 32)

# name -> (input shape of one sample, parameter count worked out by hand)
EXPECTED = {
    # conv 8*1*3*3 (no bias) + fc 13*13*8*10 + 10
    "zhou": (DIGITS, 72 + 13520 + 10),
    "softmax_classifier": (DIGITS, 784 * 10 + 10),
    "two_layer": (DIGITS, 784 * 100 + 100 + 100 * 10 + 10),
    "mlp": (DIGITS, 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10),
    # conv 16*1*5*5+16, conv 32*16*5*5+32, fc 32*5*5*128+128, fc 128*10+10
    "lenet": (DIGITS, 416 + 12832 + 102528 + 1290),
    # conv 16*3*5*5+16, conv 16*16*5*5+16, fc 9216*120+120, 120*84+84, 84*10+10
    "airi_cifar": (COLOUR, 1216 + 6416 + 1106040 + 10164 + 850),
    # six 3x3 convs without bias, six BatchNorms (gamma+beta), fc 128*4*4*10+10
    "vgg_small": (COLOUR, 9 * (3 * 32 + 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128)
                  + 2 * (32 + 32 + 64 + 64 + 128 + 128) + 2048 * 10 + 10),
    # stem conv 3*16*9 + BN; a block of w channels: 2 convs 9*w*w + 2 BNs; the first
    # block of stages 2, 3: conv 9*w*2w + conv 9*2w*2w + 2 BNs + projection 1x1 + BN
    "resnet8": (COLOUR, 432 + 32 + (2 * 9 * 16 * 16 + 64)
                + (9 * 16 * 32 + 9 * 32 * 32 + 128 + 16 * 32 + 64)
                + (9 * 32 * 64 + 9 * 64 * 64 + 256 + 32 * 64 + 128) + 64 * 10 + 10),
    "resnet20": (COLOUR, 432 + 32 + 3 * (2 * 9 * 16 * 16 + 64)
                 + (9 * 16 * 32 + 9 * 32 * 32 + 128 + 16 * 32 + 64)
                 + 2 * (2 * 9 * 32 * 32 + 128)
                 + (9 * 32 * 64 + 9 * 64 * 64 + 256 + 32 * 64 + 128)
                 + 2 * (2 * 9 * 64 * 64 + 256) + 64 * 10 + 10),
}


def n_params(model):
    return sum(p.size for p in model.parameters())


def test_registry_lists_every_model():
    assert models.available_models() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_output_shape_and_parameter_count(name):
    airi.seed(0)
    shape, count = EXPECTED[name]
    model = models.get_model(name)
    assert isinstance(model, airi.Sequential)
    assert n_params(model) == count
    x = np.random.default_rng(0).random((3,) + shape, dtype=np.float32)
    out = model.forward(x, training=False)
    assert out.shape == (3, 10) and out.dtype == np.float32
    # logits, not probabilities: no final Softmax
    assert not isinstance(model[-1], Softmax)
    assert not np.allclose(out.sum(axis=1), 1.0)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dtype_keyword(name):
    model = models.get_model(name, dtype=np.float64)
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    x = np.zeros((2,) + EXPECTED[name][0])
    assert model.forward(x, training=False).dtype == np.float64


def test_every_model_trains_a_step():
    """Forward, backward and a gradient for every parameter (float64 for exactness)."""
    for name in models.available_models():
        model = models.get_model(name, dtype=np.float64)
        x = np.random.default_rng(1).random((4,) + EXPECTED[name][0])
        out = model.forward(x, training=True)
        loss = airi.CrossEntropyLoss()
        loss(out, np.array([0, 1, 2, 3]))
        model.backward(loss.backward())
        assert all(p.grad is not None and p.grad.shape == p.shape
                   for p in model.parameters()), name


@pytest.mark.parametrize("in_channels, image_size, linear_inputs", [
    (3, 32, 9216),           # CIFAR-10, the seed's model
    (1, 28, 16 * 20 * 20),   # MNIST
    (3, 9, 16),              # the smallest image it takes
])
def test_airi_cifar_follows_the_image_size(in_channels, image_size, linear_inputs):
    model = models.airi_cifar(in_channels=in_channels, image_size=image_size)
    assert model[0].W.shape == (16, in_channels, 5, 5)
    assert model[5].W.shape == (linear_inputs, 120)
    x = np.zeros((2, in_channels, image_size, image_size), dtype=np.float32)
    assert model.forward(x, training=False).shape == (2, 10)


def test_airi_cifar_rejects_too_small_images():
    with pytest.raises(ValueError, match="airi_cifar: image_size must be at least 9"):
        models.airi_cifar(image_size=8)
    with pytest.raises(ValueError, match="airi_cifar: image_size must be a positive integer, "
                                         "got 28.5"):
        models.airi_cifar(image_size=28.5)      # not silently truncated to 28


def test_zhou_is_seed_000():
    model = models.zhou()
    conv, linear = model[0], model[-1]
    assert isinstance(conv, Conv2D) and conv.bias is False and conv.W.shape == (8, 1, 3, 3)
    assert isinstance(linear, Linear) and linear.W.shape == (13 * 13 * 8, 10)


def test_flat_models_take_vectors_and_other_sizes():
    x = np.zeros((2, 784), dtype=np.float32)
    for fn in (models.softmax_classifier, models.two_layer, models.mlp):
        assert fn()(x).shape == (2, 10)
    assert models.two_layer(input_size=3072, hidden_size=50, num_classes=5)(
        np.zeros((2, 3, 32, 32), dtype=np.float32)).shape == (2, 5)


def test_lenet_adapts_to_colour_images_and_widths():
    model = models.lenet(in_channels=3, num_classes=10, image_size=32, channels=(6, 16),
                         hidden_size=84)
    assert model(np.zeros((2, 3, 32, 32), dtype=np.float32)).shape == (2, 10)
    assert model[-3].W.shape == (16 * 6 * 6, 84)


def test_vgg_small_without_batchnorm():
    model = models.vgg_small(batch_norm=False, widths=(8, 16))
    assert not any(isinstance(layer, BatchNorm2D) for layer in model)
    assert all(layer.bias for layer in model if isinstance(layer, Conv2D))
    assert model(np.zeros((2, 3, 32, 32), dtype=np.float32)).shape == (2, 10)


def test_get_model_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*lenet"):
        models.get_model("resnet")
    assert isinstance(models.get_model("Two-Layer", hidden_size=5), airi.Sequential)
    with pytest.raises(ValueError, match="lenet: image_size"):
        models.lenet(image_size=8)
    with pytest.raises(ValueError, match="positive"):
        models.two_layer(hidden_size=0)


def test_models_save_and_load(tmp_path):
    model = models.lenet()
    airi.save(model, tmp_path / "m.pkl")
    loaded = airi.load(tmp_path / "m.pkl")
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
