"""BatchNorm1D, BatchNorm2D and Dropout: gradients, running statistics, modes, dtypes,
errors, and the statistics hook used for global-batch BatchNorm across processes."""
import copy
import pickle
import threading

import numpy as np
import pytest

import airi
from airi.layers import BatchNorm1D, BatchNorm2D, Dropout
from airi.layers import normalization

TOL = 1e-6


def _data(shape, seed=7, loc=1.5, scale=2.0):
    # Its own seed: a dout drawn by gradcheck (seed 0) must not be a function of x.
    return np.random.default_rng(seed).normal(loc, scale, size=shape)


def _bn_reference(x, axes, gamma, beta, eps=1e-5):
    """Float64 two-pass batch normalisation (the textbook formula)."""
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = [1] * x.ndim
    shape[1] = -1
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


def _randomise(bn, seed=3):
    """Non-trivial gamma, beta and running statistics."""
    rng = np.random.default_rng(seed)
    c = bn.num_features
    bn.gamma.data[...] = rng.normal(1.0, 0.5, c)
    bn.beta.data[...] = rng.normal(0.0, 0.5, c)
    bn.running_mean[...] = rng.normal(0.0, 1.0, c)
    bn.running_var[...] = rng.uniform(0.5, 2.0, c)
    return bn


# ---------------------------------------------------------------------- gradients
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("make, shape", [
    (lambda: BatchNorm1D(4), (6, 4)),
    (lambda: BatchNorm1D(3), (3, 3)),
    (lambda: BatchNorm2D(3), (2, 3, 4, 5)),
    (lambda: BatchNorm2D(2), (3, 2, 1, 1)),
])
def test_batchnorm_gradcheck(make, shape, training):
    bn = _randomise(make())
    errors = airi.gradcheck(bn, _data(shape), training=training)
    assert set(errors) == {"input", "gamma", "beta"}
    for name, err in errors.items():
        assert err < TOL, (name, err)


def test_batchnorm_gradcheck_uses_layer_mode():
    bn = _randomise(BatchNorm2D(2)).eval()
    errors = airi.gradcheck(bn, _data((2, 2, 3, 3)))
    assert max(errors.values()) < TOL


@pytest.mark.parametrize("training", [True, False])
def test_dropout_gradcheck(training):
    errors = airi.gradcheck(Dropout(0.4), _data((4, 3, 5)), training=training)
    assert errors["input"] < TOL


# -------------------------------------------------------------- forward values
def test_batchnorm1d_train_matches_formula():
    bn = _randomise(BatchNorm1D(5, dtype=np.float64))
    x = _data((8, 5))
    out = bn(x)
    expected = _bn_reference(x, (0,), bn.gamma.data, bn.beta.data)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_batchnorm2d_train_matches_formula():
    bn = _randomise(BatchNorm2D(3, dtype=np.float64))
    x = _data((4, 3, 5, 6))
    out = bn(x)
    expected = _bn_reference(x, (0, 2, 3), bn.gamma.data, bn.beta.data)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # Each channel of the normalised output has mean beta and std |gamma| (approx).
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), bn.beta.data, atol=1e-12)


@pytest.mark.parametrize("make, shape, axes", [
    (lambda: BatchNorm1D(3, dtype=np.float64), (6, 3), (0,)),
    (lambda: BatchNorm2D(2, dtype=np.float64), (3, 2, 4, 4), (0, 2, 3)),
])
def test_running_stats_follow_pytorch_convention(make, shape, axes):
    bn = make()
    rm, rv = np.zeros(bn.num_features), np.ones(bn.num_features)
    for step in range(4):
        x = _data(shape, seed=step, loc=step, scale=1 + step)
        bn(x)
        n = x.size // bn.num_features
        mean = x.mean(axis=axes)
        unbiased = x.var(axis=axes) * n / (n - 1)
        rm = 0.9 * rm + 0.1 * mean
        rv = 0.9 * rv + 0.1 * unbiased
        np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, rv, rtol=1e-12)


def test_momentum_argument():
    bn = BatchNorm1D(2, momentum=0.5, dtype=np.float64)
    x = _data((10, 2))
    bn(x)
    np.testing.assert_allclose(bn.running_mean, 0.5 * x.mean(axis=0), rtol=1e-12)


def test_eval_uses_running_stats_and_leaves_them_alone():
    bn = _randomise(BatchNorm2D(3, dtype=np.float64)).eval()
    x = _data((2, 3, 4, 4))
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    out = bn(x)
    shape = (1, 3, 1, 1)
    expected = ((x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + 1e-5)
                * bn.gamma.data.reshape(shape) + bn.beta.data.reshape(shape))
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, rm)
    np.testing.assert_array_equal(bn.running_var, rv)
    # A single sample is fine in eval mode: it does not depend on the batch.
    np.testing.assert_allclose(bn(x[:1]), expected[:1], rtol=1e-12)


