"""Optimizers: update rules (hand-computed and against plain-NumPy references written
from the PyTorch documentation), dtypes, in-place updates, state dicts, validation."""
import math
import pickle
import tracemalloc

import numpy as np
import pytest

import airi
from airi import Parameter
from airi.optim import SGD, AdaGrad, Adagrad, RMSProp, RMSprop, Adam, AdamW, Optimizer

P0 = np.array([1.0, -2.0])
G1 = np.array([0.5, 1.0])
G2 = np.array([-1.0, 0.25])
G3 = np.array([0.125, -0.5])


def run(opt_cls, grads, p0=P0, dtype=np.float64, **kwargs):
    """Values of a parameter after each step of ``opt_cls`` fed with ``grads``."""
    p = Parameter(np.array(p0, dtype=dtype))
    opt = opt_cls([p], **kwargs)
    out = []
    for g in grads:
        p.grad = np.array(g, dtype=dtype)
        opt.step()
        out.append(p.data.copy())
    return out


# ------------------------------------------------------------------ hand-computed steps
@pytest.mark.parametrize("kwargs, expected", [
    # plain: p - lr*g
    (dict(lr=0.1), [[0.95, -2.1], [1.05, -2.125]]),
    # momentum 0.9: b1 = g1, b2 = 0.9*b1 + g2 = [-0.55, 1.15]
    (dict(lr=0.1, momentum=0.9), [[0.95, -2.1], [1.005, -2.215]]),
    # nesterov: d1 = g1 + 0.9*b1 = 1.9*g1; d2 = g2 + 0.9*b2 = [-1.495, 1.285]
    (dict(lr=0.1, momentum=0.9, nesterov=True), [[0.905, -2.19], [1.0545, -2.3185]]),
    # weight decay 0.1: d1 = g1 + 0.1*p0 = [0.6, 0.8]; d2 = g2 + 0.1*p1 = [-0.906, 0.042]
    (dict(lr=0.1, weight_decay=0.1), [[0.94, -2.08], [1.0306, -2.0842]]),
    # dampening 0.5: first buffer is the raw gradient; b2 = 0.9*b1 + 0.5*g2 = [-0.05, 1.025]
    (dict(lr=0.1, momentum=0.9, dampening=0.5), [[0.95, -2.1], [0.955, -2.2025]]),
])
def test_sgd_hand_computed(kwargs, expected):
    out = run(SGD, [G1, G2], **kwargs)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_adam_first_step_is_lr_times_sign():
    # t=1: m = 0.1 g, v = 0.001 g^2 -> step = lr/0.1 * 0.1 g / (|g| + eps)
    out = run(Adam, [G1], lr=0.1)
    np.testing.assert_allclose(out[0], P0 - 0.1 * G1 / (np.abs(G1) + 1e-8), atol=1e-12)
    np.testing.assert_allclose(out[0], [0.9, -2.1], atol=1e-7)


def test_adamw_first_step_decays_weights_first():
    out = run(AdamW, [G1], lr=0.1, weight_decay=0.5)
    expected = P0 * (1 - 0.1 * 0.5) - 0.1 * G1 / (np.abs(G1) + 1e-8)
    np.testing.assert_allclose(out[0], expected, atol=1e-12)
    np.testing.assert_allclose(out[0], [0.85, -2.0], atol=1e-7)


def test_adam_coupled_weight_decay_enters_the_gradient():
    # with L2 in the gradient, the first step is still lr * sign(g + wd * p)
    out = run(Adam, [G1], lr=0.1, weight_decay=1.0)    # g + p = [1.5, -1.0]
    np.testing.assert_allclose(out[0], [0.9, -1.9], atol=1e-7)


def test_adagrad_two_steps_by_hand():
    out = run(AdaGrad, [G1, G2], lr=0.1, lr_decay=0.5)
    p1 = P0 - 0.1 * G1 / (np.sqrt(G1 ** 2) + 1e-10)              # [0.9, -2.1]
    s2 = G1 ** 2 + G2 ** 2                                          # [1.25, 1.0625]
    p2 = p1 - 0.1 / (1 + 1 * 0.5) * G2 / (np.sqrt(s2) + 1e-10)
    np.testing.assert_allclose(out[0], [0.9, -2.1], atol=1e-9)
    np.testing.assert_allclose(out[1], p2, atol=1e-12)


