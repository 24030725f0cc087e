"""The convolution and pooling kernels, on both backends (issue 2).

* compiled and NumPy kernels agree over many random shapes, strides, paddings and
  windows (float64 to ~1e-12, float32 to ~1e-5);
* im2col and col2im are adjoint;
* every kernel matches a direct, obviously-correct loop on small inputs;
* max-pool ties send the gradient to exactly one position;
* bad arguments raise ValueError with a message that says what is wrong.
"""
import itertools

import numpy as np
import pytest

import airi.functional as F
from airi import _backend, _config
from conftest import REQUIRE_COMPILED

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}


@pytest.fixture
def compiled():
    """For tests that compare the two backends: they need the compiled kernels, and
    fail (not skip) when those are missing under AIRI_REQUIRE_COMPILED=1."""
    if "cython" not in _backend.available_backends():
        if REQUIRE_COMPILED:
            pytest.fail("AIRI_REQUIRE_COMPILED=1 but the compiled kernels are missing: "
                        f"{_backend.compiled_error()}")
        pytest.skip(f"compiled kernels not built: {_backend.compiled_error()}")


def on(backend, fn, *args, **kwargs):
    with _backend.use_backend(backend):
        return fn(*args, **kwargs)


def both(fn, *args, **kwargs):
    """(compiled result, NumPy result) of the same call."""
    return on("cython", fn, *args, **kwargs), on("numpy", fn, *args, **kwargs)