def test_mode_switch_and_explicit_argument():
    bn = _randomise(BatchNorm1D(3, dtype=np.float64))
    x = _data((5, 3))
    train_out = bn.forward(x, training=True)
    bn.eval()
    assert bn.training is False
    rm = bn.running_mean.copy()
    eval_out = bn(x)
    assert not np.allclose(train_out, eval_out)
    # The explicit argument wins for that call only.
    np.testing.assert_allclose(bn.forward(x, training=True),
                               _bn_reference(x, (0,), bn.gamma.data, bn.beta.data))
    assert not np.array_equal(bn.running_mean, rm)
    assert bn.training is False
    assert bn.train() is bn and bn.training


def test_float32_large_offset_is_not_cancelled():
    # Naive E[x^2] - E[x]^2 in float32 is useless here (x^2 ~ 1e8, ulp 8).
    x = (1e4 + _data((64, 3, 4, 4), loc=0.0, scale=1.0)).astype(np.float32)
    bn = BatchNorm2D(3)
    out = bn(x)
    assert out.dtype == np.float32
    expected = _bn_reference(x.astype(np.float64), (0, 2, 3), np.ones(3), np.zeros(3))
    np.testing.assert_allclose(out, expected, atol=2e-3)
    n = x.size // 3
    np.testing.assert_allclose(bn.running_var,
                               0.9 + 0.1 * x.astype(np.float64).var(axis=(0, 2, 3))
                               * n / (n - 1), rtol=1e-3)


# ---------------------------------------------------------------------- dtypes
def test_float32_stays_float32():
    bn = BatchNorm2D(2)
    assert bn.gamma.dtype == np.float32 and bn.running_var.dtype == np.float32
    x = _data((3, 2, 3, 3)).astype(np.float32)
    out = bn(x)
    dx = bn.backward(np.ones_like(out))
    assert out.dtype == dx.dtype == np.float32
    assert bn.gamma.grad.dtype == bn.beta.grad.dtype == np.float32
    assert bn.running_mean.dtype == bn.running_var.dtype == np.float32
    bn.eval()
    assert bn(x).dtype == np.float32


def test_float64_input_is_not_downcast():
    bn = BatchNorm1D(3)
    out = bn(_data((4, 3)))
    assert out.dtype == np.float64
    assert bn.backward(np.ones_like(out)).dtype == np.float64
    assert bn.gamma.grad.dtype == np.float32         # grad has the parameter's dtype
    assert bn.running_mean.dtype == np.float32


def test_to_converts_params_and_running_stats():
    bn = _randomise(BatchNorm1D(3))
    rm = bn.running_mean.copy()
    assert bn.to(np.float64) is bn
    for arr in (bn.gamma.data, bn.beta.data, bn.running_mean, bn.running_var):
        assert arr.dtype == np.float64
    np.testing.assert_array_equal(bn.running_mean, rm)


def test_dtype_argument_and_default_dtype():
    assert BatchNorm1D(2, dtype=np.float64).running_mean.dtype == np.float64
    airi.set_default_dtype(np.float64)
    bn = BatchNorm2D(2)
    assert bn.gamma.dtype == bn.running_var.dtype == np.float64


# ---------------------------------------------------------------- state/pickle
def test_state_dict_includes_running_stats():
    bn = _randomise(BatchNorm2D(3))
    state = bn.state_dict()
    assert set(state) == {"gamma", "beta", "running_mean", "running_var"}
    state["running_mean"][0] = 123.0                 # a copy, not the buffer
    assert bn.running_mean[0] != 123.0
    other = BatchNorm2D(3)
    other.load_state_dict(bn.state_dict())
    for name in state:
        np.testing.assert_array_equal(other.state_dict()[name], bn.state_dict()[name])


def test_load_state_dict_errors():
    bn = BatchNorm1D(3)
    state = bn.state_dict()
    del state["running_var"]
    with pytest.raises(KeyError, match="running_var"):
        bn.load_state_dict(state)
    state = bn.state_dict()
    state["running_mean"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"BatchNorm1D.*running_mean.*\(4,\)"):
        bn.load_state_dict(state)


