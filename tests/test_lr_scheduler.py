"""Schedules: closed-form values over epochs, the momentum ramp, state dicts."""
import math
import pickle

import numpy as np
import pytest

from airi import Parameter
from airi.lr_scheduler import (LRScheduler, StepLR, MultiStepLR, ExponentialLR,
                               CosineAnnealingLR, LinearLR, LinearWarmup,
                               MomentumSchedule, ChainedScheduler)
from airi.optim import SGD, Adam, AdamW, AdaGrad, RMSProp


def sgd(lr=0.1, **kwargs):
    return SGD([Parameter(np.zeros(2))], lr=lr, **kwargs)


def lrs_over(scheduler, epochs):
    """The optimizer's lr at epochs 0..epochs-1 (step() once after each epoch)."""
    out = []
    for _ in range(epochs):
        out.append(scheduler.optimizer.lr)
        assert scheduler.get_last_lr() == [scheduler.optimizer.lr]
        scheduler.step()
    return out


def test_step_lr():
    sched = StepLR(sgd(0.1), step_size=3, gamma=0.5)
    assert sched.last_epoch == 0 and sched.base_lrs == [0.1]
    got = lrs_over(sched, 8)
    np.testing.assert_allclose(got, [0.1] * 3 + [0.05] * 3 + [0.025] * 2, rtol=1e-15)
    assert sched.last_epoch == 8


def test_multistep_lr():
    sched = MultiStepLR(sgd(1.0), milestones=[4, 2, 4], gamma=0.1)
    got = lrs_over(sched, 6)
    np.testing.assert_allclose(got, [1, 1, 0.1, 0.1, 0.001, 0.001], rtol=1e-12)


def test_exponential_lr():
    sched = ExponentialLR(sgd(0.2), gamma=0.9)
    np.testing.assert_allclose(lrs_over(sched, 5), [0.2 * 0.9 ** e for e in range(5)],
                               rtol=1e-15)


def test_cosine_annealing_closed_form():
    sched = CosineAnnealingLR(sgd(0.1), T_max=10, eta_min=0.001)
    got = lrs_over(sched, 11)
    expected = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * e / 10)) / 2
                for e in range(11)]
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    assert got[0] == pytest.approx(0.1)
    assert got[5] == pytest.approx((0.1 + 0.001) / 2)
    assert got[10] == pytest.approx(0.001)


def test_linear_lr():
    sched = LinearLR(sgd(0.3), start_factor=0.25, end_factor=1.0, total_iters=3)
    np.testing.assert_allclose(lrs_over(sched, 5), [0.075, 0.15, 0.225, 0.3, 0.3])


def test_linear_warmup_then_cosine():
    opt = sgd(0.1)
    cosine = CosineAnnealingLR(opt, T_max=4)
    sched = LinearWarmup(opt, warmup_epochs=2, start_factor=0.5, after=cosine)
    got = lrs_over(sched, 7)
    expected = [0.05, 0.075] + [0.1 * (1 + math.cos(math.pi * e / 4)) / 2
                                for e in range(5)]
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    plain = LinearWarmup(sgd(0.1), warmup_epochs=2)
    np.testing.assert_allclose(lrs_over(plain, 4), [0.01, 0.055, 0.1, 0.1])


def test_base_scheduler_is_constant_and_drives_the_step_size():
    opt = sgd(0.5)
    sched = StepLR(opt, step_size=1, gamma=0.1)
    p = opt.params[0]
    p.grad = np.ones(2)
    opt.step()                          # lr 0.5
    sched.step()
    opt.step()                          # lr 0.05
    np.testing.assert_allclose(p.data, [-0.55, -0.55])
    assert lrs_over(LRScheduler(sgd(0.3)), 3) == [0.3, 0.3, 0.3]


def test_step_with_explicit_epoch():
    sched = StepLR(sgd(1.0), step_size=2, gamma=0.5)
    sched.step(5)
    assert sched.last_epoch == 5 and sched.get_last_lr() == [0.25]


# ------------------------------------------------------------------ momentum
def test_momentum_schedule_sgd_linear_ramp():
    opt = sgd(0.1, momentum=0.9)
    sched = MomentumSchedule(opt, start=0.5, end=0.99, epochs=7)
    got = []
    for _ in range(10):
        got.append(opt.momentum)
        assert sched.get_last_momentum() == opt.momentum
        sched.step()
    expected = [0.5 + 0.49 * min(e, 7) / 7 for e in range(10)]
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    assert got[0] == 0.5 and got[-1] == pytest.approx(0.99)
    assert opt.lr == 0.1                     # the learning rate is left alone


