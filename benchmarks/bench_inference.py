"""Inference speed: images/s of eval-mode forward passes, airi against ONNX Runtime
running airi's own export (and PyTorch, when installed), batch 1 and 128.

Each model is built once from the zoo (``airi.seed(0)``) and run three ways:

* ``airi``  ``model.eval()``, then ``model.forward(x)`` (compiled kernels);
* ``ort``   the file written by ``airi.onnx.export`` in an ONNX Runtime session (CPU
  provider, ``intra_op_num_threads`` = ``--threads``, all graph optimisations);
* ``torch`` the same network built in ``torch.nn`` and loaded with
  ``airi.interop.torch_state_dict``, in ``eval()`` under ``torch.inference_mode()``.

Before timing, the three outputs are compared (largest difference relative to the
output's scale), so the figures are for the same computation. The configurations run
**interleaved** as in ``bench_train.py``: round after round each gets a pause (threads
of the previous one stop spinning), one untimed call, then enough timed calls for about
``--budget`` seconds; the median over rounds is reported and ratios are taken between
medians.

Run::

    python benchmarks/bench_inference.py                   # all models, 2 threads
    python benchmarks/bench_inference.py --quick           # a smoke run
    python benchmarks/bench_inference.py --models lenet --batches 1 --json out.json
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = ("lenet", "airi_cifar", "vgg_small", "mlp", "resnet20")
CONFIGS = ("airi", "ort", "torch")


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None,
                   help=f"zoo models (default: those of {', '.join(MODELS)} in the zoo)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 128],
                   help="batch sizes (default 1 128)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--threads", type=int, default=2,
                   help="threads for airi, BLAS, ONNX Runtime and torch (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    p.add_argument("--budget", type=float, default=0.5,
                   help="seconds of timed calls per round and configuration")
    p.add_argument("--pause", type=float, default=0.2, help="seconds of rest per block")
    p.add_argument("--quick", action="store_true",
                   help="2 rounds, short blocks, lenet and mlp only (smoke run)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


ARGS = _parse()
# BLAS and OpenMP read their thread counts when loaded: set them before importing NumPy.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import airi  # noqa: E402
from airi.interop import torch_state_dict  # noqa: E402

try:   # the benchmarks' shared machine description (benchmarks/machine.py)
    from machine import describe, info as machine_info  # noqa: E402
except ImportError:
    machine_info = None


def _machine():
    """(one line, dict) describing the CPU: model and vector instruction set."""
    if machine_info is not None:
        return describe(), machine_info()
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    isa = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"),
                                        ("avx", "AVX")) if flag in flags), "baseline")
    found = dict(cpu=model or platform.processor() or platform.machine(), isa=isa,
                 cores=os.cpu_count(), machine=platform.machine(),
                 python=platform.python_version())
    return f"machine: {found['cpu']}, {found['cores']} cores, {isa}", found


# ================================================================== the models
def input_shape(model):
    """One sample's shape: from the first layer that fixes it."""
    for layer in _leaves(model):
        if isinstance(layer, airi.Conv2D):
            side = 28 if layer.in_channels == 1 else 32
            return (layer.in_channels, side, side)
        if isinstance(layer, airi.Linear):
            return (layer.input_size,)
    raise ValueError("no Conv2D or Linear layer to take the input shape from")


def _leaves(layer):
    if isinstance(layer, airi.Sequential):
        for sub in layer.layers:
            yield from _leaves(sub)
    elif callable(getattr(layer, "named_children", None)) and list(layer.named_children()):
        for _, sub in layer.named_children():
            yield from _leaves(sub)
    else:
        yield layer


