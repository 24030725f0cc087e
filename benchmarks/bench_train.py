"""End-to-end training speed: images/s per model for airi (NumPy fallback and compiled
kernels) and PyTorch (when importable), plus the peak memory of a training step.

Models (issue 6), float32, SGD(lr=0.01, momentum=0.9), cross-entropy, random data:

* ``airi_cifar``  seed 001's CIFAR-10 net (conv16-5, conv16-5, fc120, fc84, fc10), batch 128
* ``lenet``       ``airi.models.lenet`` on 28x28 digits, batch 64
* ``vgg_small``   ``airi.models.vgg_small`` (3 stages of 2 x [conv3, BN, ReLU] + pool), batch 128
* ``resnet20``    ``airi.models.resnet20`` (He et al.'s CIFAR ResNet: nested Residual
                  blocks, BatchNorm, projection shortcuts, global average pool), batch 128

The PyTorch twin of each model is built from the airi model itself (same layers, same
initial weights), so both frameworks train exactly the same architecture.

Speed: one airi step is ``Trainer.train_step`` (zero_grad, forward, loss, backward,
optimizer step, and the accuracy count the Trainer keeps); the torch step does the same
(``loss.item()`` and the accuracy count included). The configurations run
**interleaved**: round after round, each configuration gets a pause (so BLAS/OpenMP
threads of the previous one stop spinning), one untimed step, then ``--steps`` timed
steps. The median over rounds is reported, and ratios are taken between medians of the
same rounds, so slow drift of a shared machine cancels.

Memory: each (model, configuration) runs in a **fresh subprocess** (torch is imported
only for the torch configuration). After building the model and the data, the process
resets its peak-RSS counter (``/proc/self/clear_refs``), runs ``--mem-steps`` training
steps and reads ``VmHWM``. "step peak" is that peak minus the RSS just before the first
step: activations, gradients, optimizer state and workspaces of a training step
(allocator slack included), without the interpreter, libraries, model and data. The
absolute peak RSS of the process is shown too.

Run::

    python benchmarks/bench_train.py                    # all models, 2 threads
    python benchmarks/bench_train.py --quick            # a smoke run
    python benchmarks/bench_train.py --models lenet --threads 1 --json out.json
    python benchmarks/bench_train.py --threads 1 2 --configs compiled torch   # scaling

Targets (issue 6): compiled >= 1.0x torch, compiled >= 1.5x the NumPy fallback, step
peak memory <= 1.5x torch's.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = {  # name -> (batch size, input shape (C, H, W))
    "airi_cifar": (128, (3, 32, 32)),
    "lenet": (64, (1, 28, 28)),
    "vgg_small": (128, (3, 32, 32)),
    "resnet20": (128, (3, 32, 32)),
}
CONFIGS = ("numpy", "compiled", "torch", "im2col", "winograd")
LR, MOMENTUM = 0.01, 0.9


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--configs", nargs="+", default=list(CONFIGS[:3]), choices=list(CONFIGS),
                   help="im2col = compiled with the direct convolutions switched off; "
                        "winograd = compiled with Winograd 3x3 switched on")
    p.add_argument("--threads", type=int, nargs="+", default=[2],
                   help="threads for airi's kernels, BLAS and torch (default 2); several "
                        "(--threads 1 2) run interleaved and add a thread-scaling table")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per round and configuration (default: ~0.5 s worth)")
    p.add_argument("--pause", type=float, default=0.2, help="seconds of rest per block")
    p.add_argument("--mem-steps", type=int, default=3, help="steps of the memory runs")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--quick", action="store_true", help="2 rounds, few steps (smoke run)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--_memory-worker", nargs=2, metavar=("MODEL", "CONFIG"),
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS = _parse()
# BLAS and OpenMP read their thread counts when loaded: set them before importing NumPy.
MAX_THREADS = max(ARGS.threads)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(MAX_THREADS)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import airi  # noqa: E402
from airi import _backend, _planner  # noqa: E402
import machine  # noqa: E402


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(MAX_THREADS)
    return torch


def set_threads(threads, torch=None):
    """airi's threads (and BLAS's, through threadpoolctl) and torch's."""
    airi.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)


# ================================================================== the models
def airi_model(name):
    airi.seed(0)
    return airi.models.get_model(name)