# ------------------------------------------------------------------ references
def ref_im2col(x, kernel, stride, pad):
    """cols[n, (c, i, j), (oh, ow)] = padded x[n, c, oh*sh + i, ow*sw + j]."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    cols = np.zeros((N, C * kh * kw, Ho * Wo), dtype=x.dtype)
    for n, c, i, j, oh, ow in itertools.product(range(N), range(C), range(kh), range(kw),
                                                range(Ho), range(Wo)):
        cols[n, (c * kh + i) * kw + j, oh * Wo + ow] = xp[n, c, oh * sh + i, ow * sw + j]
    return cols


def ref_col2im(cols, x_shape, kernel, stride, pad):
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for n, c, i, j, oh, ow in itertools.product(range(N), range(C), range(kh), range(kw),
                                                range(Ho), range(Wo)):
        dxp[n, c, oh * sh + i, ow * sw + j] += cols[n, (c * kh + i) * kw + j, oh * Wo + ow]
    return dxp[:, :, ph:ph + H, pw:pw + W]


def windows(x_shape, kernel, stride):
    """Yield (n, c, oh, ow, rows, cols) for every pooling window."""
    N, C, H, W = x_shape
    (kh, kw), (sh, sw) = kernel, stride
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    for n, c, oh, ow in itertools.product(range(N), range(C), range(Ho), range(Wo)):
        yield n, c, oh, ow, slice(oh * sh, oh * sh + kh), slice(ow * sw, ow * sw + kw)


def pooled_shape(x_shape, kernel, stride):
    N, C, H, W = x_shape
    return N, C, (H - kernel[0]) // stride[0] + 1, (W - kernel[1]) // stride[1] + 1


def ref_maxpool(x, kernel, stride):
    """Max of each window and the tap q = i*kw + j of its first maximum inside the
    window (np.argmax order)."""
    out = np.empty(pooled_shape(x.shape, kernel, stride), dtype=x.dtype)
    arg = np.empty(out.shape, dtype=np.intp)
    for n, c, oh, ow, rows, cols in windows(x.shape, kernel, stride):
        win = x[n, c, rows, cols]
        q = int(np.argmax(win))
        out[n, c, oh, ow] = win.flat[q]
        arg[n, c, oh, ow] = q
    return out, arg


def ref_maxpool_backward(dout, x, kernel, stride):
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for n, c, oh, ow, rows, cols in windows(x.shape, kernel, stride):
        win = x[n, c, rows, cols]
        i, j = np.unravel_index(np.argmax(win), win.shape)
        dx[n, c, rows.start + i, cols.start + j] += dout[n, c, oh, ow]
    return dx


def ref_avgpool(x, kernel, stride):
    out = np.empty(pooled_shape(x.shape, kernel, stride), dtype=x.dtype)
    for n, c, oh, ow, rows, cols in windows(x.shape, kernel, stride):
        out[n, c, oh, ow] = x[n, c, rows, cols].mean()
    return out


def ref_avgpool_backward(dout, x_shape, kernel, stride):
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for n, c, oh, ow, rows, cols in windows(x_shape, kernel, stride):
        dx[n, c, rows, cols] += dout[n, c, oh, ow] / (kernel[0] * kernel[1])
    return dx


# -------------------------------------------------------------- random cases
def conv_cases(count, seed):
    """Hand-picked corner cases, then random (x_shape, kernel, stride, pad)."""
    cases = [
        ((1, 1, 5, 5), (3, 3), (1, 1), (1, 1)),     # batch of 1, one channel
        ((2, 3, 4, 4), (6, 6), (1, 1), (1, 1)),     # kernel == padded input
        ((2, 2, 7, 7), (2, 2), (3, 3), (0, 0)),     # stride > kernel
        ((3, 2, 9, 7), (3, 2), (2, 1), (1, 0)),     # rectangular, odd sizes
        ((2, 1, 5, 6), (1, 1), (1, 1), (0, 0)),     # 1x1 kernel
        ((1, 2, 3, 3), (1, 1), (2, 2), (2, 2)),     # padding wider than the kernel
        ((2, 3, 8, 8), (5, 5), (1, 1), (2, 2)),     # "same" 5x5
        ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),     # a single pixel
    ]
    rng = np.random.default_rng(seed)
    while len(cases) < count:
        N, C = rng.integers(1, 4), rng.integers(1, 4)
        H, W = rng.integers(1, 11), rng.integers(1, 11)
        ph, pw = rng.integers(0, 3), rng.integers(0, 3)
        kh, kw = rng.integers(1, H + 2 * ph + 1), rng.integers(1, W + 2 * pw + 1)
        sh, sw = rng.integers(1, 5), rng.integers(1, 5)
        cases.append(((int(N), int(C), int(H), int(W)), (int(kh), int(kw)),
                      (int(sh), int(sw)), (int(ph), int(pw))))
    return cases


def pool_cases(count, seed):
    cases = [
        ((1, 1, 4, 4), (2, 2), (2, 2)),      # the common 2x2/2
        ((2, 3, 7, 9), (2, 2), (2, 2)),      # 2x2/2 with an odd leftover row and column
        ((2, 2, 9, 9), (3, 3), (2, 2)),      # overlapping 3x3/2
        ((1, 2, 5, 5), (5, 5), (1, 1)),      # window == input
        ((2, 1, 8, 7), (2, 3), (3, 1)),      # rectangular, stride > kernel on one axis
        ((1, 1, 6, 6), (1, 1), (2, 2)),      # 1x1 window, stride > kernel
    ]
    rng = np.random.default_rng(seed)
    while len(cases) < count:
        N, C = rng.integers(1, 4), rng.integers(1, 4)
        H, W = rng.integers(1, 12), rng.integers(1, 12)
        kh, kw = rng.integers(1, H + 1), rng.integers(1, W + 1)
        sh, sw = rng.integers(1, 5), rng.integers(1, 5)
        cases.append(((int(N), int(C), int(H), int(W)), (int(kh), int(kw)),
                      (int(sh), int(sw))))
    return cases


CONV_CASES = conv_cases(48, seed=2)
POOL_CASES = pool_cases(48, seed=3)
DTYPES = [np.float64, np.float32]


def random_array(shape, dtype, rng, layout="contiguous"):
    """A random array of ``shape``; "strided" and "transposed" are non-contiguous."""
    if layout == "strided":  # every other element of a bigger array
        big = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)
        a = big[..., ::2]
    elif layout == "transposed":  # a C-order array seen through a transpose
        a = rng.standard_normal(tuple(shape)[::-1]).astype(dtype).T
    else:
        a = rng.standard_normal(shape).astype(dtype)
    assert a.shape == tuple(shape)
    return a


def layout_of(index):
    return ("contiguous", "strided", "transposed")[index % 3]


# ------------------------------------------------------- compiled == NumPy
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_im2col_col2im_backends_agree(compiled, case, dtype):
    x_shape, kernel, stride, pad = CONV_CASES[case]
    rng = np.random.default_rng(case)
    x = random_array(x_shape, dtype, rng, layout_of(case))
    cols_c, cols_n = both(F.im2col, x, kernel, stride, pad)
    assert cols_c.dtype == cols_n.dtype == dtype
    np.testing.assert_array_equal(cols_c, cols_n)  # pure copies: bit-identical
    g = random_array(cols_c.shape, dtype, rng, layout_of(case + 1))  # non-contiguous too
    dx_c, dx_n = both(F.col2im, g, x_shape, kernel, stride, pad)
    assert dx_c.shape == dx_n.shape == x_shape and dx_c.dtype == dx_n.dtype == dtype
    np.testing.assert_allclose(dx_c, dx_n, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_pooling_backends_agree(compiled, case, dtype):
    x_shape, kernel, stride = POOL_CASES[case]
    rng = np.random.default_rng(100 + case)
    x = random_array(x_shape, dtype, rng, layout_of(case))
    if case % 2 == 0:  # integers: many ties, which must resolve the same way
        x = np.round(2 * x).astype(dtype)
    (out_c, arg_c), (out_n, arg_n) = both(F.max_pool2d_forward, x, kernel, stride)
    np.testing.assert_array_equal(out_c, out_n)
    np.testing.assert_array_equal(arg_c, arg_n)
    assert arg_c.dtype == arg_n.dtype == F.maxpool_tap_dtype(kernel) == np.uint8
    assert out_c.dtype == out_n.dtype == dtype
    dout = random_array(out_c.shape, dtype, rng, layout_of(case + 2))
    dx_c, dx_n = both(F.max_pool2d_backward, dout, arg_c, x_shape, kernel, stride)
    np.testing.assert_allclose(dx_c, dx_n, **TOL[dtype])
    avg_c, avg_n = both(F.avg_pool2d_forward, x, kernel, stride)
    np.testing.assert_allclose(avg_c, avg_n, **TOL[dtype])
    dxa_c, dxa_n = both(F.avg_pool2d_backward, dout, x_shape, kernel, stride)
    np.testing.assert_allclose(dxa_c, dxa_n, **TOL[dtype])
    for a in (avg_c, avg_n, dx_c, dx_n, dxa_c, dxa_n):
        assert a.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_backends_agree_on_realistic_shapes(compiled, dtype):
    """A layer-sized batch, big enough for the compiled kernels to use threads."""
    _config.set_num_threads(2)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 8, 20, 20)).astype(dtype)
    for kernel, stride, pad in [((3, 3), (1, 1), (1, 1)), ((5, 5), (1, 1), (0, 0)),
                                ((3, 3), (2, 2), (1, 1))]:
        cols_c, cols_n = both(F.im2col, x, kernel, stride, pad)
        np.testing.assert_array_equal(cols_c, cols_n)
        dx_c, dx_n = both(F.col2im, cols_c, x.shape, kernel, stride, pad)
        np.testing.assert_allclose(dx_c, dx_n, **TOL[dtype])
    for kernel, stride in [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((3, 3), (1, 1))]:
        (o_c, a_c), (o_n, a_n) = both(F.max_pool2d_forward, x, kernel, stride)
        np.testing.assert_array_equal(o_c, o_n)
        np.testing.assert_array_equal(a_c, a_n)


def test_compiled_results_do_not_depend_on_thread_count(compiled):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((9, 8, 23, 22))  # big enough to be split over threads
    results = []
    for threads in (1, 2, 3):
        _config.set_num_threads(threads)
        with _backend.use_backend("cython"):
            cols = F.im2col(x, 3, 2, 1)
            out, arg = F.max_pool2d_forward(x, 3, 2)
            results.append((cols, F.col2im(cols, x.shape, 3, 2, 1), out, arg,
                            F.max_pool2d_backward(out, arg, x.shape, 3, 2),
                            F.avg_pool2d_backward(out, x.shape, 3, 2)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_maxpool_nan_propagates_like_argmax(compiled, dtype):
    """A NaN in a window is its maximum (the first NaN wins), on both backends."""
    x = np.arange(2 * 6 * 6, dtype=dtype).reshape(1, 2, 6, 6)
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = x[0, 1, 4, 4] = np.nan
    for kernel, stride in [((2, 2), (2, 2)), ((3, 3), (1, 1))]:
        ref_out, ref_arg = ref_maxpool(x, kernel, stride)
        for out, arg in both(F.max_pool2d_forward, x, kernel, stride):
            np.testing.assert_array_equal(out, ref_out)  # NaN == NaN here
            np.testing.assert_array_equal(arg, ref_arg)
    assert np.isnan(ref_maxpool(x, (2, 2), (2, 2))[0][0, 0, 0, 0])


# --------------------------------------------------------- single backend
@pytest.mark.parametrize("case", range(0, len(CONV_CASES), 3))
def test_im2col_col2im_match_direct_loops(each_backend, case):
    x_shape, kernel, stride, pad = CONV_CASES[case]
    rng = np.random.default_rng(200 + case)
    x = rng.standard_normal(x_shape)
    cols = F.im2col(x, kernel, stride, pad)
    np.testing.assert_array_equal(cols, ref_im2col(x, kernel, stride, pad))
    g = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(F.col2im(g, x_shape, kernel, stride, pad),
                               ref_col2im(g, x_shape, kernel, stride, pad),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_im2col_and_col2im_are_adjoint(each_backend, case):
    """<im2col(x), c> == <x, col2im(c)> for random x and c."""
    x_shape, kernel, stride, pad = CONV_CASES[case]
    rng = np.random.default_rng(300 + case)
    x = rng.standard_normal(x_shape)
    cols = F.im2col(x, kernel, stride, pad)
    c = rng.standard_normal(cols.shape)
    lhs = np.vdot(cols, c)
    rhs = np.vdot(x, F.col2im(c, x_shape, kernel, stride, pad))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


def test_convolution_through_im2col_matches_direct_convolution(each_backend):
    """The layout the layer relies on: matmul(W2, cols) is the NCHW convolution."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    stride, pad = (2, 1), (1, 1)
    cols = F.im2col(x, (3, 2), stride, pad)
    Ho, Wo = F.conv_output_shape(7, 6, (3, 2), stride, pad)
    out = np.matmul(w.reshape(4, -1), cols).reshape(2, 4, Ho, Wo)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    direct = np.zeros_like(out)
    for n, f, oh, ow in itertools.product(range(2), range(4), range(Ho), range(Wo)):
        patch = xp[n, :, oh * 2:oh * 2 + 3, ow:ow + 2]
        direct[n, f, oh, ow] = np.sum(patch * w[f])
    np.testing.assert_allclose(out, direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", range(0, len(POOL_CASES), 2))
def test_pooling_matches_direct_loops(each_backend, case):
    x_shape, kernel, stride = POOL_CASES[case]
    rng = np.random.default_rng(400 + case)
    x = rng.standard_normal(x_shape)
    if case % 4 == 0:
        x = np.round(x)  # ties
    out, arg = F.max_pool2d_forward(x, kernel, stride)
    ref_out, ref_arg = ref_maxpool(x, kernel, stride)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(arg, ref_arg)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(F.max_pool2d_backward(dout, arg, x_shape, kernel, stride),
                               ref_maxpool_backward(dout, x, kernel, stride),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.avg_pool2d_forward(x, kernel, stride),
                               ref_avgpool(x, kernel, stride), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.avg_pool2d_backward(dout, x_shape, kernel, stride),
                               ref_avgpool_backward(dout, x_shape, kernel, stride),
                               rtol=1e-12, atol=1e-12)


def test_pooling_stride_defaults_to_kernel(each_backend):
    x = np.random.default_rng(10).standard_normal((2, 2, 6, 6))
    np.testing.assert_array_equal(F.max_pool2d_forward(x, 2)[0],
                                  F.max_pool2d_forward(x, 2, 2)[0])
    np.testing.assert_allclose(F.avg_pool2d_forward(x, 3),
                               ref_avgpool(x, (3, 3), (3, 3)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (3, 3)),
                                            ((2, 3), (2, 3))])
