"""The model zoo: the networks of the seed tutorials, built from airi layers.

Every function returns a fresh :class:`airi.Sequential` whose output is raw class scores
(logits) for :class:`airi.CrossEntropyLoss`, so none ends in a Softmax. All take
``dtype=None`` (the default dtype, float32 unless changed) for their parameters.

====================== ================ ========================================== =========
name                   input            layers                                     params
====================== ================ ========================================== =========
``zhou``               (N, 1, 28, 28)   conv3 8 no bias, pool2, fc10 (seed 000)    13,602
``softmax_classifier`` (N, 784) / image fc10 (seed 001)                            7,850
``two_layer``          (N, 784) / image fc100, relu, fc10 (seed 001)               79,510
``mlp``                (N, 784) / image fc128, relu, fc64, relu, fc10 (seed 004)   109,386
``lenet``              (N, 1, 28, 28)   [conv5, relu, pool2] x2, fc128, relu, fc10 117,066
``airi_cifar``         (N, 3, 32, 32)   conv5, conv5, fc120, fc84, fc10 (seed 001) 1,124,686
``vgg_small``          (N, 3, 32, 32)   3 x ([conv3, bn, relu] x2, pool2), fc10    307,946
``resnet8``            (N, 3, 32, 32)   CIFAR ResNet, 3 stages x 1 basic block     78,042
``resnet20``           (N, 3, 32, 32)   CIFAR ResNet, 3 stages x 3 basic blocks    272,474
====================== ================ ========================================== =========

The input shapes are the defaults. Every model but ``zhou`` (seed 000's fixed
28x28 one-channel network) adapts to other images: the convnets take ``in_channels``
and ``image_size`` (``airi_cifar(in_channels=1, image_size=28)`` runs on MNIST), the
dense ones ``input_size``.

``get_model(name, **kw)`` builds one by name; ``available_models()`` lists the names.
"""
from .layers import Conv2D, Flatten, Linear, MaxPool2D, Relu
from .validators import positive_int

__all__ = ["zhou", "softmax_classifier", "two_layer", "mlp", "lenet", "airi_cifar",
           "vgg_small", "resnet", "resnet8", "resnet20", "get_model", "available_models"]


def _sequential(*layers):
    from .sequential import Sequential
    return Sequential(*layers)


def _check_positive(fn, **values):
    """Each keyword must be an int >= 1 (``Linear(3.5, 2)`` would silently truncate)."""
    for name, value in values.items():
        positive_int(value, name, fn)


def zhou(num_filters=8, num_classes=10, dtype=None):
    """Victor Zhou's first CNN (seed 000), for 28x28 one-channel digits only.

    (N, 1, 28, 28) -> Conv 3x3, ``num_filters`` filters, no bias -> (N, 8, 26, 26)
    -> MaxPool 2 -> (N, 8, 13, 13) -> Flatten -> Linear 13*13*8 -> 10 -> logits (N, 10).

    The seed ends in Softmax + cross-entropy; here the Softmax lives in
    ``CrossEntropyLoss``.

    Parameters
    ----------
    num_filters : int
        Filters of the convolution (the seed's 8).
    num_classes : int
        Outputs K of the last layer.
    dtype : dtype-like, optional
        Parameter dtype (None: the default dtype).

    Returns
    -------
    Sequential
        Input (N, 1, 28, 28) -> logits (N, num_classes).
    """
    _check_positive("zhou", num_filters=num_filters, num_classes=num_classes)
    return _sequential(
        Conv2D(1, num_filters, 3, bias=False, dtype=dtype),
        MaxPool2D(2),
        Flatten(),
        Linear(13 * 13 * num_filters, num_classes, dtype=dtype),
    )


def softmax_classifier(input_size=784, num_classes=10, reg=0.0, dtype=None):
    """Seed 001's softmax classifier: one Linear layer on the flattened image.

    (N, ...) with prod(...) == ``input_size`` -> Flatten -> Linear -> logits (N, K).

    Parameters
    ----------
    input_size : int
        Values per sample (784 for 28x28 digits, 3072 for CIFAR-10).
    num_classes : int
        K.
    reg : float
        Linear's L2 penalty (the seed's ``reg``).
    dtype : dtype-like, optional
        Parameter dtype (None: the default dtype).

    Returns
    -------
    Sequential
        Input (N, ...) -> logits (N, num_classes).
    """
    _check_positive("softmax_classifier", input_size=input_size, num_classes=num_classes)
    return _sequential(Flatten(), Linear(input_size, num_classes, reg=reg, dtype=dtype))


