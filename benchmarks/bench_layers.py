"""Layer speed: Conv2D, MaxPool2D and AvgPool2D forward and backward, airi against
PyTorch (when importable), in ms and GFLOP/s.

For each layer and shape, airi's layer (the public ``airi.Conv2D`` etc., validation
included, on the compiled kernels and optionally on the NumPy fallback) and the same
operation in PyTorch (``torch.nn.functional.conv2d`` / ``max_pool2d`` / ``avg_pool2d``
forward; ``torch.ops.aten.convolution_backward`` etc. for the backward pass, which like
airi's computes dx, dW and db) run **interleaved**: round after round, every
implementation gets a pause (so threads left spinning by the previous one stop), one
untimed call, then ``--repeat`` timed calls. The median of all timed calls is reported.

GFLOP/s counts 2*N*F*C*kh*kw*Ho*Wo for a convolution's forward pass and twice that
for its backward pass (dW and dx); pooling reports ms only. "torch/airi" > 1 means airi
is faster. Before the layers the benchmark measures the machine's large-SGEMM rate
(NumPy's BLAS, a 2048^3 float32 product on the same threads) and prints each Conv2D
pass's GFLOP/s as a percentage of it ("%sgemm"); the plan column says which algorithm
airi's planner ran for the pass (gemm = im2col + GEMM, the GEMM-bound ones).

Run::

    python benchmarks/bench_layers.py                  # 2 threads, compiled kernels
    python benchmarks/bench_layers.py --numpy          # add the NumPy fallback column
    python benchmarks/bench_layers.py --quick --json out.json

Target (issue 6): Conv2D forward+backward >= 1.0x PyTorch on the first three shapes.
"""
import argparse
import json
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="threads for airi, BLAS, torch")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--repeat", type=int, default=5, help="timed calls per block")
    p.add_argument("--pause", type=float, default=0.1, help="seconds of rest per block")
    p.add_argument("--numpy", action="store_true", help="also time the NumPy fallback")
    p.add_argument("--im2col", action="store_true",
                   help="also time Conv2D with the direct convolutions switched off")
    p.add_argument("--no-torch", action="store_true", help="do not import torch")
    p.add_argument("--quick", action="store_true", help="fewer shapes and calls")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args()


ARGS = _parse()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import airi  # noqa: E402
import airi.functional  # noqa: E402
from airi import _backend, _planner  # noqa: E402
import machine  # noqa: E402

# (N, C, H=W, F, k, pad), stride 1: issue 6's three shapes, then the seed CIFAR conv2,
# LeNet's conv2, VGG's deepest conv and a 1x1 conv
CONV_SHAPES = [
    (128, 3, 32, 16, 5, 0),
    (128, 32, 32, 32, 3, 1),
    (64, 64, 16, 64, 3, 1),
    (128, 16, 28, 16, 5, 0),
    (64, 16, 14, 32, 5, 0),
    (128, 128, 8, 128, 3, 1),
    (128, 64, 16, 64, 1, 0),
]
# (kind, N, C, H=W, k, stride): activations as they leave the conv layers
POOL_SHAPES = [
    ("max", 128, 32, 32, 2, 2),
    ("max", 64, 16, 28, 2, 2),
    ("max", 128, 16, 24, 3, 2),
    ("avg", 128, 32, 32, 2, 2),
]


def _import_torch():
    if ARGS.no_torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(ARGS.threads)
    return torch


