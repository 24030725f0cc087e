"""Models shared by tests/test_onnx.py and tests/test_interop.py: the zoo with one
sample's input shape each, a hand-built model using every layer, and the PyTorch twin of
an airi model built layer for layer (torch imported by the caller)."""
import inspect

import numpy as np

import airi
from airi import layers as L

HAVE_NETS = hasattr(L, "Residual") and hasattr(L, "GlobalAvgPool2D")


def zoo_input_shape(name):
    """One sample's shape for the zoo model ``name``, from its function's defaults."""
    fn = getattr(airi.models, name, None) or airi.models.get_model
    defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items()}
    if "image_size" in defaults:
        side = defaults["image_size"]
        return (defaults.get("in_channels", 1), side, side)
    if "input_size" in defaults:
        return (defaults["input_size"],)
    return (1, 28, 28)            # zhou: seed 000's fixed digits


def walk(layer):
    """Every layer of a model, containers included, depth first."""
    yield layer
    if isinstance(layer, airi.Sequential):
        children = list(layer.layers)
    elif callable(getattr(layer, "named_children", None)):
        children = [c for _, c in layer.named_children() if c is not None]
    else:
        children = [getattr(layer, a) for a in ("body", "shortcut")
                    if getattr(layer, a, None) is not None]
    for child in children:
        yield from walk(child)


def randomize_batchnorm(model, seed=0):
    """Non-trivial gamma, beta and running statistics in every BatchNorm (fresh ones
    are the identity in eval mode, which would test nothing)."""
    rng = np.random.default_rng(seed)
    for layer in walk(model):
        if isinstance(layer, (L.BatchNorm1D, L.BatchNorm2D)):
            c = layer.num_features
            layer.gamma.data[...] = rng.uniform(0.5, 1.5, c)
            layer.beta.data[...] = rng.normal(0, 0.3, c)
            layer.running_mean[...] = rng.normal(0, 0.3, c)
            layer.running_var[...] = rng.uniform(0.5, 2.0, c)
    return model


def every_layer_model(head="softmax", dropout=0.3, nets=HAVE_NETS, dtype=None):
    """A model using every exportable layer, for an input of shape (3, 13, 11).

    Rectangular kernels, strides and paddings, a conv without bias, both BatchNorms,
    every activation, both pools, a nested Sequential, Dropout; with ``nets`` (issue 15
    on main) also Residual blocks (identity and projection shortcuts) and
    GlobalAvgPool2D. ``head`` is ``"softmax"`` or ``"logsoftmax"``.
    """
    kw = dict(dtype=dtype)
    trunk = [
        L.Conv2D(3, 6, (3, 5), stride=(2, 1), pad=(1, 2), **kw),   # -> (6, 7, 11)
        L.BatchNorm2D(6, eps=1e-3, momentum=0.2, **kw),
        L.LeakyRelu(0.1),
        L.Conv2D(6, 8, 3, pad=1, bias=False, **kw),                # -> (8, 7, 11)
        L.Tanh(),
        L.MaxPool2D((2, 3), stride=(1, 2)),                        # -> (8, 6, 5)
    ]
    if nets:
        trunk += [
            L.Residual(airi.Sequential(L.Conv2D(8, 8, 3, pad=1, **kw),
                                       L.BatchNorm2D(8, **kw), L.Relu(),
                                       L.Conv2D(8, 8, 3, pad=1, **kw))),
            L.Residual(airi.Sequential(L.Conv2D(8, 12, 3, stride=2, pad=1, **kw),
                                       L.Sigmoid()),
                       airi.Sequential(L.Conv2D(8, 12, 1, stride=2, bias=False, **kw),
                                       L.BatchNorm2D(12, **kw))),  # -> (12, 3, 3)
            L.AvgPool2D(2, stride=1),                              # -> (12, 2, 2)
            L.GlobalAvgPool2D(),                                   # -> (12,)
        ]
        features = 12
    else:
        trunk += [L.Sigmoid(), L.AvgPool2D(2, stride=1), L.Flatten()]   # (8, 5, 4)
        features = 8 * 5 * 4
    head_layer = L.Softmax() if head == "softmax" else L.LogSoftmax()
    return airi.Sequential(
        airi.Sequential(*trunk),
        L.Dropout(dropout),
        L.Linear(features, 16, **kw),
        L.BatchNorm1D(16, **kw),
        L.Relu(),
        L.Flatten(),                          # on (N, 16): a no-op, still a layer
        L.Linear(16, 10, bias=False, **kw),
        head_layer,
    )


EVERY_LAYER_INPUT = (3, 13, 11)


def torch_twin(torch, layer):
    """The torch.nn module built layer for layer like the airi ``layer`` (fresh
    weights: load them with airi.interop)."""
    nn = torch.nn
    kind = type(layer).__name__
    if isinstance(layer, airi.Sequential):
        return nn.Sequential(*[torch_twin(torch, sub) for sub in layer.layers])
    if kind == "Residual":
        return TorchResidual(torch, torch_twin(torch, layer.body),
                             None if layer.shortcut is None
                             else torch_twin(torch, layer.shortcut))
    if kind == "Conv2D":
        return nn.Conv2d(layer.in_channels, layer.num_filters, layer.filter_size,
                         stride=layer.stride, padding=layer.pad, bias=layer.bias)
    if kind == "Linear":
        return nn.Linear(layer.input_size, layer.hidden_size, bias=layer.bias)
    if kind in ("BatchNorm1D", "BatchNorm2D"):
        cls = nn.BatchNorm1d if kind == "BatchNorm1D" else nn.BatchNorm2d
        return cls(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    simple = {
        "Relu": lambda: nn.ReLU(), "Sigmoid": lambda: nn.Sigmoid(),
        "Tanh": lambda: nn.Tanh(), "Flatten": lambda: nn.Flatten(),
        "LeakyRelu": lambda: nn.LeakyReLU(layer.alpha),
        "MaxPool2D": lambda: nn.MaxPool2d(layer.pool_size, layer.stride),
        "AvgPool2D": lambda: nn.AvgPool2d(layer.pool_size, layer.stride),
        "Softmax": lambda: nn.Softmax(dim=1), "LogSoftmax": lambda: nn.LogSoftmax(dim=1),
        "Dropout": lambda: nn.Dropout(layer.p),
        "GlobalAvgPool2D": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    }
    if kind in simple:
        return simple[kind]()
    raise NotImplementedError(f"no torch twin for {kind}")


def TorchResidual(torch, body, shortcut):
    """A torch module y = body(x) + shortcut(x) with attributes body and shortcut."""

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body
            self.shortcut = shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    return Residual()
