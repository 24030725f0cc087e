"""Issue 15's optimizer and schedules (Adadelta, OneCycleLR, ReduceLROnPlateau): their
rules, and 50-step trajectories equal to PyTorch 2.13's to 1e-7 when torch is installed."""
import math
import pickle

import numpy as np
import pytest

import airi
from airi import Parameter
from airi.lr_scheduler import OneCycleLR, ReduceLROnPlateau
from airi.optim import SGD, Adadelta, Adagrad, Adam, AdamW, RMSProp

STEPS = 50


def _grads(shape=(3, 4), n=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) * (3.0 if i == 0 else 0.7) for i in range(n)]


def _ref_adadelta(p0, grads, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    """Zeiler's rule written from torch's documentation."""
    p, v, u, out = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), []
    for g in grads:
        g = g + weight_decay * p
        v = rho * v + (1 - rho) * g * g
        delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        p = p - lr * delta
        out.append(p.copy())
    return out


ADADELTA_CASES = [dict(), dict(lr=0.5, rho=0.95, eps=1e-5, weight_decay=0.01)]


@pytest.mark.parametrize("kwargs", ADADELTA_CASES, ids=str)
def test_adadelta_rule(kwargs):
    grads = _grads()
    p0 = np.random.default_rng(1).standard_normal((3, 4))
    p = Parameter(p0.copy())
    opt = Adadelta([p], **kwargs)
    expected = _ref_adadelta(p0, grads, **kwargs)
    for g, e in zip(grads, expected):
        p.grad = g
        opt.step()
        np.testing.assert_allclose(p.data, e, rtol=1e-12, atol=1e-14)
    assert set(opt.state[0]) == {"step", "square_avg", "acc_delta"}


def test_adadelta_defaults_state_dict_and_checks():
    p = Parameter(np.ones(3))
    opt = Adadelta([p])
    assert (opt.lr, opt.rho, opt.eps, opt.weight_decay) == (1.0, 0.9, 1e-6, 0.0)
    p.grad = np.ones(3)
    opt.step()
    state = opt.state_dict()
    other = Adadelta([Parameter(np.ones(3))])
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.state[0]["acc_delta"], opt.state[0]["acc_delta"])
    assert pickle.loads(pickle.dumps(opt)).rho == 0.9
    with pytest.raises(ValueError, match="rho"):
        Adadelta([p], rho=1.5)
    with pytest.raises(ValueError, match="lr"):
        Adadelta([p], lr=-1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", ADADELTA_CASES, ids=str)
def test_adadelta_matches_torch(kwargs, dtype):
    torch = pytest.importorskip("torch")
    grads = _grads()
    p0 = np.random.default_rng(2).standard_normal((3, 4)).astype(dtype)
    p = Parameter(p0.copy())
    ours = Adadelta([p], **kwargs)
    t = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    theirs = torch.optim.Adadelta([t], foreach=False, **kwargs)
    tol = 1e-7 if dtype == np.float64 else 2e-5
    for g in grads:
        p.grad = g.astype(dtype)
        t.grad = torch.from_numpy(g.astype(dtype))
        ours.step()
        theirs.step()
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=tol, atol=tol)


# ------------------------------------------------------------------------ OneCycleLR
def test_one_cycle_shape_of_the_cycle():
    p = Parameter(np.zeros(2))
    opt = SGD([p], lr=123.0, momentum=0.9)
    sched = OneCycleLR(opt, max_lr=1.0, total_steps=100)
    assert sched.step_per_batch
    assert opt.lr == pytest.approx(1.0 / 25) and opt.momentum == pytest.approx(0.95)
    lrs, moms = [opt.lr], [opt.momentum]
    for _ in range(99):
        sched.step()
        lrs.append(opt.lr)
        moms.append(opt.momentum)
    peak = int(np.argmax(lrs))
    assert peak == 29 and lrs[peak] == pytest.approx(1.0)
    assert moms[peak] == pytest.approx(0.85)
    assert lrs[-1] == pytest.approx(1.0 / 25 / 1e4)
    assert moms[-1] == pytest.approx(0.95)
    assert all(np.diff(lrs[:30]) > 0) and all(np.diff(lrs[30:]) < 0)
    sched.step()                                     # step total_steps: allowed
    with pytest.raises(ValueError, match="total_steps=100"):
        sched.step()