def torch_twin(torch, layer):
    """``layer`` built in torch.nn, layer for layer (weights loaded by the caller)."""
    nn = torch.nn
    kind = type(layer).__name__
    if isinstance(layer, airi.Sequential):
        return nn.Sequential(*[torch_twin(torch, sub) for sub in layer.layers])
    if kind == "Residual":
        body = torch_twin(torch, layer.body)
        shortcut = None if layer.shortcut is None else torch_twin(torch, layer.shortcut)

        class Residual(nn.Module):
            def __init__(self):
                super().__init__()
                self.body, self.shortcut = body, shortcut

            def forward(self, x):
                return self.body(x) + (x if self.shortcut is None else self.shortcut(x))
        return Residual()
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
    if kind not in simple:
        raise NotImplementedError(f"no torch twin for {kind}")
    return simple[kind]()


# ==================================================================== runners
class AiriRunner:
    def __init__(self, model):
        self.model = model.eval()

    def __call__(self, x):
        return self.model.forward(x)


class OrtRunner:
    def __init__(self, ort, model, shape, workdir):
        path = os.path.join(workdir, "model.onnx")
        airi.onnx.export(model, path, shape)
        options = ort.SessionOptions()
        options.intra_op_num_threads = ARGS.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x):
        return self.session.run(None, {"input": x})[0]


class TorchRunner:
    def __init__(self, torch, model):
        self.torch = torch
        self.model = torch_twin(torch, model)
        self.model.load_state_dict({k: torch.from_numpy(v)
                                    for k, v in torch_state_dict(model).items()})
        self.model.eval()

    def __call__(self, x):
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(x)).numpy()


def _import(name):
    try:
        module = __import__(name)
    except ImportError:
        return None
    if name == "torch":
        module.set_num_threads(ARGS.threads)
    return module


def _randomize_batchnorm(model):
    """Running statistics away from (0, 1), so the comparison checks them."""
    rng = np.random.default_rng(0)
    for layer in _leaves(model):
        if isinstance(layer, (airi.BatchNorm1D, airi.BatchNorm2D)):
            c = layer.num_features
            layer.running_mean[...] = rng.normal(0, 0.2, c)
            layer.running_var[...] = rng.uniform(0.5, 2.0, c)


# ====================================================================== timing
def time_block(runner, x, calls, pause):
    """Seconds per call over ``calls`` calls, after a pause and one untimed call."""
    time.sleep(pause)
    runner(x)
    t0 = time.perf_counter()
    for _ in range(calls):
        runner(x)
    return (time.perf_counter() - t0) / calls


def calls_for(runner, x, budget):
    runner(x)
    t0 = time.perf_counter()
    runner(x)
    return max(2, int(budget / max(time.perf_counter() - t0, 1e-5)))


def bench(name, runners, shape):
    results = {}
    for batch in ARGS.batches:
        x = np.random.default_rng(batch).standard_normal((batch,) + shape)
        x = x.astype(np.float32)
        reference = runners["airi"](x) if "airi" in runners else None
        agreement = {}
        for c, r in runners.items():
            if reference is not None and c != "airi":
                scale = float(np.max(np.abs(reference))) or 1.0
                agreement[c] = float(np.max(np.abs(r(x) - reference))) / scale
        calls = {c: calls_for(r, x, ARGS.budget) for c, r in runners.items()}
        seconds = {c: [] for c in runners}
        for _ in range(ARGS.rounds):
            for c, r in runners.items():
                seconds[c].append(time_block(r, x, calls[c], ARGS.pause))
        res = {}
        for c in runners:
            sec = float(np.median(seconds[c]))
            res[c] = dict(images_per_s=batch / sec, ms_per_call=1e3 * sec, calls=calls[c],
                          rounds_images_per_s=[batch / s for s in seconds[c]],
                          max_rel_diff_vs_airi=agreement.get(c))
        results[batch] = res
        _print_batch(name, batch, res)
    return results


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _print_batch(name, batch, res):
    print(f"\n{name}, batch {batch}")
    print(f"  {'config':<7} {'images/s':>10} {'ms/call':>9} {'airi/this':>10} "
          f"{'max diff':>9}")
    airi_ips = res.get("airi", {}).get("images_per_s")
    for c, r in res.items():
        ratio = _ratio(airi_ips, r["images_per_s"])
        diff = r["max_rel_diff_vs_airi"]
        print(f"  {c:<7} {r['images_per_s']:10.0f} {r['ms_per_call']:9.3f} "
              f"{'-' if ratio is None else f'{ratio:.2f}x':>10} "
              f"{'-' if diff is None else f'{diff:.1e}':>9}", flush=True)