def test_rmsprop_first_step_by_hand():
    # v = 0.01 g^2 -> den = 0.1 |g| (+eps): the step is 10 * lr * sign(g)
    out = run(RMSProp, [G1], lr=0.01)
    np.testing.assert_allclose(out[0], [0.9, -2.1], atol=1e-7)
    # centered: v - m^2 = 0.01 g^2 - 0.0001 g^2 = 0.0099 g^2
    out = run(RMSProp, [G1], lr=0.01, centered=True)
    np.testing.assert_allclose(out[0], P0 - 0.01 * np.sign(G1) / math.sqrt(0.0099),
                               atol=1e-7)


# ---------------------------------------------- references written from torch's docs
def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    out, b = [], None
    for g in grads:
        g = g + weight_decay * p
        if momentum:
            b = g.copy() if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
        out.append(p)
    return out


def ref_adagrad(p, grads, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                initial_accumulator_value=0.0, eps=1e-10):
    out, s = [], np.full_like(p, initial_accumulator_value)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (np.sqrt(s) + eps)
        out.append(p)
    return out


def ref_rmsprop(p, grads, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    out = []
    v, m, b = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            m = alpha * m + (1 - alpha) * g
            den = np.sqrt(v - m * m) + eps
        else:
            den = np.sqrt(v) + eps
        if momentum > 0:
            b = momentum * b + g / den
            p = p - lr * b
        else:
            p = p - lr * g / den
        out.append(p)
    return out


def ref_adam(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             amsgrad=False, decoupled=False):
    b1, b2 = betas
    out = []
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        v_hat = (vmax if amsgrad else v) / (1 - b2 ** t)
        p = p - lr / (1 - b1 ** t) * m / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


def ref_adamw(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
              amsgrad=False):
    return ref_adam(p, grads, lr, betas, eps, weight_decay, amsgrad, decoupled=True)


CASES = [
    (SGD, ref_sgd, dict(lr=0.1)),
    (SGD, ref_sgd, dict(lr=0.1, momentum=0.9)),
    (SGD, ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    (SGD, ref_sgd, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    (AdaGrad, ref_adagrad, dict()),
    (AdaGrad, ref_adagrad, dict(lr=0.1, lr_decay=0.1, weight_decay=0.05,
                                initial_accumulator_value=0.2)),
    (RMSProp, ref_rmsprop, dict()),
    (RMSProp, ref_rmsprop, dict(lr=0.01, alpha=0.9, momentum=0.5, weight_decay=0.1)),
    (RMSProp, ref_rmsprop, dict(lr=0.01, centered=True, momentum=0.9)),
    (Adam, ref_adam, dict()),
    (Adam, ref_adam, dict(lr=0.1, betas=(0.8, 0.99), weight_decay=0.1)),
    (Adam, ref_adam, dict(lr=0.1, amsgrad=True)),
    (Adam, ref_adam, dict(lr=0.1, betas=(0.3, 0.9))),    # beta1 < 0.5: other lerp form
    (AdamW, ref_adamw, dict()),
    (AdamW, ref_adamw, dict(lr=0.1, weight_decay=0.2, amsgrad=True)),
]
CASE_IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(CASES)]


def random_grads(n_steps, shape, seed=0):
    rng = np.random.default_rng(seed)
    # a large first gradient then small ones: v decreases, which AMSGrad must notice
    scales = [4.0] + [0.5] * (n_steps - 1)
    return [s * rng.standard_normal(shape) for s in scales]


@pytest.mark.parametrize("cls, ref, kwargs", CASES, ids=CASE_IDS)
def test_rule_matches_reference_float64(cls, ref, kwargs):
    grads = random_grads(4, (3, 2))
    p0 = np.random.default_rng(1).standard_normal((3, 2))
    got = run(cls, grads, p0=p0, **kwargs)
    expected = ref(p0, grads, **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # the parameter really moved
    assert not np.allclose(got[-1], p0)


def test_amsgrad_differs_from_adam_when_v_decreases():
    grads = random_grads(4, (5,))
    plain = run(Adam, grads, p0=np.zeros(5), lr=0.1)
    ams = run(Adam, grads, p0=np.zeros(5), lr=0.1, amsgrad=True)
    np.testing.assert_allclose(plain[0], ams[0])
    assert not np.allclose(plain[-1], ams[-1])


@pytest.mark.parametrize("cls, ref, kwargs", CASES, ids=CASE_IDS)
def test_float32_stays_float32(cls, ref, kwargs):
    grads = random_grads(3, (4,))
    p0 = np.linspace(-1, 1, 4)
    p = Parameter(p0.astype(np.float32))
    opt = cls([p], **kwargs)
    for g in grads:
        p.grad = g.astype(np.float32)
        opt.step()
        assert p.data.dtype == np.float32
    for key, value in opt.state[0].items():
        if key != "step":
            assert value.dtype == np.float32, key
    expected = ref(p0, [g.astype(np.float32).astype(np.float64) for g in grads], **kwargs)
    np.testing.assert_allclose(p.data, expected[-1], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ mechanics
def make_opt(cls, kwargs, shapes=((3, 2), (4,)), dtype=np.float64, seed=3):
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.standard_normal(s).astype(dtype), name=f"p{i}")
              for i, s in enumerate(shapes)]
    return params, cls(params, **kwargs)


def feed(params, opt, n_steps, seed=7):
    rng = np.random.default_rng(seed)
    for _ in range(n_steps):
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        opt.step()


@pytest.mark.parametrize("cls, ref, kwargs", CASES, ids=CASE_IDS)
def test_updates_in_place_and_reuses_buffers(cls, ref, kwargs):
    params, opt = make_opt(cls, kwargs)
    arrays = [p.data for p in params]
    feed(params, opt, 1)
    buffers = [{k: v for k, v in s.items() if k != "step"} for s in opt.state]
    feed(params, opt, 2, seed=8)
    for p, a in zip(params, arrays):
        assert p.data is a
    for s, before in zip(opt.state, buffers):
        for key, buf in before.items():
            assert s[key] is buf
        assert s["step"] == 3


def test_step_allocates_no_parameter_sized_memory():
    n = 200_000                                   # 1.6 MB per float64 array
    for cls, kwargs in [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
                        (Adam, dict(weight_decay=1e-3, amsgrad=True)),
                        (RMSProp, dict(centered=True, momentum=0.9, weight_decay=1e-3)),
                        (AdaGrad, dict(weight_decay=1e-3))]:
        p = Parameter(np.ones(n))
        p.grad = np.full(n, 0.5)
        opt = cls([p], **kwargs)
        opt.step()                                # creates state and scratch space
        tracemalloc.start()
        try:
            opt.step()
            opt.step()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < n * 8 // 10, (cls.__name__, peak)


def test_data_reassigned_before_creation_is_updated():
    layer_param = Parameter(np.zeros(3), name="w")
    new = np.array([1.0, 2.0, 3.0])
    layer_param.data = new                      # e.g. weights loaded from elsewhere
    opt = SGD([layer_param], lr=0.5)
    layer_param.grad = np.ones(3)
    opt.step()
    assert layer_param.data is new
    np.testing.assert_allclose(new, [0.5, 1.5, 2.5])


def test_data_reassigned_or_converted_after_creation_is_read_at_step_time():
    p = Parameter(np.zeros(2))
    opt = Adam([p], lr=0.1)
    p.grad = np.ones(2)
    opt.step()
    newer = np.array([5.0, 5.0])
    p.data = newer
    opt.step()
    assert p.data is newer and np.all(newer < 5.0)
    p.to(np.float32)                            # model.to(float32) after training began
    p.grad = np.ones(2, dtype=np.float32)
    opt.step()
    assert p.data.dtype == np.float32
    assert opt.state[0]["exp_avg"].dtype == np.float32


@pytest.mark.parametrize("cls, ref, kwargs", CASES, ids=CASE_IDS)
def test_grad_none_is_skipped(cls, ref, kwargs):
    params, opt = make_opt(cls, kwargs)
    frozen = params[1].data.copy()
    params[0].grad = np.ones(params[0].shape)
    params[1].grad = None
    before = params[0].data.copy()
    opt.step()
    np.testing.assert_array_equal(params[1].data, frozen)
    assert opt.state[1] == {}
    assert not np.allclose(params[0].data, before)


def test_zero_grad():
    params, opt = make_opt(SGD, dict(lr=0.1))
    for p in params:
        p.grad = np.ones(p.shape)
    grad0 = params[0].grad
    opt.zero_grad(set_to_none=False)
    assert params[0].grad is grad0 and not grad0.any()
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_wrong_gradient_shape_is_reported():
    p = Parameter(np.zeros((2, 3)), name="weight")
    opt = SGD([p], lr=0.1)
    p.grad = np.zeros(6)
    with pytest.raises(ValueError, match=r"'weight'.*\(6,\).*\(2, 3\)"):
        opt.step()


def test_closure_result_is_returned():
    p = Parameter(np.zeros(2))
    opt = SGD([p], lr=0.1)

    def closure():
        p.grad = np.ones(2)
        return 1.25
    assert opt.step(closure) == 1.25
    np.testing.assert_allclose(p.data, [-0.1, -0.1])


def test_lr_and_momentum_are_plain_attributes():
    p = Parameter(np.zeros(1))
    opt = SGD([p], lr=0.1, momentum=0.5)
    opt.lr = 0.01
    opt.momentum = 0.0
    p.grad = np.ones(1)
    opt.step()
    np.testing.assert_allclose(p.data, [-0.01])
    opt.param_groups[0]["lr"] = 1.0            # the PyTorch way writes through
    assert opt.lr == 1.0
    assert opt.param_groups[0]["params"][0] is p
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -0.1


def test_aliases():
    assert Adagrad is AdaGrad and RMSprop is RMSProp
    assert airi.optim.Adam is Adam and issubclass(AdamW, Optimizer)


def test_defaults_are_torch_defaults():
    p = [Parameter(np.zeros(1))]
    assert AdaGrad(p).defaults == dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                                       initial_accumulator_value=0.0, eps=1e-10)
    assert RMSProp(p).defaults == dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                                       momentum=0.0, centered=False)
    assert Adam(p).defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                    weight_decay=0.0, amsgrad=False)
    assert AdamW(p).weight_decay == 1e-2
    assert SGD(p, lr=0.1).defaults == dict(lr=0.1, momentum=0.0, dampening=0.0,
                                           nesterov=False, weight_decay=0.0)


