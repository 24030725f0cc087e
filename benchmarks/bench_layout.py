"""Which column layout makes the convolution's GEMMs cheapest?

Compares, with the same compiled im2col/col2im kernels, three layouts of the column
matrix for a convolution layer x (N, C, H, W) * W (F, C, kh, kw) -> out (N, F, Ho, Wo),
with W2 = W.reshape(F, CKK), CKK = C*kh*kw, P = Ho*Wo:

(a) per-sample  cols (N, CKK, P): out = matmul(W2, cols) is (N, F, P), already NCHW;
    dW = sum_n dout[n] @ cols[n].T, dcols = matmul(W2.T, dout).        [airi's choice]
(b) cs231n      cols (CKK, N*P): one big GEMM W2 @ cols -> (F, N*P), then a transposing
    copy to NCHW; backward transposes dout to (F, N*P) first.
(c) rows        cols (N*P, CKK): cols @ W2.T -> (N*P, F) = NHWC, then a copy to NCHW;
    backward copies dout to NHWC first.

Forward = im2col + GEMM + reshapes/copies to NCHW; backward = the copies of dout +
GEMMs for dW and dcols + col2im. Layouts (b) and (c) write/read their columns through
``im2col_into`` / ``col2im_into`` (airi._backend's compiled namespace, one thread) on
strided views, so the kernels are identical.
For (c) the kernel writes each column run with a stride of CKK (a native rows-layout
kernel would gather instead of scatter; the cost is of the same order).

Run:  python benchmarks/bench_layout.py [--threads 2] [--repeat 7] [--dtype float32]
"""
import argparse
import json
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="BLAS threads (the kernels run on one)")
    p.add_argument("--repeat", type=int, default=7, help="timed repeats (median kept)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--pause", type=float, default=0.2,
                   help="seconds of rest before each timed block (lets BLAS threads sleep)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the first shape, 2 repeats, no pause")
    p.add_argument("--json", metavar="PATH", help="also write the results to this file")
    args = p.parse_args()
    if args.quick:
        args.repeat, args.pause = 2, 0.0
    return args


ARGS = _parse()
# BLAS reads its thread count when NumPy is imported.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import airi  # noqa: E402
from airi import _backend  # noqa: E402
import machine  # noqa: E402

if "cython" not in _backend.available_backends():
    sys.exit(f"compiled kernels missing: {_backend.compiled_error()}")

# (N, C, H=W, F, k, pad): the issue-6 conv shapes and the seed CIFAR conv2
SHAPES = [
    (128, 3, 32, 16, 5, 0),
    (128, 32, 32, 32, 3, 1),
    (64, 64, 16, 64, 3, 1),
    (128, 16, 28, 16, 5, 0),
]


class Layout:
    """One layout: forward(x, W2) -> out NCHW and backward(dout) -> (dW2, dx)."""

    def __init__(self, shape, threads):
        N, C, H, F, k, p = shape
        self.N, self.C, self.H, self.F, self.k, self.p = N, C, H, F, k, p
        self.Ho = H + 2 * p - k + 1
        self.P, self.CKK = self.Ho * self.Ho, C * k * k
        self.threads = threads

    def _im2col(self, x, view):
        k, p = self.k, self.p
        _backend.kernels().im2col_into(x, view, (k, k), (1, 1), (p, p))

    def _col2im(self, view, dtype):
        k, p = self.k, self.p
        dx = np.empty((self.N, self.C, self.H, self.H), dtype=dtype)
        _backend.kernels().col2im_into(view, dx, (k, k), (1, 1), (p, p))
        return dx


class PerSample(Layout):
    name = "(a) per-sample (N,CKK,P)"

    def forward(self, x, W2):
        self.W2 = W2
        self.cols = np.empty((self.N, self.CKK, self.P), dtype=x.dtype)
        self._im2col(x, self.cols)
        out = np.matmul(W2, self.cols)                      # (N, F, P)
        return out.reshape(self.N, self.F, self.Ho, self.Ho)

    def backward(self, dout):
        d = dout.reshape(self.N, self.F, self.P)
        dW2 = np.matmul(d, self.cols.transpose(0, 2, 1)).sum(axis=0)
        dcols = np.matmul(self.W2.T, d)                     # (N, CKK, P)
        return dW2, self._col2im(dcols, dout.dtype)


