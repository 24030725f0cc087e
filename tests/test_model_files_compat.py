"""Model files written by an older airi keep loading after classes move between modules.

The files in tests/fixtures/model_files_v1/ were written by main at commit bd7605a
(format version 1), before issue 14 moved ``Sequential`` and split the trainer,
serialization and distributed modules. They record the old module paths
(``airi.model.Sequential`` ...), so these tests fail if an alias is dropped.
"""
import os

import numpy as np
import pytest

import airi

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "model_files_v1")


def fixture(name):
    return os.path.join(HERE, name)


def test_fixtures_record_old_module_paths():
    with open(fixture("every_layer.pkl"), "rb") as f:
        raw = f.read()
    assert b"airi.model" in raw      # written before Sequential moved


def test_every_layer_model_loads_and_computes_the_same():
    model = airi.load(fixture("every_layer.pkl"))
    assert isinstance(model, airi.Sequential)
    x = np.load(fixture("every_layer_input.npy"))
    expected = np.load(fixture("every_layer_output.npy"))
    model.eval()
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-6, atol=1e-7)
    # and it still trains: one step moves the weights
    before = [p.data.copy() for p in model.parameters()]
    model.train()
    loss = airi.CrossEntropyLoss()
    loss(model.forward(x), np.arange(8) % 4)
    model.backward(loss.backward())
    model.update(lr=0.1)
    assert any(not np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))


def test_lenet_loads():
    model = airi.load(fixture("lenet.pkl"))
    out = model.forward(np.zeros((2, 1, 28, 28), np.float32))
    assert out.shape == (2, 10)


def test_mixed_file_loads():
    obj = airi.load(fixture("mixed.pkl"))
    assert set(obj) == {"softmax_head", "log_softmax", "adam"}
    probs = obj["softmax_head"].forward(np.ones((3, 1, 12, 12), np.float32))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_checkpoint_resumes(tmp_path):
    from airi.layers import Conv2D  # noqa: F401  (the classes the checkpoint holds)
    state = airi.load(fixture("checkpoint.pkl"))
    assert state["epoch"] == 2
    model = airi.load(fixture("every_layer.pkl"))
    opt = airi.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = airi.Trainer(model, airi.CrossEntropyLoss(), opt,
                           scheduler=airi.lr_scheduler.StepLR(opt, step_size=1))
    trainer.load_checkpoint(fixture("checkpoint.pkl"))
    assert trainer.epoch == 2
    x = np.load(fixture("every_layer_input.npy"))
    history = trainer.fit((x, np.arange(8) % 4), epochs=3, batch_size=4, verbose=False)
    assert len(history) == 3 and trainer.epoch == 3