@pytest.mark.parametrize("make, match", [
    (lambda p: SGD([], lr=0.1), "empty"),
    (lambda p: SGD([p[0], np.zeros(2)], lr=0.1), r"params\[1\].*ndarray"),
    (lambda p: SGD(p[0], lr=0.1), "single Parameter"),
    (lambda p: SGD(p + p, lr=0.1), "twice"),
    (lambda p: SGD(p), "lr is required"),
    (lambda p: SGD(p, lr=-1), "lr must be >= 0"),
    (lambda p: SGD(p, lr="fast"), "lr must be a number"),
    (lambda p: SGD(p, lr=float("nan")), "finite"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "Nesterov"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: Adam(p, betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda p: Adam(p, betas=(-0.1, 0.9)), r"betas\[0\]"),
    (lambda p: Adam(p, betas=0.9), "pair"),
    (lambda p: Adam(p, eps=-1e-8), "eps"),
    (lambda p: AdamW(p, amsgrad="yes"), "amsgrad"),
    (lambda p: RMSProp(p, alpha=1.5), "alpha"),
    (lambda p: AdaGrad(p, lr_decay=-1), "lr_decay"),
])
def test_validation(make, match):
    params = [Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match=match):
        make(params)


def test_passing_a_model_instead_of_its_parameters():
    class Model:
        def parameters(self):
            return [Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match=r"model.parameters\(\)"):
        Adam(Model())


def test_generator_of_parameters_is_accepted():
    params = [Parameter(np.zeros(2)), Parameter(np.zeros(3))]
    opt = Adam(p for p in params)
    assert opt.params == params


# ------------------------------------------------------------------ state dicts
def assert_plain(obj, path="state"):
    """Only what airi.save's safe loader admits: containers, scalars, arrays."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), path
            assert_plain(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            assert_plain(v, f"{path}[{i}]")
    elif isinstance(obj, np.ndarray):
        assert obj.dtype.kind == "f", path
    else:
        assert obj is None or type(obj) in (bool, int, float, str), (path, type(obj))


@pytest.mark.parametrize("cls, ref, kwargs", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_state_dict_round_trip_continues_identically(cls, ref, kwargs, dtype):
    params_a, opt_a = make_opt(cls, kwargs, dtype=dtype)
    feed(params_a, opt_a, 5)

    params_b, opt_b = make_opt(cls, kwargs, dtype=dtype)
    rng = np.random.default_rng(7)          # same gradient stream as feed(seed=7)
    for _ in range(2):
        for p in params_b:
            p.grad = rng.standard_normal(p.shape).astype(dtype)
        opt_b.step()
    saved = pickle.loads(pickle.dumps(opt_b.state_dict()))
    assert_plain(saved)

    opt_c = cls(params_b, **kwargs)
    if "lr" in kwargs:
        opt_c.lr = kwargs["lr"] * 3         # must be restored by load_state_dict
    opt_c.load_state_dict(saved)
    assert opt_c.lr == opt_b.lr
    for _ in range(3):
        for p in params_b:
            p.grad = rng.standard_normal(p.shape).astype(dtype)
        opt_c.step()
    for pa, pb in zip(params_a, params_b):
        np.testing.assert_array_equal(pa.data, pb.data)
    assert opt_c.state[0]["step"] == 5


def test_state_dict_is_a_copy():
    params, opt = make_opt(SGD, dict(lr=0.1, momentum=0.9))
    feed(params, opt, 1)
    sd = opt.state_dict()
    snapshot = sd["state"][0]["momentum_buffer"].copy()
    feed(params, opt, 1)
    np.testing.assert_array_equal(sd["state"][0]["momentum_buffer"], snapshot)


def test_load_state_dict_copies_into_existing_buffers():
    params, opt = make_opt(Adam, dict(lr=0.1))
    feed(params, opt, 2)
    sd = opt.state_dict()
    buf = opt.state[0]["exp_avg"]
    feed(params, opt, 1)
    opt.load_state_dict(sd)
    assert opt.state[0]["exp_avg"] is buf
    np.testing.assert_array_equal(buf, sd["state"][0]["exp_avg"])


def test_load_state_dict_validates_and_changes_nothing_on_error():
    params, opt = make_opt(Adam, dict(lr=0.1))
    feed(params, opt, 1)
    good = opt.state_dict()
    before = opt.state_dict()

    wrong_shape = pickle.loads(pickle.dumps(good))
    wrong_shape["state"][1]["exp_avg"] = np.zeros(5)
    wrong_shape["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ValueError, match=r"exp_avg of params\[1\].*\(5,\).*\(4,\)"):
        opt.load_state_dict(wrong_shape)
    assert opt.lr == 0.1
    np.testing.assert_array_equal(opt.state[1]["exp_avg"], before["state"][1]["exp_avg"])

    with pytest.raises(ValueError, match="saved by Adam"):
        SGD(params, lr=0.1).load_state_dict(good)
    with pytest.raises(ValueError, match="2 parameters"):
        Adam(params[:1]).load_state_dict(good)
    bad_beta = pickle.loads(pickle.dumps(good))
    bad_beta["param_groups"][0]["betas"] = (0.9, 2.0)
    with pytest.raises(ValueError, match="betas"):
        opt.load_state_dict(bad_beta)
    with pytest.raises(ValueError, match="expected a dict"):
        opt.load_state_dict([1, 2])


def test_optimizer_pickles():
    params, opt = make_opt(RMSProp, dict(momentum=0.9))
    feed(params, opt, 2)
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.param_groups[0]["momentum"] == 0.9
    feed(clone.params, clone, 1)            # scratch space is rebuilt
    assert clone.state[0]["step"] == 3


# ------------------------------------------------------------------ convergence
@pytest.mark.parametrize("cls, kwargs", [
    (SGD, dict(lr=0.1, momentum=0.9)), (SGD, dict(lr=0.1, nesterov=True, momentum=0.5)),
    (AdaGrad, dict(lr=0.5)), (RMSProp, dict(lr=0.01)), (Adam, dict(lr=0.05)),
    (AdamW, dict(lr=0.05, weight_decay=0.0)),
])
def test_minimises_a_quadratic(cls, kwargs):
    target = np.array([3.0, -1.0, 0.5], dtype=np.float32)
    p = Parameter(np.zeros(3, dtype=np.float32))
    opt = cls([p], **kwargs)
    for _ in range(500):
        opt.zero_grad()
        p.grad = 2 * (p.data - target)      # d/dp |p - target|^2
        opt.step()
    np.testing.assert_allclose(p.data, target, atol=0.05)


# ------------------------------------------------------------------ PyTorch (optional)
TORCH_CLASSES = {SGD: "SGD", AdaGrad: "Adagrad", RMSProp: "RMSprop", Adam: "Adam",
                 AdamW: "AdamW"}


@pytest.mark.parametrize("cls, ref, kwargs", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch_step_for_step(cls, ref, kwargs, dtype):
    torch = pytest.importorskip("torch")
    grads = random_grads(5, (3, 4), seed=11)
    p0 = np.random.default_rng(2).standard_normal((3, 4)).astype(dtype)
    p = Parameter(p0.copy())
    ours = cls([p], **kwargs)
    t = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    theirs = getattr(torch.optim, TORCH_CLASSES[cls])([t], foreach=False, **kwargs)
    tight = dtype == np.float64
    tol = dict(rtol=1e-12, atol=1e-12) if tight else dict(rtol=2e-6, atol=2e-6)
    for g in grads:
        p.grad = g.astype(dtype)
        t.grad = torch.from_numpy(g.astype(dtype))
        ours.step()
        theirs.step()
        np.testing.assert_allclose(p.data, t.detach().numpy(), **tol)
