"""NumPy twins vs compiled kernels: ms per call and the speed-up, per kernel and shape.

Each kernel runs through airi.functional (validation included, as the layers call it),
once on the "numpy" backend and once on "cython". Every timed block starts with an
untimed warm-up call and a short pause (so no thread of a previous block is still
spinning), and reports the median of ``--repeat`` calls.

Run:  python benchmarks/bench_kernels.py [--threads 2] [--repeat 7] [--json out.json]
Targets (issue 6): col2im >= 3x and max-pool forward+backward >= 5x faster than NumPy.

Run it on an otherwise idle machine: when other processes keep the cores busy, a
thread handing a slice of the batch to another waits for a time slice, and compiled
timings of a few tenths of a millisecond turn into outliers (``--threads 1`` is then
the fairer measurement).
"""
import argparse
import json
import os
import platform
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None,
                   help="threads of the compiled kernels (default: airi's default)")
    p.add_argument("--repeat", type=int, default=7, help="timed calls per cell (median)")
    p.add_argument("--pause", type=float, default=0.1, help="seconds of rest per block")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="fewer shapes (a smoke run)")
    return p.parse_args()


ARGS = _parse()
if ARGS.threads:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(ARGS.threads))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import airi  # noqa: E402
from airi import _backend  # noqa: E402
import machine  # noqa: E402
import airi.functional as F  # noqa: E402

# (N, C, H=W, k, pad), stride 1: the issue-6 conv shapes and the seed CIFAR conv2
CONV_SHAPES = [
    (128, 3, 32, 5, 0),
    (128, 32, 32, 3, 1),
    (64, 64, 16, 3, 1),
    (128, 16, 28, 5, 0),
]
# (N, C, H=W, k, stride): activations as they leave the conv layers above
POOL_SHAPES = [
    (128, 16, 28, 2, 2),
    (128, 32, 32, 2, 2),
    (64, 64, 16, 2, 2),
    (128, 16, 24, 3, 2),
    (64, 64, 16, 3, 2),
]


def median_ms(fn, repeat, pause):
    fn()  # untimed warm-up: first-touch allocations, thread start-up
    time.sleep(pause)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def conv_cases(rng, dtype):
    for N, C, H, k, p in CONV_SHAPES:
        x = rng.standard_normal((N, C, H, H)).astype(dtype)
        cols = F.im2col(x, k, 1, p)
        label = f"{N}x{C}x{H}x{H} k{k} p{p}"
        yield "im2col", label, lambda x=x, k=k, p=p: F.im2col(x, k, 1, p)
        yield "col2im", label, \
            lambda c=cols, s=x.shape, k=k, p=p: F.col2im(c, s, k, 1, p)


def pool_cases(rng, dtype):
    for N, C, H, k, s in POOL_SHAPES:
        x = rng.standard_normal((N, C, H, H)).astype(dtype)
        out, arg = F.max_pool2d_forward(x, k, s)
        dout = rng.standard_normal(out.shape).astype(dtype)
        label = f"{N}x{C}x{H}x{H} {k}x{k}/{s}"

        def fwd_bwd(x=x, k=k, s=s, dout=dout):
            o, a = F.max_pool2d_forward(x, k, s)
            return F.max_pool2d_backward(dout, a, x.shape, k, s)

        # argmax is recomputed per backend: the NumPy and compiled ones are equal anyway
        yield "maxpool fwd", label, lambda x=x, k=k, s=s: F.max_pool2d_forward(x, k, s)
        yield "maxpool bwd", label, lambda d=dout, a=arg, sh=x.shape, k=k, s=s: \
            F.max_pool2d_backward(d, a, sh, k, s)
        yield "maxpool fwd+bwd", label, fwd_bwd
        yield "avgpool fwd", label, lambda x=x, k=k, s=s: F.avg_pool2d_forward(x, k, s)
        yield "avgpool bwd", label, lambda d=dout, sh=x.shape, k=k, s=s: \
            F.avg_pool2d_backward(d, sh, k, s)


def main():
    if "cython" not in _backend.available_backends():
        sys.exit(f"compiled kernels missing: {_backend.compiled_error()}")
    if ARGS.threads:
        airi.set_num_threads(ARGS.threads)
    if ARGS.quick:
        CONV_SHAPES[:] = CONV_SHAPES[:1]
        POOL_SHAPES[:] = POOL_SHAPES[:2]
    dtype = np.dtype(ARGS.dtype)
    rng = np.random.default_rng(0)
    rows = []
    print(machine.describe())
    print(f"airi kernels, {dtype}, {airi.get_num_threads()} threads, "
          f"median of {ARGS.repeat} (ms)")
    header = f"{'kernel':<16} {'shape':<24} {'numpy':>9} {'compiled':>9} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    for cases in (conv_cases, pool_cases):
        for kernel, label, fn in cases(rng, dtype):
            with _backend.use_backend("numpy"):
                t_np = median_ms(fn, ARGS.repeat, ARGS.pause)
            with _backend.use_backend("cython"):
                t_cy = median_ms(fn, ARGS.repeat, ARGS.pause)
            rows.append(dict(kernel=kernel, shape=label, numpy_ms=round(t_np, 3),
                             compiled_ms=round(t_cy, 3), speedup=round(t_np / t_cy, 2)))
            print(f"{kernel:<16} {label:<24} {t_np:9.2f} {t_cy:9.2f} {t_np / t_cy:7.1f}x",
                  flush=True)
    if ARGS.json:
        meta = dict(dtype=str(dtype), threads=airi.get_num_threads(), repeat=ARGS.repeat,
                    numpy=np.__version__, python=platform.python_version(),
                    machine=machine.info())
        with open(ARGS.json, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=2)
        print(f"wrote {ARGS.json}")


if __name__ == "__main__":
    main()