def summary(results):
    rows = []
    for name, per_batch in results.items():
        for batch, res in per_batch.items():
            get = lambda c: res[c]["images_per_s"] if c in res else None  # noqa: E731
            rows.append(dict(model=name, batch=batch,
                             airi_vs_ort=_ratio(get("airi"), get("ort")),
                             airi_vs_torch=_ratio(get("airi"), get("torch")),
                             ort_vs_torch=_ratio(get("ort"), get("torch"))))
    fmt = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
    print("\nratios (images/s)")
    print(f"  {'model':<11} {'batch':>5} {'airi/ort':>9} {'airi/torch':>11} "
          f"{'ort/torch':>10}")
    for r in rows:
        print(f"  {r['model']:<11} {r['batch']:>5} {fmt(r['airi_vs_ort']):>9} "
              f"{fmt(r['airi_vs_torch']):>11} {fmt(r['ort_vs_torch']):>10}")
    return rows


def main():
    if ARGS.quick:
        ARGS.rounds = min(ARGS.rounds, 2)
        ARGS.budget = min(ARGS.budget, 0.15)
        ARGS.pause = min(ARGS.pause, 0.05)
    zoo = airi.models.available_models()
    models = ARGS.models or ([m for m in ("lenet", "mlp") if m in zoo] if ARGS.quick
                             else [m for m in MODELS if m in zoo])
    unknown = [m for m in models if m not in zoo]
    if unknown:
        sys.exit(f"bench_inference.py: unknown models {unknown}; the zoo has {zoo}")
    airi.set_num_threads(ARGS.threads)
    configs = list(ARGS.configs)
    ort = _import("onnxruntime") if "ort" in configs else None
    if "ort" in configs and (ort is None or _import("onnx") is None):
        print("onnx / onnxruntime not installed: ort skipped")
        configs.remove("ort")
    torch = _import("torch") if "torch" in configs else None
    if "torch" in configs and torch is None:
        print("torch is not installed: skipped")
        configs.remove("torch")

    machine_line, info = _machine()
    print(f"airi inference throughput (eval mode), float32, {ARGS.threads} threads, "
          f"{ARGS.rounds} interleaved rounds (median); backend {airi.backend()}")
    print(machine_line)
    print("versions: " + ", ".join(
        f"{n} {m.__version__}" for n, m in (("airi", airi), ("onnxruntime", ort),
                                              ("torch", torch)) if m is not None))
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in models:
            airi.seed(0)
            model = airi.models.get_model(name)
            _randomize_batchnorm(model)
            shape = input_shape(model)
            runners = {}
            for c in configs:
                if c == "airi":
                    runners[c] = AiriRunner(model)
                elif c == "ort":
                    runners[c] = OrtRunner(ort, model, shape, workdir)
                else:
                    runners[c] = TorchRunner(torch, model)
            results[name] = bench(name, runners, shape)
    rows = summary(results)
    if ARGS.json:
        meta = dict(machine=info, threads=ARGS.threads, rounds=ARGS.rounds,
                    batches=ARGS.batches, backend=airi.backend(), airi=airi.__version__,
                    onnxruntime=getattr(ort, "__version__", None),
                    torch=getattr(torch, "__version__", None))
        with open(ARGS.json, "w") as f:
            json.dump(dict(meta=meta, results={m: {str(b): r for b, r in v.items()}
                                               for m, v in results.items()},
                           summary=rows), f, indent=2)
        print(f"wrote {ARGS.json}")


if __name__ == "__main__":
    main()
