"""Train small convnets for a few steps; run under ``mpiexec -n K`` or as one process.

``python equivalence.py OUT.npz`` (under mpiexec or not) trains every configuration of
``CONFIGS`` with the global batch sizes given and writes, from rank 0, the final weights
(and BatchNorm running statistics) of each into ``OUT.npz`` under ``"<config>/<key>"``.
tests/test_distributed.py imports :func:`train` to compute the one-process reference.
Float64 and no dropout: K ranks must reproduce one process up to rounding.
"""
import sys

import numpy as np

import airi
from airi import distributed
from airi.layers import (BatchNorm1D, BatchNorm2D, Conv2D, Flatten, GlobalAvgPool2D, Linear,
                         MaxPool2D, Relu, Residual)

N_SAMPLES = 40
EPOCHS = 2          # 40 samples: batches 16+16+8 or 15+15+10 -> 6 steps
#: name -> (batch norm? or "resnet", optimizer, global batch size)
CONFIGS = {
    "plain-momentum-b16": (False, "momentum", 16),
    "plain-adam-b15": (False, "adam", 15),
    "bn-momentum-b15": (True, "momentum", 15),
    "bn-adam-b16": (True, "adam", 16),
    "bn-adam-b15": (True, "adam", 15),
    # nested layers (issue 15): residual blocks with BatchNorm and a projection
    # shortcut, trained with Nesterov + OneCycleLR (stepped per batch) + clipping
    "resnet-nesterov-b15": ("resnet", "nesterov", 15),
}


def make_data():
    rng = np.random.default_rng(1234)
    X = rng.standard_normal((N_SAMPLES, 1, 8, 8))
    y = rng.integers(0, 5, size=N_SAMPLES)
    return X, y


def make_resnet():
    """A tiny ResNet on (N, 1, 8, 8): an identity block and a stride-2 block with a
    projection shortcut (parameters two levels deep)."""
    def bn_conv(c_in, c_out, stride=1, k=3):
        return [Conv2D(c_in, c_out, k, stride=stride, pad=k // 2, bias=False),
                BatchNorm2D(c_out)]
    identity = Residual(airi.Sequential(*bn_conv(4, 4), Relu(), *bn_conv(4, 4)))
    down = Residual(airi.Sequential(*bn_conv(4, 8, 2), Relu(), *bn_conv(8, 8)),
                    airi.Sequential(*bn_conv(4, 8, 2, k=1)))
    return airi.Sequential(*bn_conv(1, 4), Relu(), identity, Relu(), down, Relu(),
                           GlobalAvgPool2D(), Linear(8, 5))


def make_model(batch_norm):
    """A convnet on (N, 1, 8, 8) inputs, float64; with BatchNorm2D and BatchNorm1D."""
    if batch_norm == "resnet":
        return make_resnet()
    layers = [Conv2D(1, 4, 3, pad=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(BatchNorm2D(4))
    # No bias before a BatchNorm: its gradient is exactly zero in theory, so Adam would
    # turn rounding noise into steps of size lr and the comparison would be chaos.
    layers += [Relu(), MaxPool2D(2), Flatten(), Linear(4 * 4 * 4, 12, bias=not batch_norm)]
    if batch_norm:
        layers.append(BatchNorm1D(12))
    layers += [Relu(), Linear(12, 5)]
    return airi.Sequential(layers)


def make_optimizer(name, params):
    if name == "nesterov":
        return airi.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
    if name == "momentum":
        return airi.optim.SGD(params, lr=0.05, momentum=0.9)
    return airi.optim.Adam(params, lr=0.01)


def train(config, parallel=None):
    """Train one configuration; returns the final ``state_dict`` (identical on every
    rank). ``parallel=None``: one process."""
    batch_norm, optimizer_name, batch_size = CONFIGS[config]
    airi.set_default_dtype(np.float64)
    airi.seed(7)
    model = make_model(batch_norm)
    if parallel is not None:
        distributed.broadcast_parameters(model)
    rank = 0 if parallel is None else parallel.rank
    world = 1 if parallel is None else parallel.world_size
    X, y = make_data()
    loader = airi.DataLoader(X, y, batch_size=batch_size, seed=3, rank=rank,
                             world_size=world)
    optimizer = make_optimizer(optimizer_name, model.parameters())
    extra = {}
    if batch_norm == "resnet":
        extra = dict(scheduler=airi.lr_scheduler.OneCycleLR(
            optimizer, max_lr=0.2, epochs=EPOCHS, steps_per_epoch=len(loader)),
            clip_grad_norm=1.0)
    trainer = airi.Trainer(model, airi.CrossEntropyLoss(), optimizer,
                           parallel=parallel, verbose=False, **extra)
    trainer.fit(loader, epochs=EPOCHS)
    return model.state_dict()


def overlap_difference():
    """Max difference between the gradients averaged by the non-blocking path
    (``GradientReducer.backward``: Iallreduce per bucket during back-propagation, tiny
    buckets so there are several) and by ``allreduce_gradients`` after backward."""
    airi.set_default_dtype(np.float64)
    airi.seed(7)
    model = make_model(batch_norm=True)
    distributed.broadcast_parameters(model)
    X, y = make_data()
    rank, world = distributed.rank(), distributed.size()
    loader = airi.DataLoader(X, y, batch_size=15, shuffle=False, rank=rank,
                             world_size=world)
    xb, yb = next(iter(loader))
    loss = airi.CrossEntropyLoss()
    loss(model.forward(xb, training=True), yb)
    model.backward(loss.backward())
    distributed.allreduce_gradients(model.parameters(), count=len(xb))
    blocking = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    reducer = distributed.GradientReducer(model.parameters(), bucket_bytes=256)
    loss(model.forward(xb, training=True), yb)
    reducer.backward(model, loss.backward(), weight=len(xb))
    return max(float(np.abs(p.grad - g).max())
               for p, g in zip(model.parameters(), blocking)), len(reducer.buckets)


def main(out):
    distributed.init()
    parallel = distributed.context()
    results = {}
    with distributed.abort_on_failure("equivalence.py"):
        for config in CONFIGS:
            for key, value in train(config, parallel).items():
                results[f"{config}/{key}"] = value
        if distributed.size() > 1:
            results["overlap/max_difference"], results["overlap/buckets"] = \
                overlap_difference()
        if distributed.is_main():
            np.savez(out, world_size=distributed.size(), **results)


if __name__ == "__main__":
    main(sys.argv[1])