def torch_twin(torch, model):
    """The PyTorch module with the same layers and initial weights as ``model`` (nested
    Sequentials and Residual blocks included)."""
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    def twin(layer):
        kind = type(layer).__name__
        if kind == "Sequential":
            return nn.Sequential(*[twin(inner) for inner in layer])
        if kind == "Residual":
            return Residual(twin(layer.body),
                            None if layer.shortcut is None else twin(layer.shortcut))
        if kind == "Conv2D":
            t = nn.Conv2d(layer.in_channels, layer.num_filters, layer.filter_size,
                          stride=layer.stride, padding=layer.pad, bias=layer.bias)
            t.weight.data = torch.from_numpy(layer.W.data.copy())
            if layer.bias:
                t.bias.data = torch.from_numpy(layer.b.data.copy())
            return t
        if kind == "Linear":
            t = nn.Linear(layer.input_size, layer.hidden_size, bias=layer.bias)
            t.weight.data = torch.from_numpy(layer.W.data.T.copy())  # torch: (out, in)
            if layer.bias:
                t.bias.data = torch.from_numpy(layer.b.data.copy())
            return t
        if kind == "BatchNorm2D":
            return nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
        if kind in ("Relu", "ReLU"):
            return nn.ReLU()
        if kind == "MaxPool2D":
            return nn.MaxPool2d(layer.pool_size, layer.stride)
        if kind == "AvgPool2D":
            return nn.AvgPool2d(layer.pool_size, layer.stride)
        if kind == "GlobalAvgPool2D":
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        if kind == "Flatten":
            return nn.Flatten()
        raise NotImplementedError(f"no torch twin for {kind}")

    return twin(model)


def make_data(name, seed=0):
    """A few random batches (cycled, so no single batch sits in cache)."""
    batch, shape = MODELS[name]
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch,) + shape).astype(np.float32),
             rng.integers(0, 10, batch).astype(np.int64)) for _ in range(4)]


class AiriRunner:
    """``step()`` = one ``Trainer.train_step`` on the next batch, on one backend."""

    def __init__(self, name, backend, direct=True, winograd=False):
        self.backend, self.direct, self.winograd = backend, direct, winograd
        self.model = airi_model(name)
        opt = airi.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.trainer = airi.Trainer(self.model, airi.CrossEntropyLoss(), opt)
        self.data, self.i = make_data(name), 0

    def step(self):
        xb, yb = self.data[self.i % len(self.data)]
        self.i += 1
        previous = _planner.set_direct_conv(self.direct)
        previous_winograd = _planner.set_winograd(self.winograd)
        try:
            with _backend.use_backend(self.backend):
                self.trainer.train_step(xb, yb)
        finally:
            _planner.set_direct_conv(previous)
            _planner.set_winograd(previous_winograd)


class TorchRunner:
    """``step()`` = zero_grad, forward, loss, backward, SGD step, loss.item(), accuracy."""

    def __init__(self, torch, name):
        self.torch = torch
        self.model = torch_twin(torch, airi_model(name)).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.loss = torch.nn.CrossEntropyLoss()
        self.data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in make_data(name)]
        self.i = 0

    def step(self):
        xb, yb = self.data[self.i % len(self.data)]
        self.i += 1
        self.opt.zero_grad(set_to_none=True)
        out = self.model(xb)
        loss = self.loss(out, yb)
        loss.backward()
        self.opt.step()
        float(loss.item())
        int((out.argmax(1) == yb).sum())


def make_runner(name, config, torch=None):
    if config == "torch":
        return TorchRunner(torch, name)
    # "im2col": compiled kernels with the direct convolutions switched off (before/after)
    # "winograd": compiled kernels with the (opt-in) Winograd 3x3 convolution on
    return AiriRunner(name, "numpy" if config == "numpy" else "cython",
                      direct=config != "im2col", winograd=config == "winograd")


# ====================================================================== memory
def _proc_status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_worker(name, config):
    """Runs in a subprocess: prints JSON {rss_before_mb, peak_mb, step_peak_mb}."""
    torch = _import_torch() if config == "torch" else None
    if config == "compiled" and "cython" not in _backend.available_backends():
        print(json.dumps(None))
        return
    set_threads(MAX_THREADS, torch)
    runner = make_runner(name, config, torch)
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    before = _proc_status_kb("VmRSS")
    for _ in range(ARGS.mem_steps):
        runner.step()
    peak = _proc_status_kb("VmHWM")
    print(json.dumps(dict(rss_before_mb=before / 1024, peak_mb=peak / 1024,
                          step_peak_mb=(peak - before) / 1024)))