class Cs231n(Layout):
    name = "(b) cs231n (CKK,N*P)"

    def forward(self, x, W2):
        self.W2 = W2
        self.cols = np.empty((self.CKK, self.N, self.P), dtype=x.dtype)
        self._im2col(x, self.cols.transpose(1, 0, 2))
        out = W2 @ self.cols.reshape(self.CKK, self.N * self.P)     # (F, N*P)
        out = out.reshape(self.F, self.N, self.Ho, self.Ho).transpose(1, 0, 2, 3)
        return np.ascontiguousarray(out)

    def backward(self, dout):
        d = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(self.F, -1)
        cols = self.cols.reshape(self.CKK, self.N * self.P)
        dW2 = d @ cols.T
        dcols = (self.W2.T @ d).reshape(self.CKK, self.N, self.P)
        return dW2, self._col2im(dcols.transpose(1, 0, 2), dout.dtype)


class Rows(Layout):
    name = "(c) rows (N*P,CKK)"

    def forward(self, x, W2):
        self.W2 = W2
        self.cols = np.empty((self.N, self.P, self.CKK), dtype=x.dtype)
        self._im2col(x, self.cols.transpose(0, 2, 1))
        out = self.cols.reshape(self.N * self.P, self.CKK) @ W2.T   # (N*P, F) NHWC
        out = out.reshape(self.N, self.Ho, self.Ho, self.F).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out)

    def backward(self, dout):
        d = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(-1, self.F)
        cols = self.cols.reshape(self.N * self.P, self.CKK)
        dW2 = d.T @ cols
        dcols = (d @ self.W2).reshape(self.N, self.P, self.CKK)
        return dW2, self._col2im(dcols.transpose(0, 2, 1), dout.dtype)


def _median_ms(fn, repeat, pause):
    fn()                                  # untimed warm-up (allocations, BLAS threads)
    time.sleep(pause)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    airi.set_num_threads(ARGS.threads)
    dtype = np.dtype(ARGS.dtype)
    rng = np.random.default_rng(0)
    layouts = [PerSample, Cs231n, Rows]
    totals = {cls.name: 0.0 for cls in layouts}
    print(machine.describe())
    print(f"dtype {dtype}, {ARGS.threads} threads, median of {ARGS.repeat}; ms")
    print(f"{'shape N,C,HxW,F,k,p':<24}" + "".join(f"{c.name:>28}" for c in layouts))
    results = []
    for shape in (SHAPES[:1] if ARGS.quick else SHAPES):
        N, C, H, F, k, p = shape
        x = rng.standard_normal((N, C, H, H)).astype(dtype)
        W2 = (rng.standard_normal((F, C * k * k)) * 0.1).astype(dtype)
        Ho = H + 2 * p - k + 1
        dout = rng.standard_normal((N, F, Ho, Ho)).astype(dtype)
        cells, reference = [], None
        for cls in layouts:
            lay = cls(shape, ARGS.threads)
            out = lay.forward(x, W2)
            dW2, dx = lay.backward(dout)
            if reference is None:
                reference = (out, dW2, dx)
            else:  # the layouts must compute the same convolution
                for a, b in zip(reference, (out, dW2, dx)):
                    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
            fwd = _median_ms(lambda: lay.forward(x, W2), ARGS.repeat, ARGS.pause)
            bwd = _median_ms(lambda: lay.backward(dout), ARGS.repeat, ARGS.pause)
            totals[cls.name] += fwd + bwd
            results.append({"shape": list(shape), "layout": cls.name,
                            "forward_ms": fwd, "backward_ms": bwd})
            cells.append(f"{fwd:8.1f} / {bwd:6.1f} fwd/bwd")
        label = f"{N},{C},{H}x{H},{F},{k},{p}"
        print(f"{label:<24}" + "".join(f"{c:>28}" for c in cells))
    print(f"{'total fwd+bwd':<24}" + "".join(f"{totals[c.name]:>28.1f}" for c in layouts))
    base = totals[PerSample.name]
    for cls in layouts[1:]:
        print(f"{cls.name}: {base / totals[cls.name]:.2f}x the speed of (a)")
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"threads": ARGS.threads, "dtype": ARGS.dtype, "repeat": ARGS.repeat,
                       "results": results, "totals_ms": totals}, f, indent=2)


if __name__ == "__main__":
    main()