def test_pickle_keeps_running_stats_and_drops_caches():
    bn = _randomise(BatchNorm2D(2))
    bn(_data((3, 2, 2, 2)).astype(np.float32))
    clone = pickle.loads(pickle.dumps(bn))
    np.testing.assert_array_equal(clone.running_mean, bn.running_mean)
    np.testing.assert_array_equal(clone.running_var, bn.running_var)
    assert clone._xhat is None
    with pytest.raises(RuntimeError, match="BatchNorm2D"):
        clone.backward(np.ones((3, 2, 2, 2), dtype=np.float32))


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("layer, shape, pattern", [
    (BatchNorm1D(4), (2, 3), r"BatchNorm1D.*\(\*, 4\).*\(2, 3\)"),
    (BatchNorm1D(4), (2, 4, 1), r"BatchNorm1D.*2-D.*\(2, 4, 1\)"),
    (BatchNorm2D(3), (2, 4, 5, 5), r"BatchNorm2D.*\(\*, 3, \*, \*\).*\(2, 4, 5, 5\)"),
    (BatchNorm2D(3), (2, 3, 5), r"BatchNorm2D.*4-D.*\(2, 3, 5\)"),
])
def test_bad_input_shape(layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer(np.zeros(shape, dtype=np.float32))


def test_integer_input_rejected():
    with pytest.raises(ValueError, match="BatchNorm1D.*float"):
        BatchNorm1D(2)(np.ones((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="Dropout.*float"):
        Dropout()(np.ones((3, 2), dtype=np.int64))


def test_single_value_per_channel_in_training():
    with pytest.raises(ValueError, match=r"BatchNorm1D.*more than 1 value.*\(1, 3\)"):
        BatchNorm1D(3)(np.ones((1, 3), dtype=np.float32))
    # BatchNorm2D with one image still has H*W values per channel.
    assert BatchNorm2D(3)(_data((1, 3, 2, 2)).astype(np.float32)).shape == (1, 3, 2, 2)


@pytest.mark.parametrize("layer", [BatchNorm1D(2), BatchNorm2D(2), Dropout(0.5)])
def test_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match=type(layer).__name__):
        layer.backward(np.ones((2, 2), dtype=np.float32))


def test_backward_after_zero_grad_and_bad_dout():
    bn = BatchNorm1D(2)
    x = _data((3, 2)).astype(np.float32)
    bn(x)
    with pytest.raises(ValueError, match=r"BatchNorm1D.*\(3, 2\).*\(2, 2\)"):
        bn.backward(np.ones((2, 2), dtype=np.float32))
    bn.zero_grad()
    with pytest.raises(RuntimeError):
        bn.backward(np.ones((3, 2), dtype=np.float32))


@pytest.mark.parametrize("kwargs", [dict(num_features=0), dict(num_features=2.5),
                                    dict(num_features=2, eps=0),
                                    dict(num_features=2, momentum=1.5)])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError, match="BatchNorm1D"):
        BatchNorm1D(**kwargs)


@pytest.mark.parametrize("bad", [3.5, True, "4", 0])
def test_num_features_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=r"BatchNorm2D: num_features must be a positive integer, "
                                         f"got {bad!r}"):
        BatchNorm2D(bad)
    assert BatchNorm2D(np.int32(3)).num_features == 3


@pytest.mark.parametrize("bad", [1.5, -0.1, True, "0.5", None])
def test_dropout_p_must_be_a_probability(bad):
    with pytest.raises(ValueError, match=r"Dropout: p must be a probability in \[0, 1\]"):
        Dropout(bad)
    assert Dropout(np.float32(0.25)).p == 0.25 and Dropout(1).p == 1.0


# --------------------------------------------------------------------- Dropout
def test_dropout_train_masks_and_scales():
    airi.seed(0)
    x = np.ones((200, 50), dtype=np.float32)
    out = Dropout(0.3)(x)
    assert out.dtype == np.float32
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    assert abs(out.mean() - 1.0) < 0.03              # expectation preserved


def test_dropout_backward_uses_the_same_mask():
    drop = Dropout(0.5)
    x = _data((6, 7)).astype(np.float32)
    out = drop(x)
    dx = drop.backward(np.ones_like(out))
    np.testing.assert_array_equal(dx != 0, out != 0)
    np.testing.assert_allclose(dx[dx != 0], 2.0)


def test_dropout_eval_is_identity():
    drop = Dropout(0.9).eval()
    x = _data((4, 5))
    np.testing.assert_array_equal(drop(x), x)
    dout = _data((4, 5), seed=1)
    np.testing.assert_array_equal(drop.backward(dout), dout)
    # Explicit training=True wins for one call.
    assert (drop.forward(x, training=True) == 0).mean() > 0.5


def test_dropout_seed_reproduces_masks():
    x = np.ones((10, 10), dtype=np.float32)
    airi.seed(42)
    a = Dropout(0.5)(x)
    b = Dropout(0.5)(x)
    airi.seed(42)
    np.testing.assert_array_equal(Dropout(0.5)(x), a)
    np.testing.assert_array_equal(Dropout(0.5)(x), b)
    assert not np.array_equal(a, b)
    # Same mask whatever the dtype of the input.
    airi.seed(42)
    np.testing.assert_array_equal(Dropout(0.5)(x.astype(np.float64)) != 0, a != 0)


