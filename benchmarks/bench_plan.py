"""Check the planner's direct-convolution rules on this machine: for each shape and
pass, the direct kernel against im2col + GEMM, and whether the rule picked the winner.

Each pass is timed with the planner forced both ways (``airi._planner.conv_plan``
replaced for the call), interleaved round after round, median of all calls:

* forward: ``conv2d_forward``;
* dx: ``conv2d_backward`` with dW on im2col + GEMM in both, so the difference is dx's;
* dW: ``conv2d_backward(..., input_grad=False)``.

Run:  python benchmarks/bench_plan.py [--threads 2] [--rounds 5] [--json out.json]
"""
import argparse
import json
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.05)
    p.add_argument("--shapes", nargs="+", metavar="N,C,H,F,k,pad",
                   help="only these shapes (default: the list in the script)")
    p.add_argument("--json", metavar="PATH")
    return p.parse_args()


ARGS = _parse()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import airi  # noqa: E402
import airi.functional as F  # noqa: E402
from airi import _backend, _planner  # noqa: E402
import machine  # noqa: E402

# (N, C, H=W, F, k, pad), stride 1: the shapes behind the rules (benchmarks/README.md)
SHAPES = [
    (128, 3, 32, 16, 5, 0), (128, 16, 14, 16, 5, 0), (64, 16, 14, 32, 5, 0),
    (128, 16, 28, 16, 5, 0), (128, 16, 32, 16, 3, 1), (128, 16, 32, 32, 3, 1),
    (128, 32, 32, 32, 3, 1), (128, 32, 16, 32, 3, 1), (128, 32, 28, 32, 5, 0),
    (64, 64, 16, 64, 3, 1), (128, 64, 8, 128, 3, 1), (128, 128, 8, 128, 3, 1),
    (64, 1, 28, 16, 5, 2),
]


def timed(fn):
    time.sleep(ARGS.pause)
    fn()
    out = []
    for _ in range(ARGS.repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def forced(plan, fn):
    """Run ``fn`` with the planner answering ``plan`` for every convolution."""
    real = _planner.conv_plan
    _planner.conv_plan = lambda *args: _planner.ConvPlan(*plan)
    try:
        return fn()
    finally:
        _planner.conv_plan = real


def main():
    if "cython" not in _backend.available_backends():
        sys.exit(f"compiled kernels missing: {_backend.compiled_error()}")
    airi.set_num_threads(ARGS.threads)
    print(machine.describe())
    print(f"direct convolution vs im2col + GEMM, float32, {ARGS.threads} threads, "
          f"median of {ARGS.rounds} rounds x {ARGS.repeat} calls (ms)")
    print(f"{'N,C,H,F,k,pad':<20} {'pass':<8} {'gemm':>8} {'direct':>8} {'winner':>7} "
          f"{'rule':>7} {'agree':>6}")
    rng = np.random.default_rng(0)
    rows = []
    shapes = [tuple(int(v) for v in s.split(",")) for s in ARGS.shapes] \
        if ARGS.shapes else SHAPES
    for shape in shapes:
        N, C, H, Fo, k, p = shape
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        W = rng.standard_normal((Fo, C, k, k)).astype(np.float32) * 0.1
        dout = rng.standard_normal((N, Fo, H + 2 * p - k + 1, H + 2 * p - k + 1)) \
            .astype(np.float32)
        rule = _planner.direct_passes(np.float32, C, Fo, (k, k), (1, 1), (p, p), H, H)
        passes = {
            "forward": (lambda: F.conv2d_forward(x, W, None, 1, p), 0),
            "dx": (lambda: F.conv2d_backward(dout, x, W, 1, p), 1),
            "dW": (lambda: F.conv2d_backward(dout, x, W, 1, p, input_grad=False), 2),
        }
        for name, (fn, index) in passes.items():
            if name == "dx" and (C % 16 or p > k - 1):
                continue            # the direct dx kernel does not take this shape
            if name == "dW" and k not in (3, 5, 7):
                continue
            plans = {}
            for algorithm in ("gemm", "direct"):
                plan = ["gemm", "gemm", "gemm"]
                plan[index] = algorithm
                plans[algorithm] = tuple(plan)
            times = {a: [] for a in plans}
            for _ in range(ARGS.rounds):
                for a, plan in plans.items():
                    times[a] += forced(plan, lambda: timed(fn))
            ms = {a: 1e3 * float(np.median(t)) for a, t in times.items()}
            winner = "direct" if ms["direct"] < ms["gemm"] else "gemm"
            chosen = "direct" if rule[index] else "gemm"
            rows.append(dict(shape=shape, pass_=name, gemm_ms=ms["gemm"],
                             direct_ms=ms["direct"], winner=winner, rule=chosen))
            print(f"{','.join(map(str, shape)):<20} {name:<8} {ms['gemm']:8.2f} "
                  f"{ms['direct']:8.2f} {winner:>7} {chosen:>7} "
                  f"{'yes' if winner == chosen else 'NO':>6}", flush=True)
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(dict(machine=machine.info(), threads=ARGS.threads, rows=rows), f,
                      indent=2)
        print(f"wrote {ARGS.json}")


if __name__ == "__main__":
    main()