def two_layer(input_size=784, hidden_size=100, num_classes=10, reg=0.0, dtype=None):
    """Seed 001's two-layer network: Flatten -> Linear -> Relu -> Linear.

    (N, ...) -> (N, input_size) -> (N, hidden_size) -> logits (N, num_classes).

    Parameters
    ----------
    input_size : int
        Values per sample (784 for 28x28 digits).
    hidden_size : int
        Units of the hidden layer.
    num_classes : int
        K.
    reg : float
        L2 penalty of both Linear layers (the seed's ``reg``).
    dtype : dtype-like, optional
        Parameter dtype (None: the default dtype).

    Returns
    -------
    Sequential
        Input (N, ...) -> logits (N, num_classes).
    """
    _check_positive("two_layer", input_size=input_size, hidden_size=hidden_size,
                    num_classes=num_classes)
    return _sequential(
        Flatten(),
        Linear(input_size, hidden_size, reg=reg, dtype=dtype),
        Relu(),
        Linear(hidden_size, num_classes, reg=reg, dtype=dtype),
    )


def mlp(input_size=784, hidden_sizes=(128, 64), num_classes=10, dtype=None):
    """Seed 004's fully connected MNIST network: 784 -> 128 -> 64 -> 10 with Relu.

    (N, 1, 28, 28) or (N, 784) -> Flatten -> [Linear -> Relu] per hidden size -> Linear
    -> logits (N, num_classes).

    Parameters
    ----------
    input_size : int
        Values per sample (784 for 28x28 digits).
    hidden_sizes : sequence of int
        Units of each hidden layer, in order.
    num_classes : int
        K.
    dtype : dtype-like, optional
        Parameter dtype (None: the default dtype).

    Returns
    -------
    Sequential
        Input (N, ...) -> logits (N, num_classes).
    """
    sizes = [int(input_size), *[int(h) for h in hidden_sizes], int(num_classes)]
    _check_positive("mlp", **{f"size[{i}]": s for i, s in enumerate(sizes)})
    layers = [Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(Relu())
    return _sequential(*layers)


def lenet(in_channels=1, num_classes=10, image_size=28, channels=(16, 32), hidden_size=128,
          dtype=None):
    """A LeNet-style convnet, the default model of ``python -m airi.train``.

    Shapes for the defaults (28x28 digits)::

        (N, 1, 28, 28) -> Conv 5x5 pad 2 (16) -> Relu -> MaxPool 2 -> (N, 16, 14, 14)
                       -> Conv 5x5 (32)       -> Relu -> MaxPool 2 -> (N, 32, 5, 5)
                       -> Flatten (800) -> Linear 128 -> Relu -> Linear 10 -> logits

    Parameters
    ----------
    in_channels : int
        1 for digits, 3 for colour images.
    num_classes : int
    image_size : int
        Height = width of the input (28 for MNIST, 32 for CIFAR-10).
    channels : (int, int)
        Filters of the two convolutions (LeNet-5 had 6 and 16; wider learns faster here).
    hidden_size : int
        Units of the first dense layer.
    dtype : dtype-like, optional
        Parameter dtype (None: the default dtype).

    Returns
    -------
    Sequential
        Input (N, in_channels, image_size, image_size) -> logits (N, num_classes).
    """
    c1, c2 = (int(c) for c in channels)
    _check_positive("lenet", in_channels=in_channels, num_classes=num_classes, c1=c1, c2=c2,
                    hidden_size=hidden_size)
    side = (int(image_size) // 2 - 4) // 2   # after pool, conv 5x5 (no pad), pool
    if side < 1:
        raise ValueError(f"lenet: image_size must be at least 10, got {image_size}")
    return _sequential(
        Conv2D(in_channels, c1, 5, pad=2, dtype=dtype),
        Relu(),
        MaxPool2D(2),
        Conv2D(c1, c2, 5, dtype=dtype),
        Relu(),
        MaxPool2D(2),
        Flatten(),
        Linear(c2 * side * side, hidden_size, dtype=dtype),
        Relu(),
        Linear(hidden_size, num_classes, dtype=dtype),
    )


def airi_cifar(in_channels=3, num_classes=10, image_size=32, dtype=None):
    """Seed 001's CIFAR-10 convnet (the original ``train.py`` model).

    Shapes for the defaults (32x32 colour images)::

        (N, 3, 32, 32) -> Conv 5x5 (16) -> Relu -> (N, 16, 28, 28) -> Conv 5x5 (16)
        -> Relu -> (N, 16, 24, 24) -> Flatten (9216) -> Linear 120 -> Relu -> Linear 84
        -> Relu -> Linear 10 -> logits (N, 10)

    The convolutions have no padding, so the first Linear layer takes
    ``16 * (image_size - 8) ** 2`` inputs: 9216 for 32x32, 6400 for 28x28 digits.

    Parameters
    ----------
    in_channels : int
        3 for colour images, 1 for digits.
    num_classes : int
        K.
    image_size : int
        Height = width of the input, at least 9 (32 for CIFAR-10, 28 for MNIST).
    dtype : dtype-like, optional
        Parameter dtype (None: the default dtype).

    Returns
    -------
    Sequential
        Input (N, in_channels, image_size, image_size) -> logits (N, num_classes).
    """
    _check_positive("airi_cifar", in_channels=in_channels, num_classes=num_classes,
                    image_size=image_size)
    side = int(image_size) - 8      # two 5x5 convolutions without padding
    if side < 1:
        raise ValueError(f"airi_cifar: image_size must be at least 9, got {image_size}")
    return _sequential(
        Conv2D(in_channels, 16, 5, dtype=dtype),
        Relu(),
        Conv2D(16, 16, 5, dtype=dtype),
        Relu(),
        Flatten(),
        Linear(16 * side * side, 120, dtype=dtype),
        Relu(),
        Linear(120, 84, dtype=dtype),
        Relu(),
        Linear(84, num_classes, dtype=dtype),
    )


def vgg_small(in_channels=3, num_classes=10, widths=(32, 64, 128), batch_norm=True,
              image_size=32, dtype=None):
    """A small VGG-style network for 32x32 colour images.

    Each stage is two 3x3 convolutions with padding 1 (size kept), each followed by
    BatchNorm (``batch_norm=True``) and Relu, then MaxPool 2 (size halved)::

        (N, 3, 32, 32) -> stage 32 -> (N, 32, 16, 16) -> stage 64 -> (N, 64, 8, 8)
        -> stage 128 -> (N, 128, 4, 4) -> Flatten (2048) -> Linear 10 -> logits

    Parameters
    ----------
    in_channels : int
        3 for colour images, 1 for digits.
    num_classes : int
        K.
    widths : sequence of int
        Filters of each stage; each stage halves the image size.
    batch_norm : bool
        BatchNorm2D after every convolution (the convolutions then have no bias).
    image_size : int
        Height = width of the input (32 for CIFAR-10; 28 works too: 28 -> 14 -> 7 -> 3).
    dtype : dtype-like, optional
        Parameter dtype (None: the default dtype).

    Returns
    -------
    Sequential
        Input (N, in_channels, image_size, image_size) -> logits (N, num_classes).
    """
    widths = [int(w) for w in widths]
    if not widths:
        raise ValueError("vgg_small: widths must list at least one stage width")
    _check_positive("vgg_small", in_channels=in_channels, num_classes=num_classes,
                    **{f"widths[{i}]": w for i, w in enumerate(widths)})
    side = int(image_size) >> len(widths)
    if side < 1:
        raise ValueError(f"vgg_small: {len(widths)} stages halve image_size={image_size} "
                         "to nothing; use fewer stages or larger images")
    if batch_norm:
        from .layers import BatchNorm2D
    layers, channels = [], int(in_channels)
    for width in widths:
        for _ in range(2):
            # A bias before BatchNorm is cancelled by its mean subtraction.
            layers.append(Conv2D(channels, width, 3, pad=1, bias=not batch_norm,
                                 dtype=dtype))
            if batch_norm:
                layers.append(BatchNorm2D(width, dtype=dtype))
            layers.append(Relu())
            channels = width
        layers.append(MaxPool2D(2))
    layers += [Flatten(), Linear(channels * side * side, num_classes, dtype=dtype)]
    return _sequential(*layers)


# ------------------------------------------------------------------------ ResNets
def _basic_block(in_channels, out_channels, stride, dtype):
    """He et al.'s basic block: Residual(3x3 conv-BN-ReLU-3x3 conv-BN, shortcut), then
    ReLU (two layers of the network). The shortcut is the identity, or a 1x1 convolution
    with the block's stride + BN when the block changes the shape."""
    from .layers import BatchNorm2D, Residual
    body = _sequential(
        Conv2D(in_channels, out_channels, 3, stride=stride, pad=1, bias=False, dtype=dtype),
        BatchNorm2D(out_channels, dtype=dtype),
        Relu(),
        Conv2D(out_channels, out_channels, 3, pad=1, bias=False, dtype=dtype),
        BatchNorm2D(out_channels, dtype=dtype),
    )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = _sequential(
            Conv2D(in_channels, out_channels, 1, stride=stride, bias=False, dtype=dtype),
            BatchNorm2D(out_channels, dtype=dtype),
        )
    return [Residual(body, shortcut), Relu()]


def resnet(depth=20, num_classes=10, in_channels=3, width=16, image_size=32, dtype=None):
    """The CIFAR ResNet of He et al. 2016 ("Deep Residual Learning", section 4.2).

    Shapes for the defaults (``width`` w = 16, 32x32 images)::

        (N, 3, 32, 32) -> Conv 3x3 (w, no bias) -> BN -> Relu          (N, 16, 32, 32)
        -> stage 1: n basic blocks of w channels                      (N, 16, 32, 32)
        -> stage 2: n blocks of 2w channels, the first with stride 2  (N, 32, 16, 16)
        -> stage 3: n blocks of 4w channels, the first with stride 2  (N, 64, 8, 8)
        -> GlobalAvgPool2D (N, 64) -> Linear -> logits (N, num_classes)

    with n = (depth - 2) / 6. A basic block is ``Residual(body, shortcut)`` followed by
    ``Relu``: the body is 3x3 conv - BN - Relu - 3x3 conv - BN, the shortcut the
    identity, or for the first block of stages 2 and 3 a projection (1x1 conv with
    stride 2, no bias, + BN). Convolutions before a BatchNorm have no bias. The network
    is a :class:`airi.Sequential` whose blocks are nested layers: its parameters are
    named like ``3.body.0.W`` and ``6.shortcut.1.gamma``.

    Parameters
    ----------
    depth : int
        6n + 2 weighted layers: 8 (n = 1), 14, 20 (n = 3), 32, 44, 56, 110 ...
    num_classes : int
        Outputs of the last layer.
    in_channels : int
        3 for colour images, 1 for digits.
    width : int
        Channels of the first stage (16 in the paper); the stages have w, 2w, 4w.
    image_size : int
        Height = width of the input (32 for CIFAR-10, 28 for MNIST). The global average
        pool makes the network work for any size; it is checked to be >= 1.
    dtype : dtype-like, optional
        Parameter dtype (None: the default dtype).

    Returns
    -------
    Sequential
        Input (N, in_channels, image_size, image_size) -> logits (N, num_classes).
        resnet20 with one input channel and 10 classes has 272,186 parameters.

    Raises
    ------
    ValueError
        If ``depth`` is not 6n + 2 with n >= 1, or a size is not a positive int.
    """
    _check_positive("resnet", depth=depth, num_classes=num_classes,
                    in_channels=in_channels, width=width, image_size=image_size)
    depth, width = int(depth), int(width)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet: depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, "
                         f"56, 110 ...), got {depth}")
    from .layers import BatchNorm2D, GlobalAvgPool2D
    blocks_per_stage = (depth - 2) // 6
    layers = [Conv2D(in_channels, width, 3, pad=1, bias=False, dtype=dtype),
              BatchNorm2D(width, dtype=dtype), Relu()]
    channels = width
    for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            layers += _basic_block(channels, stage_width, stride, dtype)
            channels = stage_width
    layers += [GlobalAvgPool2D(), Linear(channels, num_classes, dtype=dtype)]
    return _sequential(*layers)


def resnet8(num_classes=10, in_channels=3, width=16, image_size=32, dtype=None):
    """``resnet(depth=8, ...)``: one basic block per stage (77,754 parameters with one
    input channel, 78,042 with three, for 10 classes).

    Parameters and returns as for :func:`resnet`."""
    return resnet(8, num_classes, in_channels, width, image_size, dtype)


def resnet20(num_classes=10, in_channels=3, width=16, image_size=32, dtype=None):
    """``resnet(depth=20, ...)``: three basic blocks per stage (272,186 parameters with
    one input channel and 10 classes, 272,474 with three).

    Parameters and returns as for :func:`resnet`."""
    return resnet(20, num_classes, in_channels, width, image_size, dtype)


_REGISTRY = {
    "zhou": zhou,
    "softmax_classifier": softmax_classifier,
    "two_layer": two_layer,
    "mlp": mlp,
    "lenet": lenet,
    "airi_cifar": airi_cifar,
    "vgg_small": vgg_small,
    "resnet8": resnet8,
    "resnet20": resnet20,
}


def available_models():
    """The names :func:`get_model` accepts.

    Returns
    -------
    list of str
        Sorted model names.
    """
    return sorted(_REGISTRY)


def get_model(name, **kwargs):
    """Build the zoo model ``name`` (dashes and underscores alike) with ``kwargs``.

    Parameters
    ----------
    name : str
        One of :func:`available_models`, e.g. ``"lenet"``.
    **kwargs
        Passed to the model's function (``in_channels``, ``image_size``, ``dtype`` ...).

    Returns
    -------
    Sequential
        A new model with fresh weights (from airi's random generator).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: "
                         f"{', '.join(available_models())}")
    return _REGISTRY[key](**kwargs)