def test_momentum_schedule_changes_the_update():
    p = Parameter(np.zeros(1))
    opt = SGD([p], lr=1.0, momentum=0.0)
    sched = MomentumSchedule(opt, start=0.5, end=0.9, epochs=1)
    p.grad = np.ones(1)
    opt.step()                               # buffer = 1, p = -1
    sched.step()                             # momentum 0.9
    opt.step()                               # buffer = 0.9 + 1, p = -2.9
    np.testing.assert_allclose(p.data, [-2.9])


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_momentum_schedule_adam_changes_beta1_only(cls):
    opt = cls([Parameter(np.zeros(2))], betas=(0.9, 0.98))
    sched = MomentumSchedule(opt, start=0.6, end=0.8, epochs=2)
    assert opt.betas == (0.6, 0.98)
    sched.step()
    assert opt.betas == pytest.approx((0.7, 0.98))
    sched.step()
    sched.step()
    assert opt.betas == pytest.approx((0.8, 0.98))


def test_momentum_schedule_rmsprop_and_errors():
    opt = RMSProp([Parameter(np.zeros(2))])
    MomentumSchedule(opt, epochs=3)
    assert opt.momentum == 0.5
    with pytest.raises(ValueError, match="AdaGrad has no momentum"):
        MomentumSchedule(AdaGrad([Parameter(np.zeros(2))]), epochs=3)
    with pytest.raises(ValueError, match="epochs is required"):
        MomentumSchedule(sgd())
    with pytest.raises(ValueError, match="betas"):
        MomentumSchedule(Adam([Parameter(np.zeros(2))]), end=1.0, epochs=1).step()


def test_chained_lr_and_momentum():
    opt = sgd(0.1, momentum=0.5)
    chain = ChainedScheduler([StepLR(opt, step_size=1, gamma=0.5),
                              MomentumSchedule(opt, start=0.5, end=0.9, epochs=2)])
    chain.step()
    assert (opt.lr, opt.momentum) == pytest.approx((0.05, 0.7))
    state = pickle.loads(pickle.dumps(chain.state_dict()))
    chain.step()
    chain.load_state_dict(state)
    assert (opt.lr, opt.momentum) == pytest.approx((0.05, 0.7))
    assert chain.last_epoch == 1 and chain.get_last_lr() == [opt.lr]


# ------------------------------------------------------------------ state dicts
def assert_plain(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str)
            assert_plain(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            assert_plain(v)
    else:
        assert obj is None or type(obj) in (bool, int, float, str), type(obj)


MAKERS = [
    lambda opt: StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: MultiStepLR(opt, milestones=[2, 5]),
    lambda opt: ExponentialLR(opt, gamma=0.8),
    lambda opt: CosineAnnealingLR(opt, T_max=6, eta_min=0.01),
    lambda opt: LinearLR(opt, total_iters=4),
    lambda opt: LinearWarmup(opt, 2, after=CosineAnnealingLR(opt, T_max=5)),
    lambda opt: MomentumSchedule(opt, epochs=4),
]


@pytest.mark.parametrize("make", MAKERS)
def test_state_dict_round_trip(make):
    opt_a = sgd(0.1, momentum=0.9)
    a = make(opt_a)
    history_a = []
    for _ in range(7):
        a.step()
        history_a.append((opt_a.lr, opt_a.momentum))

    opt_b = sgd(0.1, momentum=0.9)
    b = make(opt_b)
    for _ in range(3):
        b.step()
    saved = pickle.loads(pickle.dumps(b.state_dict()))
    assert_plain(saved)

    # Resume in a fresh process: new optimizer and scheduler, then load the state.
    opt_c = sgd(0.1, momentum=0.9)
    c = make(opt_c)
    c.load_state_dict(saved)
    assert (opt_c.lr, opt_c.momentum) == history_a[2]    # re-applied on load
    history_c = list(history_a[:3])
    for _ in range(4):
        c.step()
        history_c.append((opt_c.lr, opt_c.momentum))
    assert history_c == history_a
    assert c.last_epoch == 7


def test_load_state_dict_validates():
    sched = StepLR(sgd(), step_size=2)
    with pytest.raises(ValueError, match="saved by CosineAnnealingLR"):
        sched.load_state_dict(CosineAnnealingLR(sgd(), T_max=3).state_dict())
    bad = sched.state_dict()
    del bad["gamma"]
    with pytest.raises(ValueError, match="keys"):
        sched.load_state_dict(bad)


@pytest.mark.parametrize("make, match", [
    (lambda: StepLR(sgd(), step_size=0), "step_size"),
    (lambda: StepLR(sgd(), step_size=2.5), "step_size"),
    (lambda: StepLR(sgd(), step_size=2, gamma=-1), "gamma"),
    (lambda: CosineAnnealingLR(sgd(), T_max=0), "T_max"),
    (lambda: CosineAnnealingLR(sgd(), T_max=3, eta_min=-1), "eta_min"),
    (lambda: LinearLR(sgd(), start_factor=0), "start_factor"),
    (lambda: LinearWarmup(sgd(), 2, after=StepLR(sgd(), 1)), "same optimizer"),
    (lambda: StepLR(object(), step_size=2), "optimizer"),
])
def test_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()