def test_maxpool_ties_route_gradient_to_exactly_one_position(each_backend, kernel, stride):
    """A constant input: every window is a tie; its gradient goes to its first pixel."""
    x = np.full((2, 3, 6, 6), 0.5)
    out, arg = F.max_pool2d_forward(x, kernel, stride)
    dout = np.arange(1, out.size + 1, dtype=np.float64).reshape(out.shape)
    dx = F.max_pool2d_backward(dout, arg, x.shape, kernel, stride)
    assert np.count_nonzero(dx) == out.size            # one position per window
    np.testing.assert_allclose(dx.sum(), dout.sum())   # nothing duplicated or lost
    first_pixels = dx[:, :, ::stride[0], ::stride[1]][:, :, :out.shape[2], :out.shape[3]]
    np.testing.assert_array_equal(first_pixels, dout)  # ... the first of the window


def test_maxpool_overlapping_ties_accumulate_once_per_window(each_backend):
    x = np.zeros((1, 1, 5, 5))
    out, arg = F.max_pool2d_forward(x, 3, 1)
    dx = F.max_pool2d_backward(np.ones_like(out), arg, x.shape, 3, 1)
    assert dx.sum() == out.size  # 9 windows, each sends exactly 1
    np.testing.assert_array_equal(dx[0, 0, :3, :3], np.ones((3, 3)))