def measure_memory(name, config):
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(MAX_THREADS),
           "--mem-steps", str(ARGS.mem_steps), "--_memory-worker", name, config]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        print(f"  memory run {name}/{config} failed: {exc}", file=sys.stderr)
        return None


# ======================================================================= speed
def time_block(runner, steps, pause, threads, torch):
    """Seconds per step over ``steps`` steps on ``threads`` threads, after a pause and
    one untimed step."""
    set_threads(threads, torch)
    time.sleep(pause)
    runner.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        runner.step()
    return (time.perf_counter() - t0) / steps


def steps_for(runner, budget):
    """Enough steps for about ``budget`` seconds (at least 2)."""
    runner.step()
    t0 = time.perf_counter()
    runner.step()
    return max(2, int(budget / max(time.perf_counter() - t0, 1e-4)))


def bench_model(name, configs, torch):
    """{threads: {config: result}}: every (config, thread count) block interleaved in
    each round."""
    batch = MODELS[name][0]
    runners = {c: make_runner(name, c, torch) for c in configs}
    budget = 0.25 if ARGS.quick else 0.6
    set_threads(MAX_THREADS, torch)
    steps = {c: ARGS.steps or steps_for(r, budget) for c, r in runners.items()}
    per_step = {(t, c): [] for t in ARGS.threads for c in configs}
    for _ in range(ARGS.rounds):
        for t in ARGS.threads:
            for c in configs:
                per_step[t, c].append(time_block(runners[c], steps[c], ARGS.pause, t,
                                                 torch))
    result = {}
    for t in ARGS.threads:
        result[t] = {}
        for c in configs:
            sec = float(np.median(per_step[t, c]))
            result[t][c] = dict(images_per_s=batch / sec, ms_per_step=1e3 * sec,
                                steps=steps[c],
                                rounds_images_per_s=[batch / s for s in per_step[t, c]])
    return result


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def main():
    if ARGS._memory_worker:
        memory_worker(*ARGS._memory_worker)
        return
    if ARGS.quick:
        ARGS.rounds = min(ARGS.rounds, 2)
        ARGS.pause = min(ARGS.pause, 0.1)
        ARGS.mem_steps = min(ARGS.mem_steps, 2)
    set_threads(MAX_THREADS)
    configs = list(ARGS.configs)
    for needs_compiled in ("im2col", "winograd"):
        if "cython" not in _backend.available_backends() and needs_compiled in configs:
            configs.remove(needs_compiled)
    if "compiled" in configs and "cython" not in _backend.available_backends():
        print(f"compiled kernels missing ({_backend.compiled_error()}): skipped")
        configs.remove("compiled")
    torch = _import_torch() if "torch" in configs else None
    if torch is None and "torch" in configs:
        print("torch is not installed: skipped")
        configs.remove("torch")

    print(machine.describe())
    print(f"airi training throughput, float32, threads {ARGS.threads}, SGD momentum, "
          f"{ARGS.rounds} interleaved rounds (median)"
          + (f", torch {torch.__version__}" if torch else ""))
    results = {}
    for name in ARGS.models:
        results[name] = bench_model(name, configs, torch)
        if not ARGS.no_memory:
            for c in configs:
                results[name][MAX_THREADS][c]["memory"] = measure_memory(name, c)
        for t in ARGS.threads:
            _print_model(name, results[name][t], configs, t)

    summary = {t: _summary({n: r[t] for n, r in results.items()}, configs)
               for t in ARGS.threads}
    for t in ARGS.threads:
        _print_summary(summary[t], t)
    scaling = _scaling(results, configs) if len(ARGS.threads) > 1 else None
    if scaling:
        _print_scaling(scaling)
    if ARGS.json:
        meta = dict(threads=ARGS.threads, rounds=ARGS.rounds, numpy=np.__version__,
                    torch=getattr(torch, "__version__", None), airi=airi.__version__,
                    machine=machine.info(), memory_method="fresh subprocess; VmHWM "
                    f"after clear_refs minus VmRSS before the first step, "
                    f"{MAX_THREADS} threads")
        with open(ARGS.json, "w") as f:
            json.dump(dict(meta=meta, results=results, summary=summary, scaling=scaling),
                      f, indent=2)
        print(f"wrote {ARGS.json}")