def test_one_cycle_arguments():
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="total_steps, or both epochs"):
        OneCycleLR(SGD([p], lr=0.1), max_lr=1.0)
    sched = OneCycleLR(SGD([p], lr=0.1, momentum=0.9), max_lr=1.0, epochs=3,
                       steps_per_epoch=7)
    assert sched.total_steps == 21
    with pytest.raises(ValueError, match="no momentum or beta1"):
        OneCycleLR(Adadelta([p]), max_lr=1.0, total_steps=10)
    OneCycleLR(Adadelta([p]), max_lr=1.0, total_steps=10, cycle_momentum=False)
    with pytest.raises(ValueError, match="anneal_strategy"):
        OneCycleLR(SGD([p], lr=0.1), max_lr=1.0, total_steps=10, anneal_strategy="exp")
    with pytest.raises(ValueError, match="pct_start"):
        OneCycleLR(SGD([p], lr=0.1), max_lr=1.0, total_steps=10, pct_start=1.5)


def test_one_cycle_state_dict_round_trip():
    p = Parameter(np.zeros(2))
    opt = Adam([p], lr=0.1)
    sched = OneCycleLR(opt, max_lr=0.5, total_steps=40)
    for _ in range(13):
        sched.step()
    state = sched.state_dict()
    opt2 = Adam([Parameter(np.zeros(2))], lr=0.1)
    other = OneCycleLR(opt2, max_lr=0.5, total_steps=40)
    other.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert other.last_epoch == 13 and opt2.lr == opt.lr and opt2.betas == opt.betas


ONE_CYCLE_CASES = [
    (SGD, dict(lr=0.1, momentum=0.9), dict(max_lr=0.5)),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True), dict(max_lr=0.5, pct_start=0.25)),
    (SGD, dict(lr=0.1, momentum=0.9), dict(max_lr=0.5, three_phase=True,
                                            anneal_strategy="linear")),
    (SGD, dict(lr=0.1), dict(max_lr=0.3, cycle_momentum=False, div_factor=10.0,
                             final_div_factor=100.0)),
    (Adam, dict(lr=0.01), dict(max_lr=0.05, base_momentum=0.8, max_momentum=0.9)),
    (AdamW, dict(lr=0.01), dict(max_lr=0.05, three_phase=True)),
    (RMSProp, dict(lr=0.01, momentum=0.5), dict(max_lr=0.02)),
    (Adadelta, dict(), dict(max_lr=1.0, cycle_momentum=False)),
    (Adagrad, dict(), dict(max_lr=0.1, cycle_momentum=False)),
]
TORCH_NAMES = {SGD: "SGD", Adam: "Adam", AdamW: "AdamW", RMSProp: "RMSprop",
               Adadelta: "Adadelta", Adagrad: "Adagrad"}


@pytest.mark.parametrize("cls, opt_kw, sched_kw", ONE_CYCLE_CASES,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in
                              enumerate(ONE_CYCLE_CASES)])