@pytest.mark.parametrize("x_shape", [(0, 3, 6, 6), (2, 0, 6, 6)])
def test_empty_batch_or_channels_flow_through(each_backend, x_shape):
    x = np.zeros(x_shape, dtype=np.float32)
    cols = F.im2col(x, 3, 1, 1)
    assert cols.shape == (x_shape[0], x_shape[1] * 9, 36) and cols.dtype == np.float32
    assert F.col2im(cols, x_shape, 3, 1, 1).shape == x_shape
    out, arg = F.max_pool2d_forward(x, 2)
    assert out.shape == arg.shape == x_shape[:2] + (3, 3)
    assert F.max_pool2d_backward(out, arg, x_shape, 2).shape == x_shape
    assert F.avg_pool2d_backward(F.avg_pool2d_forward(x, 2), x_shape, 2).shape \
        == x_shape


def test_kernels_accept_read_only_inputs(each_backend):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 2, 6, 6))
    x.setflags(write=False)
    cols = F.im2col(x, 3, 1, 1)
    cols.setflags(write=False)
    assert F.col2im(cols, x.shape, 3, 1, 1).shape == x.shape
    out, arg = F.max_pool2d_forward(x, 2, 2)
    out.setflags(write=False)
    arg.setflags(write=False)
    assert F.max_pool2d_backward(out, arg, x.shape, 2, 2).shape == x.shape
    assert F.avg_pool2d_backward(out, x.shape, 2, 2).shape == x.shape


