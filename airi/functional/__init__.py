"""``airi.functional``: the layers' maths as stateless functions (like
``torch.nn.functional``).

Each operation takes arrays and returns arrays; nothing is cached and no parameter is
owned. The layers in :mod:`airi.layers` keep the parameters and the cache and call
these; a student can call them directly::

    import numpy as np
    import airi.functional as F

    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    W = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    out = F.conv2d_forward(x, W, None, stride=1, pad=1)          # (2, 4, 8, 8)
    dx, dW, db = F.conv2d_backward(np.ones_like(out), x, W, stride=1, pad=1)

Shapes are NCHW. Under the functions, :mod:`airi._planner` picks the algorithm of each
pass (im2col + GEMM, pointwise, direct, Winograd) and the chunks of the batch,
:mod:`airi._parallel` runs the chunks on airi's threads, and :mod:`airi._backend` runs
the compiled kernels or their NumPy twins (see ARCHITECTURE.md).
"""
from ._checks import conv_output_shape, pair
from .activations import (leaky_relu_backward, leaky_relu_forward, relu_backward,
                          relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward,
                          tanh_forward)
from .conv import col2im, conv2d_backward, conv2d_forward, conv2d_plan, im2col
from .linear import linear_backward, linear_forward
from .normalization import (batch_norm_backward, batch_norm_forward,
                            batch_norm_grad_sums, batch_norm_stats, batchnorm_input_grad,
                            batchnorm_moments, batchnorm_normalize,
                            batchnorm_plane_grad_sums)
from .pooling import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,
                      max_pool2d_forward, maxpool_tap_dtype)
from .winograd import winograd_filters, winograd_tiles

__all__ = [
    "conv2d_forward", "conv2d_backward", "conv2d_plan", "im2col", "col2im",
    "conv_output_shape", "pair",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
    "avg_pool2d_backward", "maxpool_tap_dtype",
    "linear_forward", "linear_backward",
    "relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
    "batch_norm_stats", "batch_norm_forward", "batch_norm_grad_sums",
    "batch_norm_backward", "batchnorm_moments", "batchnorm_normalize",
    "batchnorm_plane_grad_sums", "batchnorm_input_grad",
    "winograd_filters", "winograd_tiles",
]
