"""PyTorch and Keras spellings get an error naming what airi calls the thing (airi keeps
one spelling of its API: these are messages, never aliases)."""
import numpy as np
import pytest

import airi
from airi.layers import (BatchNorm2D, Conv2D, Dropout, Layer, LeakyRelu, Linear,
                         MaxPool2D, Relu)


@pytest.mark.parametrize("make, message", [
    (lambda: Conv2D(1, 8, kernel_size=3, padding=1),
     "Conv2D has no argument 'kernel_size': did you mean 'filter_size'?"),
    (lambda: Conv2D(in_channels=1, out_channels=8, filter_size=3),
     "Conv2D has no argument 'out_channels': did you mean 'num_filters'?"),
    (lambda: Conv2D(1, 8, 3, padding=1),
     "Conv2D has no argument 'padding': did you mean 'pad'?"),
    (lambda: Linear(in_features=784, out_features=10),
     "Linear has no argument 'in_features': did you mean 'input_size'?"),
    (lambda: Linear(784, out_features=10),
     "Linear has no argument 'out_features': did you mean 'hidden_size'?"),
    (lambda: Linear(784, units=10),
     "Linear has no argument 'units': did you mean 'hidden_size'?"),
    (lambda: MaxPool2D(kernel_size=2),
     "MaxPool2D has no argument 'kernel_size': did you mean 'pool_size'?"),
    (lambda: Dropout(rate=0.5), "Dropout has no argument 'rate': did you mean 'p'?"),
    (lambda: BatchNorm2D(8, epsilon=1e-3),
     "BatchNorm2D has no argument 'epsilon': did you mean 'eps'?"),
    (lambda: LeakyRelu(negative_slope=0.1),
     "LeakyRelu has no argument 'negative_slope': did you mean 'alpha'?"),
    (lambda: Conv2D(1, 8, 3, strid=2),                      # a typo: difflib
     "Conv2D has no argument 'strid': did you mean 'stride'?"),
    (lambda: Relu(inplace=True), "Relu takes no arguments, got 'inplace'"),
])
def test_foreign_argument_names_are_translated(make, message):
    with pytest.raises(TypeError) as caught:
        make()
    assert str(caught.value) == message


def test_unknown_argument_without_a_match_lists_the_arguments():
    with pytest.raises(TypeError, match=r"Linear has no argument 'zzz'; its arguments "
                                        r"are input_size, hidden_size, bias"):
        Linear(3, 4, zzz=1)


def test_airi_spellings_still_work_and_keep_their_signature():
    import inspect
    conv = Conv2D(in_channels=1, num_filters=8, filter_size=3, pad=1)
    assert conv.filter_size == (3, 3) and conv.pad == (1, 1)
    assert list(inspect.signature(Linear).parameters)[:2] == ["input_size", "hidden_size"]
    x = np.zeros((2, 1, 5, 5), np.float32)
    assert conv(x).shape == (2, 8, 5, 5)


def test_a_users_layer_gets_the_same_help():
    class Scale(Layer):
        def __init__(self, num_features):
            super().__init__()
            self.num_features = num_features

    with pytest.raises(TypeError, match="Scale has no argument 'in_features'"):
        Scale(in_features=3)
    assert Scale(num_features=3).num_features == 3


@pytest.mark.parametrize("module", [airi, airi.layers])
def test_keras_and_pytorch_layer_names_say_what_airi_calls_them(module):
    with pytest.raises(AttributeError, match="has no 'Dense': airi calls it Linear"):
        module.Dense
    with pytest.raises(AttributeError, match="airi calls it Conv2D"):
        module.Conv2d
    assert not hasattr(module, "Dense")          # still a plain AttributeError
    with pytest.raises(AttributeError, match="has no attribute 'Nonexistent'"):
        module.Nonexistent