@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)),
                                            ((2, 3), (3, 3))])
def test_maxpool_backward_rejects_taps_outside_the_window(each_backend, kernel, stride):
    """argmax holds taps 0 .. kh*kw-1: anything else is an error, never a write
    elsewhere (the disjoint, overlapping and generic paths all check)."""
    x = np.random.default_rng(12).standard_normal((2, 2, 7, 7))
    out, arg = F.max_pool2d_forward(x, kernel, stride)
    arg[1, 1, 0, 0] = kernel[0] * kernel[1]
    with pytest.raises(ValueError, match="outside"):
        F.max_pool2d_backward(out, arg, x.shape, kernel, stride)
    # integers of another dtype are checked before they are converted (no wrap-around)
    wide = arg.astype(np.int64)
    wide[1, 1, 0, 0] = 256
    with pytest.raises(ValueError, match="outside"):
        F.max_pool2d_backward(out, wide, x.shape, kernel, stride)
    with pytest.raises(ValueError, match="integer"):
        F.max_pool2d_backward(out, arg.astype(np.float64), x.shape, kernel, stride)


def test_maxpool_taps_of_another_integer_dtype_are_accepted(each_backend):
    x = np.random.default_rng(13).standard_normal((2, 3, 6, 6))
    out, arg = F.max_pool2d_forward(x, 3, 1)
    dout = np.random.default_rng(14).standard_normal(out.shape)
    np.testing.assert_array_equal(
        F.max_pool2d_backward(dout, arg.astype(np.int32), x.shape, 3, 1),
        F.max_pool2d_backward(dout, arg, x.shape, 3, 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_maxpool_windows_beyond_256_elements_use_intp_taps(compiled, dtype):
    """Taps of windows with more than 256 elements do not fit np.uint8: np.intp."""
    rng = np.random.default_rng(15)
    x = np.round(2 * rng.standard_normal((2, 2, 20, 19))).astype(dtype)  # ties too
    x[1, 0, 3, 4] = np.nan
    kernel, stride = (17, 16), (2, 3)
    assert F.maxpool_tap_dtype(kernel) == np.intp
    assert F.maxpool_tap_dtype((16, 16)) == np.uint8
    ref_out, ref_arg = ref_maxpool(x, kernel, stride)
    (out_c, arg_c), (out_n, arg_n) = both(F.max_pool2d_forward, x, kernel, stride)
    for out, arg in ((out_c, arg_c), (out_n, arg_n)):
        assert arg.dtype == np.intp
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(arg, ref_arg)
    dout = rng.standard_normal(out_c.shape).astype(dtype)
    dx_c, dx_n = both(F.max_pool2d_backward, dout, arg_c, x.shape, kernel, stride)
    np.testing.assert_array_equal(dx_c, dx_n)
    np.testing.assert_allclose(dx_c, ref_maxpool_backward(dout, x, kernel, stride),
                               **TOL[dtype])


# ------------------------------------------------------------ bad arguments
X = np.zeros((2, 3, 5, 5))


@pytest.mark.parametrize("call, message", [
    (lambda: F.im2col(X, 8, 1, 1), "larger than the padded input"),
    (lambda: F.im2col(X, (3, 8), 1, 1), "larger than the padded input"),
    (lambda: F.im2col(X, 3, 0, 1), "stride must be >= 1"),
    (lambda: F.im2col(X, 0, 1, 0), "kernel size must be >= 1"),
    (lambda: F.im2col(X, 3, 1, -1), "padding must be >= 0"),
    (lambda: F.im2col(X, 2.5, 1, 0), "kernel must be an int or a pair"),
    (lambda: F.im2col(X, (2, 2, 2), 1, 0), "kernel must be an int or a pair"),
    (lambda: F.im2col(X[0], 3, 1, 1), "must have 4 dimensions"),
    (lambda: F.im2col(X.astype(np.int64), 3, 1, 1), "float32 or float64"),
    (lambda: F.im2col(X.astype(object), 3, 1, 1), "float32 or float64"),
    (lambda: F.im2col(X.tolist(), 3, 1, 1), "must be a NumPy array"),
    (lambda: F.col2im(np.zeros((2, 27, 4)), X.shape, 3, 1, 1), "cols must have shape"),
    (lambda: F.col2im(np.zeros((2, 27, 25)), (2, 3, 5), 3, 1, 1), "x_shape must be"),
    (lambda: F.col2im(np.zeros((2, 27, 0)), (2, 3, 0, 5), 3, 1, 1), "x_shape must be"),
    (lambda: F.col2im(np.zeros((2, 27, 25), np.int32), X.shape, 3, 1, 1),
     "float32 or float64"),
    (lambda: F.max_pool2d_forward(X, 6), "larger than the padded input"),
    (lambda: F.max_pool2d_forward(X, 2, 0), "stride must be >= 1"),
    (lambda: F.max_pool2d_forward(X[None], 2), "must have 4 dimensions"),
    (lambda: F.max_pool2d_forward(X.astype(np.int32), 2), "float32 or float64"),
    (lambda: F.max_pool2d_forward(X.astype(object), 2), "float32 or float64"),
    (lambda: F.max_pool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), int),
                                       X.shape, 2), "must have shape"),
    (lambda: F.avg_pool2d_forward(X, (2, 7)), "larger than the padded input"),
    (lambda: F.avg_pool2d_forward(X.astype(np.uint8), 2), "float32 or float64"),
    (lambda: F.avg_pool2d_backward(np.zeros((2, 3, 3, 3)), X.shape, 2), "must have shape"),
    (lambda: F.avg_pool2d_backward(np.zeros((2, 3, 2, 2)), X.shape, 2, 0),
     "stride must be >= 1"),
])
def test_bad_arguments_raise_clear_value_errors(each_backend, call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------ direct convolution (stride 1)
def direct_cases(count, seed):
    """(x_shape, F, kernel, pad) for the direct kernels: F % 16 == 0, stride 1, kernel
    widths 3, 5, 7 (the weight-gradient kernel's), rectangular sizes included."""
    cases = [
        ((2, 16, 14, 14), 32, (5, 5), (0, 0)),    # LeNet's conv2
        ((3, 3, 12, 12), 16, (5, 5), (0, 0)),     # few input channels
        ((2, 16, 9, 11), 48, (3, 3), (1, 1)),     # 3 filter blocks, rectangular
        ((1, 8, 7, 7), 16, (7, 7), (3, 3)),       # kernel == padded input - 6
        ((2, 4, 5, 6), 64, (3, 5), (2, 1)),       # rectangular kernel, pad > k/2
        ((1, 1, 3, 3), 16, (3, 3), (0, 0)),       # a single output pixel
    ]
    rng = np.random.default_rng(seed)
    while len(cases) < count:
        N, C = int(rng.integers(1, 4)), int(rng.integers(1, 20))
        F = 16 * int(rng.integers(1, 5))
        kh, kw = int(rng.choice([1, 2, 3, 5, 7])), int(rng.choice([3, 5, 7]))
        ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        H = int(rng.integers(max(1, kh - 2 * ph), 20))
        W = int(rng.integers(max(1, kw - 2 * pw), 20))
        cases.append(((N, C, H, W), F, (kh, kw), (ph, pw)))
    return cases


DIRECT_CASES = direct_cases(40, seed=5)


def _direct(x, wt, bias, pad):
    n, C, H, W = x.shape
    _, kh, kw, F = wt.shape
    out = np.empty((n, F, H + 2 * pad[0] - kh + 1, W + 2 * pad[1] - kw + 1), np.float32)
    scratch = np.empty(C * (H + 2 * pad[0]) * (W + 2 * pad[1]), np.float32)
    _backend.kernels().direct_conv_into(x, wt, bias, out, pad, scratch)
    return out


@pytest.fixture(params=[2, 1, 0], ids=["avx512", "avx2", "baseline"])
def isa_level(request, compiled):
    """Run a test on each compiled version of the direct kernels this CPU can run."""
    from airi._ext import _conv
    if request.param > _conv.direct_conv_level():
        pytest.skip(f"CPU lacks instruction-set level {request.param}")
    previous = _conv._force_direct_conv_level(request.param)
    yield request.param
    _conv._force_direct_conv_level(max(previous, 2))


@pytest.mark.parametrize("case", range(len(DIRECT_CASES)))
def test_direct_conv_backends_agree(isa_level, case):
    """The compiled direct convolution and weight gradient equal their NumPy twins
    (im2col + matmul) and a reference built from ref_im2col, to float32 tolerance."""
    x_shape, F, kernel, pad = DIRECT_CASES[case]
    rng = np.random.default_rng(100 + case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((F, x_shape[1]) + kernel).astype(np.float32)
    wt = np.ascontiguousarray(w.transpose(1, 2, 3, 0))
    bias = rng.standard_normal(F).astype(np.float32) if case % 2 else None
    out_c, out_n = both(_direct, x, wt, bias, pad)
    cols = ref_im2col(x.astype(np.float64), kernel, (1, 1), pad)
    ref = np.matmul(w.reshape(F, -1).astype(np.float64), cols)
    if bias is not None:
        ref += bias[:, None]
    assert out_c.shape == out_n.shape == x_shape[:1] + (F,) + out_c.shape[2:]
    np.testing.assert_allclose(out_c, ref.reshape(out_c.shape), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out_c, out_n, rtol=1e-4, atol=1e-4)

    # weight gradient: accumulates into dwt, like the layer's per-thread partial sums
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    dT = rng.standard_normal(out_c.shape).astype(np.float32).transpose(0, 2, 3, 1).copy()
    start = rng.standard_normal((x_shape[1],) + kernel + (F,)).astype(np.float32)

    def dw(xp, dT):
        dwt = start.copy()
        _backend.kernels().direct_conv_dw_into(xp, dT, dwt)
        return dwt

    dw_c, dw_n = both(dw, xp, dT)
    cols_p = ref_im2col(xp.astype(np.float64), kernel, (1, 1), (0, 0))
    ref_dw = np.matmul(cols_p, dT.reshape(dT.shape[0], -1, F)).sum(axis=0)
    ref_dw = start + ref_dw.reshape(start.shape)
    np.testing.assert_allclose(dw_c, ref_dw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw_c, dw_n, rtol=1e-4, atol=1e-4)


def test_direct_conv_rejects_bad_shapes(compiled):
    from airi._ext import _conv
    x = np.zeros((1, 2, 6, 6), np.float32)
    wt = np.zeros((2, 3, 3, 8), np.float32)                 # F = 8: not a multiple of 16
    with pytest.raises(ValueError, match="direct_conv_into"):
        _conv.direct_conv_into(x, wt, None, np.zeros((1, 8, 4, 4), np.float32), 0, 0,
                               np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="kernel width 4"):
        _conv.direct_conv_dw_into(np.zeros((1, 2, 6, 6), np.float32),
                                  np.zeros((1, 3, 3, 16), np.float32),
                                  np.zeros((2, 4, 4, 16), np.float32))


# ------------------------------------------------------------- batch normalisation
BN_SHAPES = [(4, 3, 1), (5, 2, 7), (3, 4, 64), (2, 3, 77), (0, 3, 5), (6, 1, 1024)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_kernels_backends_agree(compiled, shape, dtype):
    """The compiled BatchNorm passes equal their NumPy twins and float64 references:
    plane moments, normalisation, gradient sums and the input gradient."""
    rng = np.random.default_rng(sum(shape))
    N, C, P = shape
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)   # an offset mean, like
    dout = rng.standard_normal(shape).astype(dtype)          # real activations
    vec = [rng.standard_normal(C).astype(dtype) for _ in range(5)]
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12,
                                                                      atol=1e-12)
    x64 = x.astype(np.float64)

    mean_c, m2_c = on("cython", F.batchnorm_moments, x)
    mean_n, m2_n = on("numpy", F.batchnorm_moments, x)
    assert mean_c.dtype == m2_c.dtype == np.float64 and mean_c.shape == (N, C)
    np.testing.assert_allclose(mean_c, x64.mean(axis=2) if P else 0, **tol)
    np.testing.assert_allclose(mean_c, mean_n, **tol)
    ref_m2 = ((x64 - mean_c[:, :, None]) ** 2).sum(axis=2)
    np.testing.assert_allclose(m2_c, ref_m2, rtol=tol["rtol"] * 10, atol=tol["atol"] * P)
    np.testing.assert_allclose(m2_c, m2_n, rtol=tol["rtol"] * 10, atol=tol["atol"] * P)

    shift, invstd, gamma, beta = vec[0], np.abs(vec[1]) + 0.5, vec[2], vec[3]
    (h_c, o_c), (h_n, o_n) = both(F.batchnorm_normalize, x, shift, invstd,
                                  gamma, beta)
    ref_h = (x64 - shift[:, None]) * invstd[:, None]
    for got in (h_c, h_n):
        assert got.dtype == dtype and got.shape == shape
        np.testing.assert_allclose(got, ref_h, **tol)
    np.testing.assert_allclose(o_c, ref_h * gamma[:, None] + beta[:, None], **tol)
    np.testing.assert_allclose(o_c, o_n, **tol)

    s_c, s_n = both(F.batchnorm_plane_grad_sums, dout, h_c)
    ref_s = (dout.astype(np.float64).sum(axis=2),
             (dout.astype(np.float64) * h_c).sum(axis=2))
    for got, other, ref in zip(s_c, s_n, ref_s):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got, other, rtol=1e-5, atol=1e-4)

    k, m, sc = vec[4], vec[0], vec[1]
    dx_c, dx_n = both(F.batchnorm_input_grad, dout, h_c, k, m, sc)
    ref_dx = (dout - m[:, None] + k[:, None] * h_c.astype(np.float64)) * sc[:, None]
    assert dx_c.dtype == dtype and dx_c.shape == shape
    np.testing.assert_allclose(dx_c, ref_dx, **tol)
    np.testing.assert_allclose(dx_c, dx_n, **tol)


