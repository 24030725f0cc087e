"""Model files holding issue 15's classes: they round-trip, and a file whose attributes
no constructor could have made is refused with a ModelFileError naming the attribute."""
import numpy as np
import pytest

import airi
from airi import Parameter, Sequential
from airi.layers import GlobalAvgPool2D, Linear, Relu, Residual
from airi.lr_scheduler import OneCycleLR, ReduceLROnPlateau
from test_hardening import v2_file, with_state


def _opt():
    return airi.optim.SGD([Parameter(np.zeros(3, np.float32))], lr=0.1, momentum=0.9)


def test_new_classes_round_trip(tmp_path):
    opt = _opt()
    objects = {
        "model": Sequential(Residual(Sequential(Linear(3, 3), Relu()), Linear(3, 3)),
                            Relu()),
        "pool": GlobalAvgPool2D(),
        "onecycle": OneCycleLR(opt, max_lr=0.5, total_steps=20, three_phase=True),
        "plateau": ReduceLROnPlateau(opt, mode="max"),
        "adadelta": airi.optim.Adadelta([Parameter(np.zeros(2))]),
        "ce": airi.CrossEntropyLoss(weight=[1.0, 2.0], label_smoothing=0.1),
        "nll": airi.NLLLoss(weight=[1.0, 2.0]),
        "bce": airi.BCEWithLogitsLoss(pos_weight=[2.0]),
        "bce_probs": airi.BCELoss(),
    }
    airi.save(objects, tmp_path / "all.airi")
    back = airi.load(tmp_path / "all.airi")
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(back["model"](x), objects["model"](x))
    assert back["onecycle"].phases == objects["onecycle"].phases
    assert back["plateau"].mode == "max" and back["ce"].label_smoothing == 0.1
    np.testing.assert_array_equal(back["bce"].pos_weight, [2.0])


BAD = [
    (lambda: Residual(Linear(3, 3)), "body", 3),
    (lambda: Residual(Linear(3, 3)), "shortcut", "identity"),
    (lambda: Residual(Linear(3, 3)), "params", {"W": 1}),
    (lambda: GlobalAvgPool2D(), "training", "yes"),
    (lambda: OneCycleLR(_opt(), max_lr=0.5, total_steps=10), "phases",
     [{"end_step": 1.0, "start_lr": "optimizer", "end_lr": "max_lr",
       "start_momentum": "max_momentum", "end_momentum": "base_momentum"}] * 2),
    (lambda: OneCycleLR(_opt(), max_lr=0.5, total_steps=10), "total_steps", 10.5),
    (lambda: OneCycleLR(_opt(), max_lr=0.5, total_steps=10), "anneal_strategy", "exp"),
    (lambda: ReduceLROnPlateau(_opt()), "mode", "up"),
    (lambda: ReduceLROnPlateau(_opt()), "patience", -1),
    (lambda: airi.CrossEntropyLoss(), "label_smoothing", 2.0),
    (lambda: airi.CrossEntropyLoss(), "weight", np.ones((2, 2))),
    (lambda: airi.NLLLoss(), "weight", "heavy"),
    (lambda: airi.BCEWithLogitsLoss(), "pos_weight", np.array([np.nan])),
    (lambda: airi.optim.Adadelta([Parameter(np.zeros(2))]), "rho", 3.0),
]


@pytest.mark.parametrize("make, name, value", BAD,
                         ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD)])
def test_impossible_attributes_are_refused(tmp_path, make, name, value):
    obj = make()
    path = tmp_path / "bad.airi"
    path.write_bytes(v2_file(with_state(obj, **{name: value})))
    with pytest.raises(airi.ModelFileError) as info:
        airi.load(path)
    message = str(info.value)
    assert type(obj).__name__ in message and name in message, message