def _scaling(results, configs):
    """Per model and config: images/s at each thread count and the ratio of the most
    threads to the fewest (within the same interleaved rounds)."""
    lo, hi = min(ARGS.threads), max(ARGS.threads)
    rows = []
    for name, res in results.items():
        for c in configs:
            rows.append(dict(model=name, config=c,
                             images_per_s={t: res[t][c]["images_per_s"]
                                           for t in ARGS.threads},
                             speedup=_ratio(res[hi][c]["images_per_s"],
                                            res[lo][c]["images_per_s"])))
    return rows


def _print_scaling(rows):
    lo, hi = min(ARGS.threads), max(ARGS.threads)
    print(f"\nthread scaling (images/s; speed-up = {hi} threads / {lo})")
    cols = "".join(f"{str(t) + ' thr':>10}" for t in ARGS.threads)
    print(f"  {'model':<11} {'config':<10}{cols} {'speed-up':>9}")
    for r in rows:
        vals = "".join(f"{r['images_per_s'][t]:10.0f}" for t in ARGS.threads)
        speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"  {r['model']:<11} {r['config']:<10}{vals} {speedup:>9}")


def _print_model(name, res, configs, threads):
    batch = MODELS[name][0]
    print(f"\n{name} (batch {batch}, {threads} threads)")
    header = (f"  {'config':<10} {'images/s':>9} {'ms/step':>8} {'step peak MB':>13} "
              f"{'peak RSS MB':>12}")
    print(header)
    for c in configs:
        r = res[c]
        mem = r.get("memory") or {}
        step_peak = f"{mem['step_peak_mb']:.0f}" if mem else "-"
        peak = f"{mem['peak_mb']:.0f}" if mem else "-"
        print(f"  {c:<10} {r['images_per_s']:9.0f} {r['ms_per_step']:8.1f} "
              f"{step_peak:>13} {peak:>12}", flush=True)


def _summary(results, configs):
    rows = []
    for name, res in results.items():
        get = lambda c, k="images_per_s": res[c][k] if c in res else None  # noqa: E731
        mem = lambda c: (res[c].get("memory") or {}).get("step_peak_mb") \
            if c in res else None  # noqa: E731
        rows.append(dict(
            model=name,
            compiled_vs_torch=_ratio(get("compiled"), get("torch")),
            compiled_vs_numpy=_ratio(get("compiled"), get("numpy")),
            compiled_vs_im2col=_ratio(get("compiled"), get("im2col")),
            winograd_vs_compiled=_ratio(get("winograd"), get("compiled")),
            winograd_vs_torch=_ratio(get("winograd"), get("torch")),
            numpy_vs_torch=_ratio(get("numpy"), get("torch")),
            memory_compiled_vs_torch=_ratio(mem("compiled"), mem("torch")),
            memory_numpy_vs_torch=_ratio(mem("numpy"), mem("torch")),
        ))
    return rows


def _print_summary(rows, threads):
    fmt = lambda v, suffix="x": "-" if v is None else f"{v:.2f}{suffix}"  # noqa: E731
    print(f"\nratios, {threads} threads (images/s; memory = step peak)")
    print(f"  {'model':<11} {'compiled/torch':>15} {'compiled/numpy':>15} "
          f"{'numpy/torch':>12} {'mem compiled/torch':>19} {'mem numpy/torch':>16}")
    for r in rows:
        print(f"  {r['model']:<11} {fmt(r['compiled_vs_torch']):>15} "
              f"{fmt(r['compiled_vs_numpy']):>15} {fmt(r['numpy_vs_torch']):>12} "
              f"{fmt(r['memory_compiled_vs_torch']):>19} "
              f"{fmt(r['memory_numpy_vs_torch']):>16}")
        if r["compiled_vs_im2col"] is not None:
            print(f"  {'':<11} compiled (direct conv) / im2col only: "
                  f"{fmt(r['compiled_vs_im2col'])}")
        if r["winograd_vs_compiled"] is not None:
            print(f"  {'':<11} with Winograd / compiled: {fmt(r['winograd_vs_compiled'])}"
                  f"; with Winograd / torch: {fmt(r['winograd_vs_torch'])}")


if __name__ == "__main__":
    main()