def timed_block(fn, repeat, pause):
    """Pause, one untimed call, then ``repeat`` timed calls: list of seconds."""
    time.sleep(pause)
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def interleaved(impls, rounds, repeat, pause):
    """impls: name -> fn. Returns name -> median ms over every timed call."""
    times = {name: [] for name in impls}
    for _ in range(rounds):
        for name, fn in impls.items():
            times[name] += timed_block(fn, repeat, pause)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def sgemm_rate(threads, size=2048, repeat=5):
    """GFLOP/s of a large float32 GEMM (size^3) in NumPy's BLAS on ``threads`` threads:
    the machine's practical peak for the GEMMs airi's convolutions make."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    out = np.empty((size, size), np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b, out=out)
        best = min(timed_block(lambda: np.matmul(a, b, out=out), repeat, ARGS.pause))
    return 2.0 * size ** 3 / best / 1e9


# ----------------------------------------------------------------------- cases
def conv_case(torch, shape, rng, backends):
    N, C, H, F, k, p = shape
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    layer = airi.Conv2D(C, F, k, pad=p)
    Ho = H + 2 * p - k + 1
    dout = rng.standard_normal((N, F, Ho, Ho)).astype(np.float32)
    impls_fwd, impls_bwd = {}, {}
    # "im2col": the compiled kernels with the direct convolutions switched off
    extra = ["im2col"] if ARGS.im2col and "cython" in backends else []
    for name in backends + extra:
        be, direct = ("cython", False) if name == "im2col" else (name, True)

        def fwd(be=be, direct=direct):
            previous = _planner.set_direct_conv(direct)
            try:
                with _backend.use_backend(be):
                    return layer.forward(x, training=True)
            finally:
                _planner.set_direct_conv(previous)

        def bwd(be=be, direct=direct):
            previous = _planner.set_direct_conv(direct)
            try:
                with _backend.use_backend(be):
                    layer.forward(x, training=True) if layer.x is None else None
                    return layer.backward(dout)
            finally:
                _planner.set_direct_conv(previous)
        impls_fwd[name], impls_bwd[name] = fwd, bwd
    if torch is not None:
        xt, wt = torch.from_numpy(x), torch.from_numpy(layer.W.data.copy())
        bt, dt = torch.from_numpy(layer.b.data.copy()), torch.from_numpy(dout)
        conv_bwd = torch.ops.aten.convolution_backward
        impls_fwd["torch"] = lambda: torch.nn.functional.conv2d(xt, wt, bt, padding=p)
        impls_bwd["torch"] = lambda: conv_bwd(dt, xt, wt, [F], [1, 1], [p, p], [1, 1],
                                              False, [0, 0], 1, [True, True, True])
    flops = 2.0 * N * F * C * k * k * Ho * Ho
    label = f"Conv2D {N}x{C}x{H}x{H} F{F} k{k} p{p}"
    with _backend.use_backend(backends[0]):
        plan = airi.functional.conv2d_plan(x, layer.W.data, 1, p)
    return label, impls_fwd, impls_bwd, flops, plan


def pool_case(torch, spec, rng, backends):
    kind, N, C, H, k, s = spec
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    layer = (airi.MaxPool2D if kind == "max" else airi.AvgPool2D)(k, s)
    Ho = (H - k) // s + 1
    dout = rng.standard_normal((N, C, Ho, Ho)).astype(np.float32)
    impls_fwd, impls_bwd = {}, {}
    for be in backends:
        def fwd(be=be):
            with _backend.use_backend(be):
                return layer.forward(x, training=True)

        def bwd(be=be):
            with _backend.use_backend(be):
                layer.forward(x, training=True)  # the argmax must come from this backend
                return layer.backward(dout)
        impls_fwd[be], impls_bwd[be] = fwd, bwd
    if torch is not None:
        xt, dt = torch.from_numpy(x), torch.from_numpy(dout)
        F = torch.nn.functional
        if kind == "max":
            impls_fwd["torch"] = lambda: F.max_pool2d(xt, k, s)
            _, idx = torch.ops.aten.max_pool2d_with_indices(xt, [k, k], [s, s])

            def tb():
                torch.ops.aten.max_pool2d_with_indices(xt, [k, k], [s, s])
                return torch.ops.aten.max_pool2d_with_indices_backward(
                    dt, xt, [k, k], [s, s], [0, 0], [1, 1], False, idx)
        else:
            impls_fwd["torch"] = lambda: F.avg_pool2d(xt, k, s)

            def tb():
                torch.ops.aten.avg_pool2d(xt, [k, k], [s, s])
                return torch.ops.aten.avg_pool2d_backward(dt, xt, [k, k], [s, s], [0, 0],
                                                          False, True, None)
        impls_bwd["torch"] = tb
    label = f"{'MaxPool2D' if kind == 'max' else 'AvgPool2D'} {N}x{C}x{H}x{H} {k}x{k}/{s}"
    return label, impls_fwd, impls_bwd, None, None


def main():
    torch = _import_torch()
    airi.set_num_threads(ARGS.threads)
    backends = ["cython"] if "cython" in _backend.available_backends() else []
    if ARGS.numpy or not backends:
        backends.append("numpy")
    if ARGS.quick:
        CONV_SHAPES[:] = CONV_SHAPES[:3]
        POOL_SHAPES[:] = POOL_SHAPES[:2]
        ARGS.rounds, ARGS.repeat = min(ARGS.rounds, 2), min(ARGS.repeat, 3)
    names = backends + (["im2col"] if ARGS.im2col and "cython" in backends else []) + \
        (["torch"] if torch is not None else [])
    print(machine.describe())
    print(f"airi layers, float32, {ARGS.threads} threads, median of {ARGS.rounds} "
          f"interleaved rounds x {ARGS.repeat} calls"
          + (f", torch {torch.__version__}" if torch else " (torch not installed)"))
    peak = sgemm_rate(ARGS.threads)
    print(f"large SGEMM (2048^3, NumPy's BLAS, {ARGS.threads} threads): {peak:.0f} GFLOP/s")
    airi.set_num_threads(ARGS.threads)
    head = f"{'layer':<36} {'pass':<8}" + "".join(f"{n + ' ms':>11}" for n in names)
    head += f"{'GFLOP/s':>9}{'%sgemm':>8}{'plan':>13}" + \
        (f"{'torch/airi':>11}" if torch else "")
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    rows = []
    cases = [conv_case(torch, s, rng, backends) for s in CONV_SHAPES] + \
            [pool_case(torch, s, rng, backends) for s in POOL_SHAPES]
    main_impl = backends[0]
    for label, fwd, bwd, flops, plan in cases:
        ms_f = interleaved(fwd, ARGS.rounds, ARGS.repeat, ARGS.pause)
        ms_b = interleaved(bwd, ARGS.rounds, ARGS.repeat, ARGS.pause)
        ms_fb = {n: ms_f[n] + ms_b[n] for n in ms_f}
        passes = {"fwd": plan and plan.forward,
                  "bwd": plan and "/".join(sorted({plan.dx, plan.dw})), "fwd+bwd": ""}
        for pass_, ms, fl in (("fwd", ms_f, flops), ("bwd", ms_b, flops and 2 * flops),
                              ("fwd+bwd", ms_fb, flops and 3 * flops)):
            gflops = fl / (ms[main_impl] * 1e6) if fl else None
            ratio = ms["torch"] / ms[main_impl] if torch else None
            share = 100 * gflops / peak if gflops else None
            rows.append(dict(layer=label, pass_=pass_, gflops=gflops, torch_over_airi=ratio,
                             percent_of_sgemm=share, plan=passes[pass_] or None,
                             **{f"{n}_ms": ms[n] for n in names if n in ms}))
            line = f"{label if pass_ == 'fwd' else '':<36} {pass_:<8}"
            line += "".join(f"{ms[n]:11.2f}" if n in ms else f"{'-':>11}" for n in names)
            line += f"{gflops:9.0f}{share:7.0f}%" if gflops else f"{'':>17}"
            line += f"{passes[pass_] or '':>13}"
            line += f"{ratio:10.2f}x" if ratio else ""
            print(line, flush=True)
    if ARGS.json:
        meta = dict(threads=ARGS.threads, rounds=ARGS.rounds, repeat=ARGS.repeat,
                    numpy=np.__version__, torch=getattr(torch, "__version__", None),
                    machine=machine.info(), backends=backends, sgemm_gflops=peak)
        with open(ARGS.json, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=2)
        print(f"wrote {ARGS.json}")


if __name__ == "__main__":
    main()
