"""airi.functional: the stateless ops the layers call.

* every convolution algorithm the planner can pick (im2col + GEMM, direct, Winograd,
  pointwise) gives the same forward and backward results as a plain loop, on the
  compiled kernels and on their NumPy twins, in float32 and float64;
* the ops match central-difference gradients (float64) and the layers that call them;
* thread counts do not change a single bit of the weight gradients;
* the planner's switches (AIRI_DIRECT_CONV, AIRI_WINOGRAD) keep working.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import airi
import airi.functional as F
from airi import _backend, _planner
from airi.gradcheck import numerical_gradient
from conftest import REQUIRE_COMPILED


def _backends():
    if "cython" in _backend.available_backends():
        return ["cython", "numpy"]
    if REQUIRE_COMPILED:
        pytest.fail("AIRI_REQUIRE_COMPILED=1 but the compiled kernels are missing")
    return ["numpy"]


# ----------------------------------------------------------------- references
def ref_conv(x, W, b, stride, pad):
    """out[n, f, oh, ow] = sum_{c,i,j} xpad[n, c, oh*sh+i, ow*sw+j] W[f, c, i, j] + b[f]."""
    x, W = x.astype(np.float64), W.astype(np.float64)
    N, C, H, Wd = x.shape
    F_, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, pad
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (Wd + 2 * pw - kw) // sw + 1
    out = np.zeros((N, F_, Ho, Wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
            out += np.einsum("nchw,fc->nfhw", patch, W[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def ref_conv_grads(dout, x, W, stride, pad):
    """dx, dW, db of ref_conv by the adjoint of the same loop."""
    dout, x, W = dout.astype(np.float64), x.astype(np.float64), W.astype(np.float64)
    N, C, H, Wd = x.shape
    _, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, pad
    Ho, Wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp)
    dW = np.zeros_like(W)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + sh * (Ho - 1) + 1, sh)
            cols = slice(j, j + sw * (Wo - 1) + 1, sw)
            dW[:, :, i, j] = np.einsum("nfhw,nchw->fc", dout, xp[:, :, rows, cols])
            dxp[:, :, rows, cols] += np.einsum("nfhw,fc->nchw", dout, W[:, :, i, j])
    return dxp[:, :, ph:ph + H, pw:pw + Wd], dW, dout.sum(axis=(0, 2, 3))


# ------------------------------------------------ forcing an algorithm per pass
def _force(monkeypatch, forward, dx, dw):
    """Make the planner answer this plan for every convolution."""
    monkeypatch.setattr(_planner, "conv_plan",
                        lambda *args: _planner.ConvPlan(forward, dx, dw))


# (N, C, H, W, F, k, stride, pad) and the algorithms each shape allows:
# direct needs stride 1 and F % 16 == 0 (dx: C % 16 == 0, pad <= k - 1; dW: kw in
# 3, 5, 7); Winograd a 3x3 stride-1 kernel with pad <= 2; pointwise a 1x1 kernel.
CASES = [
    ((3, 16, 10, 9, 16, 3, 1, 1), ("gemm", "direct", "winograd")),
    ((2, 16, 8, 8, 32, 3, 1, 2), ("gemm", "direct", "winograd")),
    ((2, 16, 11, 12, 16, 5, 1, 0), ("gemm", "direct")),
    ((4, 3, 9, 9, 8, 3, 1, 0), ("gemm", "winograd")),
    ((2, 5, 9, 7, 6, 3, 2, 1), ("gemm",)),
    ((3, 6, 5, 4, 7, 1, 1, 0), ("gemm", "pointwise")),
]


def _can_run(algorithm, backend):
    if algorithm == "direct" and backend == "cython":
        return _backend.kernels().direct_conv_level() >= 0
    return True


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case, algorithms", CASES)
def test_every_algorithm_equals_the_textbook_convolution(case, algorithms, dtype,
                                                         monkeypatch):
    """direct = Winograd = im2col + GEMM = pointwise = NumPy twin = a plain loop, for
    out, dx, dW and db (the direct kernels are float32 only)."""
    N, C, H, Wd, Fo, k, s, p = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((N, C, H, Wd)).astype(dtype)
    W = rng.standard_normal((Fo, C, k, k)).astype(dtype)
    b = rng.standard_normal(Fo).astype(dtype)
    stride, pad = (s, s), (p, p)
    want = ref_conv(x, W, b, stride, pad)
    dout = rng.standard_normal(want.shape).astype(dtype)
    want_grads = ref_conv_grads(dout, x, W, stride, pad)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    ran = 0
    for backend in _backends():
        for algorithm in algorithms:
            if algorithm == "direct" and dtype != np.float32 or \
                    not _can_run(algorithm, backend):
                continue
            dw = "gemm" if algorithm == "winograd" else algorithm
            dx = algorithm if algorithm != "direct" or C % 16 == 0 else "gemm"
            _force(monkeypatch, algorithm, dx, dw)
            with _backend.use_backend(backend):
                out = F.conv2d_forward(x, W, b, stride, pad)
                got_grads = F.conv2d_backward(dout, x, W, stride, pad)
            label = f"{backend}/{algorithm}"
            assert out.dtype == dtype, label
            scale = np.abs(want).max()
            np.testing.assert_allclose(out, want, rtol=tol, atol=tol * scale, err_msg=label)
            for got, ref, name in zip(got_grads, want_grads, ("dx", "dW", "db")):
                assert got.shape == ref.shape, (label, name)
                np.testing.assert_allclose(got, ref, rtol=tol,
                                           atol=tol * np.abs(ref).max(),
                                           err_msg=f"{label} {name}")
            ran += 1
    assert ran >= len(algorithms) - (dtype == np.float64 and "direct" in algorithms)


def test_the_planner_chooses_one_algorithm_per_pass():
    x = np.zeros((2, 16, 16, 16), np.float32)
    plan = F.conv2d_plan(x, np.zeros((16, 16, 3, 3), np.float32), 1, 1)
    assert set(plan) <= {"gemm", "direct", "winograd"} and plan.dw != "winograd"
    assert F.conv2d_plan(x, np.zeros((8, 16, 1, 1)), 1, 0) == ("pointwise",) * 3
    assert F.conv2d_plan(x, np.zeros((16, 16, 3, 3)), 2, 1) == ("gemm",) * 3  # stride 2
    previous = _planner.set_direct_conv(False)
    try:
        assert "direct" not in F.conv2d_plan(x, np.zeros((16, 16, 3, 3), np.float32), 1, 1)
    finally:
        _planner.set_direct_conv(previous)
    with _backend.use_backend("numpy"):   # the NumPy twins only plan im2col + GEMM
        assert F.conv2d_plan(x, np.zeros((16, 16, 3, 3), np.float32), 1, 1) == \
            ("gemm",) * 3


@pytest.mark.parametrize("variable, value, check", [
    ("AIRI_DIRECT_CONV", "0", "not _planner._direct_enabled"),
    ("AIRI_WINOGRAD", "1", "_planner._winograd_enabled"),
    ("AIRI_WINOGRAD", "0", "not _planner._winograd_enabled"),
])
def test_planner_environment_variables(variable, value, check):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRI_")}
    env[variable] = value
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(airi.__file__))
    code = f"import airi; from airi import _planner; assert {check}; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ------------------------------------------------------------ gradient checks
def _check_grad(f, x, analytic, tol=1e-6):
    numeric = numerical_gradient(f, x)
    np.testing.assert_allclose(analytic, numeric, rtol=tol, atol=tol)


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), (1, 2)])
def test_conv2d_backward_matches_central_differences(each_backend, stride, pad):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 5))
    W = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    g = rng.standard_normal(F.conv2d_forward(x, W, b, stride, pad).shape)

    def loss():
        return float(np.sum(F.conv2d_forward(x, W, b, stride, pad) * g))

    dx, dW, db = F.conv2d_backward(g, x, W, stride, pad)
    _check_grad(loss, x, dx)
    _check_grad(loss, W, dW)
    _check_grad(loss, b, db)


def test_pooling_linear_activations_match_central_differences(each_backend):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 6))
    out, argmax = F.max_pool2d_forward(x, 2)
    g = rng.standard_normal(out.shape)
    _check_grad(lambda: float(np.sum(F.max_pool2d_forward(x, 2)[0] * g)), x,
                F.max_pool2d_backward(g, argmax, x.shape, 2))
    a = F.avg_pool2d_forward(x, 3, 1)
    g = rng.standard_normal(a.shape)
    _check_grad(lambda: float(np.sum(F.avg_pool2d_forward(x, 3, 1) * g)), x,
                F.avg_pool2d_backward(g, x.shape, 3, 1))
    x2, W, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    g = rng.standard_normal((4, 3))
    dx, dW, db = F.linear_backward(g, x2, W)
    for v, d in ((x2, dx), (W, dW), (b, db)):
        _check_grad(lambda: float(np.sum(F.linear_forward(x2, W, b) * g)), v, d)
    for fwd, bwd, cache_is_x in ((F.relu_forward, F.relu_backward, False),
                                 (F.sigmoid_forward, F.sigmoid_backward, False),
                                 (F.tanh_forward, F.tanh_backward, False),
                                 (F.leaky_relu_forward, F.leaky_relu_backward, True)):
        g = rng.standard_normal(x.shape)
        out = fwd(x)
        _check_grad(lambda: float(np.sum(fwd(x) * g)), x, bwd(g, x if cache_is_x else out))


def test_batch_norm_ops_match_central_differences(each_backend):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3, 2, 2)) * 2 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    g = rng.standard_normal(x.shape)

    def forward():
        count, total, total_sq = F.batch_norm_stats(x)
        mean = total / count
        invstd = 1 / np.sqrt((total_sq - total * mean) / count + 1e-5)
        return F.batch_norm_forward(x, mean, invstd, gamma, beta), mean, invstd, count

    (out, xhat), mean, invstd, count = forward()
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    sum_g, sum_g_xhat = F.batch_norm_grad_sums(g, xhat)
    dx = F.batch_norm_backward(g, xhat, gamma * invstd, sum_g / count[0],
                               sum_g_xhat / count[0])
    _check_grad(lambda: float(np.sum(forward()[0][0] * g)), x, dx, tol=1e-5)
    _check_grad(lambda: float(np.sum(forward()[0][0] * g)), gamma, sum_g_xhat)
    _check_grad(lambda: float(np.sum(forward()[0][0] * g)), beta, sum_g)


# ------------------------------------------------- the layers are thin callers
def test_conv2d_layer_equals_the_functional_op(each_backend):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 4, 9, 9)).astype(np.float32)
    layer = airi.Conv2D(4, 16, 3, stride=1, pad=1)
    out = layer.forward(x, training=True)
    np.testing.assert_array_equal(out, F.conv2d_forward(x, layer.W.data, layer.b.data,
                                                        1, 1))
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = layer.backward(dout)
    dx_f, dW_f, db_f = F.conv2d_backward(dout, x, layer.W.data, 1, 1)
    np.testing.assert_allclose(dx, dx_f, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.W.grad, dW_f, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(layer.b.grad, db_f)


@pytest.mark.parametrize("shape", [(40, 16, 20, 32, 3, 1), (24, 3, 12, 16, 5, 0),
                                   (64, 1, 28, 16, 5, 2)])
def test_conv2d_backward_bit_identical_across_thread_counts(each_backend, shape):
    N, C, H, Fo, k, p = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    W = rng.standard_normal((Fo, C, k, k)).astype(np.float32)
    dout = rng.standard_normal(F.conv2d_forward(x, W, None, 1, p).shape).astype(np.float32)
    results = []
    for threads in (1, 2, 3, 2):
        airi.set_num_threads(threads)
        results.append(F.conv2d_backward(dout, x, W, 1, p))
    for dx, dW, db in results[1:]:
        assert np.array_equal(dW, results[0][1]) and np.array_equal(db, results[0][2])
        assert np.array_equal(dx, results[0][0])


def test_functional_rejects_bad_input_with_one_clear_error():
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_forward: x has 3 channels but W"):
        F.conv2d_forward(x, np.zeros((4, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="float32 or float64"):
        F.conv2d_forward(x.astype(np.int32), np.zeros((4, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 4, 6, 6\)"):
        F.conv2d_backward(np.zeros((2, 4, 5, 5), np.float32), x,
                          np.zeros((4, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv2d_forward(x, np.zeros((4, 3, 9, 9), np.float32))


def test_module_docstring_example_runs():
    namespace = {}
    doc = F.__doc__
    code = doc[doc.index("    import numpy"):doc.index("Shapes are NCHW")]
    exec(textwrap.dedent(code), namespace)
    assert namespace["out"].shape == (2, 4, 8, 8)
    assert namespace["dW"].shape == (4, 3, 3, 3) and namespace["db"].shape == (4,)