def test_batchnorm_kernels_reject_mixed_dtypes_and_shapes():
    x = np.zeros((2, 3, 4), np.float32)
    v64 = np.zeros(3)
    with pytest.raises(ValueError, match="one float dtype"):
        F.batchnorm_normalize(x, v64, v64, v64, v64)
    with pytest.raises(ValueError, match="3 dimensions"):
        F.batchnorm_moments(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="differ"):
        F.batchnorm_plane_grad_sums(x, np.zeros((2, 3, 5), np.float32))


# ------------------------------------------------------ Winograd F(2x2, 3x3) transforms
def _ref_conv3x3(x, w, b, pad):
    n, C, H, W = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    Ho, Wo = H + 2 * pad[0] - 2, W + 2 * pad[1] - 2
    out = np.zeros((n, w.shape[0], Ho, Wo))
    for i in range(3):
        for j in range(3):
            out += np.einsum("fc,nchw->nfhw", w[:, :, i, j], xp[:, :, i:i + Ho, j:j + Wo])
    return out + (0 if b is None else b[:, None, None])


def _winograd_conv(x, w, b, pad, spread):
    """The layer's recipe: transform, 16 GEMMs, inverse transform; ``spread`` puts the
    16 matrices further apart than their size, as the layer's buffers do."""
    n, C, H, W = x.shape
    filters = w.shape[0]
    Ho, Wo = H + 2 * pad[0] - 2, W + 2 * pad[1] - 2
    th, tw = F.winograd_tiles(Ho, Wo)

    def tiles(rows):
        size = rows * n * th * tw
        return np.full((16, size + spread), np.nan, x.dtype)[:, :size].reshape(
            16, rows, n * th * tw)

    V, M = tiles(C), tiles(filters)
    _backend.kernels().winograd_input_into(x, V, pad)
    np.matmul(F.winograd_filters(w), V, out=M)
    out = np.empty((n, filters, Ho, Wo), x.dtype)
    _backend.kernels().winograd_output_into(M, out, b)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, F, pad", [
    ((2, 3, 5, 5), 4, (1, 1)), ((3, 4, 8, 7), 5, (0, 0)), ((2, 2, 6, 9), 3, (2, 1)),
    ((1, 1, 3, 3), 1, (0, 0)), ((2, 17, 16, 16), 16, (1, 1)), ((1, 2, 4, 11), 2, (2, 2)),
])
def test_winograd_transforms_backends_agree(compiled, shape, F, pad, dtype):
    """Input transform + 16 GEMMs + output transform is the 3x3 convolution, on both
    backends, with the 16 tile matrices packed or spread apart."""
    rng = np.random.default_rng(sum(shape) + F)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((F, shape[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype) if F % 2 else None
    ref = _ref_conv3x3(x, w, b, pad)
    scale = np.abs(ref).max()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for spread in (0, 16):
        got_c, got_n = both(_winograd_conv, x, w, b, pad, spread)
        for got in (got_c, got_n):
            assert got.dtype == dtype and got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=0, atol=tol * 10 * scale)


def test_winograd_kernels_reject_bad_layouts(compiled):
    from airi._ext import _wino
    x = np.zeros((1, 2, 6, 6), np.float32)
    with pytest.raises(ValueError, match="V has shape"):
        _wino.winograd_input_into(x, np.zeros((16, 2, 5), np.float32), 1, 1)
    V = np.zeros((16, 9, 2), np.float32).transpose(0, 2, 1)   # matrices not C-contiguous
    with pytest.raises(ValueError, match="C-contiguous"):
        _wino.winograd_input_into(np.zeros((1, 2, 5, 5), np.float32), V, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        _wino.winograd_input_into(np.zeros((1, 2, 2, 2), np.float32),
                                  np.zeros((16, 2, 0), np.float32), 0, 0)