def test_dropout_extreme_p():
    x = _data((3, 4))
    np.testing.assert_array_equal(Dropout(0.0)(x), x)
    np.testing.assert_array_equal(Dropout(1.0)(x), np.zeros_like(x))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="Dropout"):
            Dropout(p)


def test_dropout_pickle_drops_mask():
    drop = Dropout(0.5)
    drop(np.ones((3, 3), dtype=np.float32))
    clone = pickle.loads(pickle.dumps(drop))
    assert clone.p == 0.5 and clone._mask is None


# ---------------------------------------------- statistics hook (distributed)
class _ThreadRanks:
    """Simulates an MPI allreduce(sum) between ranks running in threads."""

    def __init__(self, size):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=20)
        self.slots = [None] * size
        self.local = threading.local()
        self.calls = []

    def __call__(self, stats):
        rank = self.local.rank
        self.calls.append((rank, stats.shape, stats.dtype))
        self.slots[rank] = stats.copy()
        self.barrier.wait()
        total = sum(self.slots)
        self.barrier.wait()                      # all have read before slots change
        return total

    def run(self, fn, args):
        results, errors = [None] * self.size, []

        def work(rank):
            self.local.rank = rank
            try:
                results[rank] = fn(*args[rank])
            except BaseException as exc:      # reported below, not lost in the thread
                errors.append(exc)
                self.barrier.abort()

        threads = [threading.Thread(target=work, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


@pytest.fixture
def restore_hook():
    previous = normalization.get_stats_allreduce()
    yield
    normalization.set_stats_allreduce(previous)


@pytest.mark.parametrize("make, shape", [
    (lambda: BatchNorm1D(3, dtype=np.float64), (7, 3)),
    (lambda: BatchNorm2D(2, dtype=np.float64), (5, 2, 3, 3)),
])
@pytest.mark.parametrize("split", [None, 0])
def test_hook_simulating_two_ranks_matches_full_batch(make, shape, split, restore_hook):
    full = _randomise(make())
    x = _data(shape, loc=3.0)
    dout = _data(shape, seed=11, loc=0.0, scale=1.0)
    # Reference: one process, the whole batch.
    out_full = full(x)
    dx_full = full.backward(dout)

    cut = shape[0] // 2 if split is None else split     # uneven, and an empty shard
    shards = [(x[:cut], dout[:cut]), (x[cut:], dout[cut:])]
    ranks = [copy.deepcopy(_randomise(make())) for _ in range(2)]
    reducer = _ThreadRanks(2)
    normalization.set_stats_allreduce(reducer)

    def step(layer, xs, ds):
        out = layer(xs)
        return out, layer.backward(ds), layer.gamma.grad, layer.beta.grad

    (o0, d0, g0, b0), (o1, d1, g1, b1) = reducer.run(
        step, [(ranks[0],) + shards[0], (ranks[1],) + shards[1]])

    np.testing.assert_allclose(np.concatenate([o0, o1]), out_full, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([d0, d1]), dx_full, rtol=1e-9, atol=1e-12)
    # Parameter gradients stay local sums: their sum over ranks is the full gradient.
    np.testing.assert_allclose(g0 + g1, full.gamma.grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b0 + b1, full.beta.grad, rtol=1e-10, atol=1e-12)
    for layer in ranks:
        np.testing.assert_allclose(layer.running_mean, full.running_mean, rtol=1e-12)
        np.testing.assert_allclose(layer.running_var, full.running_var, rtol=1e-12)
    # One reduction of (count, sum, sum of squares) forward, (2, C) backward, per rank.
    c = full.num_features
    assert sorted(reducer.calls) == [(0, (2, c), np.float64), (0, (3, c), np.float64),
                                     (1, (2, c), np.float64), (1, (3, c), np.float64)]


def test_hook_not_called_in_eval_and_identity_by_default(restore_hook):
    calls = []
    previous = normalization.set_stats_allreduce(lambda s: calls.append(s) or s)
    assert previous is normalization._local_stats
    bn = _randomise(BatchNorm1D(2)).eval()
    out = bn(_data((3, 2)).astype(np.float32))
    bn.backward(np.ones_like(out))
    assert calls == []
    bn.train()
    bn.backward(np.ones_like(bn(_data((3, 2)).astype(np.float32))))
    assert [c.shape for c in calls] == [(3, 2), (2, 2)]
    np.testing.assert_array_equal(calls[0][0], [3, 3])          # the count row
    assert normalization.set_stats_allreduce(None) is not normalization._local_stats
    assert normalization.get_stats_allreduce() is normalization._local_stats


def test_hook_returning_wrong_shape_is_reported(restore_hook):
    normalization.set_stats_allreduce(lambda s: s[:2])
    with pytest.raises(RuntimeError, match="hook returned shape"):
        BatchNorm1D(2)(_data((3, 2)))
    with pytest.raises(TypeError):
        normalization.set_stats_allreduce(42)