def test_one_cycle_matches_torch(cls, opt_kw, sched_kw):
    """Per-step rate, momentum and parameters over a 50-step cycle."""
    torch = pytest.importorskip("torch")
    grads = _grads(n=STEPS)
    p0 = np.random.default_rng(3).standard_normal((3, 4))
    p = Parameter(p0.copy())
    ours = cls([p], **opt_kw)
    our_sched = OneCycleLR(ours, total_steps=STEPS, **sched_kw)
    t = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    theirs = getattr(torch.optim, TORCH_NAMES[cls])([t], foreach=False, **opt_kw)
    their_sched = torch.optim.lr_scheduler.OneCycleLR(theirs, total_steps=STEPS,
                                                      **sched_kw)
    group = theirs.param_groups[0]
    for g in grads:
        assert ours.lr == pytest.approx(group["lr"], rel=1e-12, abs=1e-15)
        if sched_kw.get("cycle_momentum", True):
            mine = ours.betas[0] if "betas" in group else ours.momentum
            theirs_m = group["betas"][0] if "betas" in group else group["momentum"]
            assert mine == pytest.approx(theirs_m, rel=1e-12)
        p.grad = g
        t.grad = torch.from_numpy(g.copy())
        ours.step()
        theirs.step()
        our_sched.step()
        their_sched.step()
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-7, atol=1e-9)
    # after the last step (step total_steps) both extrapolate; airi floors the rate at 0
    assert our_sched.get_last_lr()[0] == pytest.approx(
        max(their_sched.get_last_lr()[0], 0.0), rel=1e-12)


# ----------------------------------------------------------------- ReduceLROnPlateau
def _metrics(seed=0, n=STEPS):
    """A loss that improves, plateaus, improves a little, and is noisy."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([np.linspace(1.0, 0.5, 10), np.full(15, 0.5),
                           np.linspace(0.5, 0.45, 10), np.full(n - 35, 0.45)])
    return base + rng.normal(0, 1e-5, n)


PLATEAU_CASES = [
    dict(),
    dict(patience=2),
    dict(patience=1, factor=0.5, cooldown=2),
    dict(patience=2, threshold=0.01, threshold_mode="abs", min_lr=0.004),
    dict(mode="max", patience=3, factor=0.3),
    dict(mode="max", patience=0, threshold_mode="abs", threshold=0.0, eps=0.05),
]


@pytest.mark.parametrize("kwargs", PLATEAU_CASES, ids=str)
def test_plateau_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    metrics = _metrics()
    if kwargs.get("mode") == "max":
        metrics = 1.0 - metrics
    p = Parameter(np.zeros(2))
    ours = SGD([p], lr=0.1, momentum=0.9)
    sched = ReduceLROnPlateau(ours, **kwargs)
    t = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    theirs = torch.optim.SGD([t], lr=0.1, momentum=0.9)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **kwargs)
    seen = set()
    for m in metrics:
        sched.step(m)
        tsched.step(m)
        assert ours.lr == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12)
        assert sched.num_bad_epochs == tsched.num_bad_epochs
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12)
        seen.add(ours.lr)
    assert len(seen) > 1 or kwargs.get("eps")          # the rate did change


def test_plateau_rule_and_state():
    p = Parameter(np.zeros(2))
    opt = SGD([p], lr=1.0)
    sched = ReduceLROnPlateau(opt, patience=2, factor=0.5)
    for m in [1.0, 0.9, 0.9, 0.9]:
        sched.step(m)
    assert opt.lr == 1.0                     # 2 bad epochs: tolerated
    sched.step(0.9)
    assert opt.lr == 0.5 and sched.num_bad_epochs == 0
    state = pickle.loads(pickle.dumps(sched.state_dict()))
    other = ReduceLROnPlateau(SGD([Parameter(np.zeros(2))], lr=0.5), patience=2,
                              factor=0.5)
    other.load_state_dict(state)
    assert other.best == 0.9 and other.last_epoch == 5
    with pytest.raises(ValueError, match="factor must be < 1.0"):
        ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(ValueError, match="metric"):
        sched.step(None)
    assert math.isinf(ReduceLROnPlateau(opt, mode="max").best)


def test_new_classes_are_saved_in_checkpoints(tmp_path):
    p = Parameter(np.zeros(2))
    opt = SGD([p], lr=0.1, momentum=0.9)
    state = {"sched": OneCycleLR(opt, max_lr=0.5, total_steps=10).state_dict(),
             "plateau": ReduceLROnPlateau(opt).state_dict(),
             "opt": Adadelta([p]).state_dict()}
    airi.save(state, tmp_path / "ckpt.airi")
    back = airi.load(tmp_path / "ckpt.airi")
    assert back["sched"]["total_steps"] == 10 and back["plateau"]["patience"] == 10
