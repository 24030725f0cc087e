"""DataLoader (batching, shuffling, resuming, rank shards) and image transforms."""
import pickle

import numpy as np
import pytest

import airi
from airi import _config
from airi.data import (Compose, DataLoader, Normalize, RandomCrop, RandomHorizontalFlip,
                       RandomShift)


def make_data(n=23, shape=(1, 4, 4)):
    X = np.arange(n * int(np.prod(shape)), dtype=np.float32).reshape((n,) + shape)
    y = np.arange(n, dtype=np.int64)  # y[i] == i: batches show which samples they hold
    return X, y


def epoch_labels(loader):
    return [yb.copy() for _, yb in loader]


# ---------------------------------------------------------------------------------------
# DataLoader: batching
# ---------------------------------------------------------------------------------------
def test_exports_and_attributes():
    X, y = make_data()
    loader = airi.DataLoader(X, y, batch_size=5)
    assert airi.DataLoader is DataLoader and airi.data.DataLoader is DataLoader
    assert loader.dataset_size == 23 and len(loader.X) == 23
    assert loader.X is X and loader.y is y  # no copy of the data set


@pytest.mark.parametrize("drop_last, n_batches, last", [(False, 5, 3), (True, 4, 5)])
def test_batches_cover_every_sample_once(drop_last, n_batches, last):
    X, y = make_data()
    loader = DataLoader(X, y, batch_size=5, drop_last=drop_last, seed=0)
    batches = list(loader)
    assert len(loader) == n_batches == len(batches)
    assert [len(yb) for _, yb in batches] == [5] * (n_batches - 1) + [last]
    seen = np.concatenate([yb for _, yb in batches])
    assert len(np.unique(seen)) == len(seen) == (23 if not drop_last else 20)
    for xb, yb in batches:
        assert xb.shape == (len(yb), 1, 4, 4) and xb.dtype == np.float32
        assert np.array_equal(xb, X[yb])  # inputs and targets stay paired


def test_exact_multiple_has_no_short_batch():
    X, y = make_data(n=20)
    assert len(DataLoader(X, y, 5)) == len(DataLoader(X, y, 5, drop_last=True)) == 4


def test_no_shuffle_keeps_order():
    X, y = make_data()
    labels = epoch_labels(DataLoader(X, y, batch_size=10, shuffle=False))
    assert np.array_equal(np.concatenate(labels), y)


def test_batches_are_copies():
    X, y = make_data()
    xb, _ = next(iter(DataLoader(X, y, batch_size=4, shuffle=False)))
    xb[:] = -1
    assert X.min() >= 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(X=np.zeros((5, 2)), y=np.zeros(4)), r"same number of samples.*\(5, 2\).*\(4,\)"),
    (dict(X=np.zeros((0, 2)), y=np.zeros(0)), "empty"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(batch_size=2.5), "batch_size must be a positive integer"),
    (dict(rank=2, world_size=2), r"rank must be an integer in \[0, world_size=2\)"),
    (dict(world_size=0), "world_size must be a positive integer"),
    (dict(seed="a"), "seed must be an int or None"),
    (dict(transform=3), "transform must be callable"),
])
def test_bad_arguments(kwargs, message):
    args = dict(X=np.zeros((5, 2)), y=np.zeros(5), batch_size=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        DataLoader(**args)


def test_lists_are_accepted():
    loader = DataLoader([[1.0], [2.0], [3.0]], [0, 1, 0], batch_size=2, shuffle=False)
    xb, yb = next(iter(loader))
    assert xb.shape == (2, 1) and np.array_equal(yb, [0, 1])


def test_transform_applies_to_inputs_only():
    X, y = make_data()
    loader = DataLoader(X, y, batch_size=6, shuffle=False, transform=lambda x: x * 2)
    for xb, yb in loader:
        assert np.array_equal(xb, X[yb] * 2)
        assert yb.dtype == np.int64


# ---------------------------------------------------------------------------------------
# DataLoader: shuffling and resuming
# ---------------------------------------------------------------------------------------
def test_shuffle_without_seed_follows_airi_seed():
    X, y = make_data()
    loader = DataLoader(X, y, batch_size=5)
    airi.seed(3)
    first = [np.concatenate(epoch_labels(loader)) for _ in range(2)]
    airi.seed(3)
    again = [np.concatenate(epoch_labels(loader)) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1])  # a new order each epoch
    assert not np.array_equal(first[0], y)


def test_shuffle_with_seed_is_reproducible_per_epoch():
    X, y = make_data()
    a = DataLoader(X, y, batch_size=5, seed=7)
    b = DataLoader(X, y, batch_size=5, seed=7)
    orders_a = [np.concatenate(epoch_labels(a)) for _ in range(3)]
    airi.seed(0)
    _config.get_rng().random(100)  # other draws do not disturb a seeded loader
    orders_b = [np.concatenate(epoch_labels(b)) for _ in range(3)]
    assert all(np.array_equal(p, q) for p, q in zip(orders_a, orders_b))
    assert not np.array_equal(orders_a[0], orders_a[1])
    c = DataLoader(X, y, batch_size=5, seed=8)
    assert not np.array_equal(np.concatenate(epoch_labels(c)), orders_a[0])


def _run(loader, epochs, stop_after=None):
    """Labels of every batch; stops after ``stop_after`` batches of the last epoch."""
    out = []
    for epoch in range(epochs):
        for i, (_, yb) in enumerate(loader):
            out.append(yb.copy())
            if stop_after is not None and epoch == epochs - 1 and i + 1 == stop_after:
                return out
    return out


@pytest.mark.parametrize("seed", [11, None])
def test_resume_mid_epoch_continues_exactly(seed):
    X, y = make_data()
    airi.seed(5)
    reference = _run(DataLoader(X, y, batch_size=4, seed=seed), epochs=4)

    airi.seed(5)
    first = DataLoader(X, y, batch_size=4, seed=seed)
    done = _run(first, epochs=2, stop_after=3)          # stopped mid-epoch 2
    saved = pickle.loads(pickle.dumps(first.state_dict()))
    rng_state = _config.get_rng_state()                 # what a checkpoint also holds
    assert saved["position"] == 3 and saved["order"] is not None and saved["epoch"] == 2

    airi.seed(999)                                      # a fresh process
    resumed = DataLoader(X, y, batch_size=4, seed=seed)
    resumed.load_state_dict(saved)
    _config.set_rng_state(rng_state)
    rest = _run(resumed, epochs=3)                      # end of epoch 2, then 3 and 4
    combined = done + rest
    assert len(combined) == len(reference)
    assert all(np.array_equal(a, b) for a, b in zip(combined, reference))
    assert resumed.epoch == 4


def test_state_at_epoch_end_has_no_order():
    X, y = make_data()
    loader = DataLoader(X, y, batch_size=4, seed=1)
    _run(loader, epochs=1)
    state = loader.state_dict()
    assert state["order"] is None and state["position"] == 0 and state["epoch"] == 1
    expected = _run(loader, epochs=1)
    other = DataLoader(X, y, batch_size=4, seed=1)
    other.load_state_dict(state)
    assert all(np.array_equal(a, b) for a, b in zip(_run(other, epochs=1), expected))


def test_each_for_loop_starts_a_new_epoch():
    X, y = make_data()
    loader = DataLoader(X, y, batch_size=4, seed=2)
    next(iter(loader))  # a peek
    assert len(np.concatenate(epoch_labels(loader))) == 23
    assert loader.epoch == 2


def test_load_state_dict_checks_the_data():
    X, y = make_data()
    loader = DataLoader(X, y, batch_size=4, seed=1)
    next(iter(loader))
    state = loader.state_dict()
    with pytest.raises(ValueError, match="saved for 23 samples, this loader has 20"):
        DataLoader(X[:20], y[:20], batch_size=4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size 4, this loader has 5"):
        DataLoader(X, y, batch_size=5, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="own seed"):
        DataLoader(X, y, batch_size=4).load_state_dict(state)


# ---------------------------------------------------------------------------------------
# DataLoader: rank shards (data parallelism)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_shards_cover_each_global_batch_once(world_size, drop_last):
    X, y = make_data(n=23)
    whole = epoch_labels(DataLoader(X, y, batch_size=6, seed=3, drop_last=drop_last))
    shards = [epoch_labels(DataLoader(X, y, batch_size=6, seed=3, drop_last=drop_last,
                                      rank=r, world_size=world_size))
              for r in range(world_size)]
    for r in range(world_size):
        assert len(shards[r]) == len(whole)  # every rank takes part in every step
    for b, global_batch in enumerate(whole):
        parts = [shards[r][b] for r in range(world_size)]
        assert np.array_equal(np.concatenate(parts), global_batch)  # contiguous, ordered
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_rank_shard_inputs_match_targets():
    X, y = make_data()
    loader = DataLoader(X, y, batch_size=8, seed=0, rank=1, world_size=3)
    for xb, yb in loader:
        assert np.array_equal(xb, X[yb])


# ---------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------
def images(n=6, c=2, h=7, w=9, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(dtype)


def shifted(image, dy, dx):
    """Reference: image (C, H, W) moved down dy and right dx, zeros filled in."""
    c, h, w = image.shape
    out = np.zeros_like(image)
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_shift_keeps_shape_dtype_and_shifts(dtype):
    x = images(n=40, dtype=dtype)
    original = x.copy()
    airi.seed(0)
    out = RandomShift(2)(x)
    assert out.shape == x.shape and out.dtype == dtype
    assert np.array_equal(x, original)  # input untouched
    moves = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out[i], shifted(x[i], dy, dx))]
        assert len(matches) == 1
        moves.add(matches[0])
    assert len(moves) > 5  # each image gets its own shift


def test_random_shift_zero_is_identity_and_seeded():
    x = images()
    assert np.array_equal(RandomShift(0)(x), x)
    airi.seed(4)
    a = RandomShift(3)(x)
    airi.seed(4)
    assert np.array_equal(RandomShift(3)(x), a)


def test_random_crop_takes_a_window_of_the_padded_image():
    x = images(n=10, h=6, w=6)
    airi.seed(1)
    out = RandomCrop(5, padding=1)(x)
    assert out.shape == (10, 2, 5, 5) and out.dtype == np.float32
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i in range(10):
        assert any(np.array_equal(out[i], padded[i, :, t:t + 5, s:s + 5])
                   for t in range(4) for s in range(4))


def test_random_crop_full_size_without_padding_is_identity():
    x = images()
    assert np.array_equal(RandomCrop((7, 9))(x), x)


def test_random_crop_errors():
    with pytest.raises(ValueError, match="cannot crop 10x10"):
        RandomCrop(10, padding=1)(images())
    with pytest.raises(ValueError, match=r"RandomCrop: expects a batch of images"):
        RandomCrop(2)(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="float batch"):
        RandomShift(1)(np.zeros((1, 1, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="non-negative int"):
        RandomCrop(4, padding=-1)


def test_flip_twice_is_identity_and_p_bounds():
    x = images()
    flip = RandomHorizontalFlip(p=1.0)
    once = flip(x)
    assert np.array_equal(once, x[..., ::-1]) and once.dtype == x.dtype
    assert np.array_equal(flip(once), x)
    assert np.array_equal(RandomHorizontalFlip(p=0.0)(x), x)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        RandomHorizontalFlip(p=1.5)


def test_flip_half_flips_some_images_only():
    x = images(n=200)
    airi.seed(2)
    out = RandomHorizontalFlip(0.5)(x)
    flipped = np.array([np.array_equal(out[i], x[i, :, :, ::-1]) for i in range(200)])
    kept = np.array([np.array_equal(out[i], x[i]) for i in range(200)])
    assert np.all(flipped ^ kept)
    assert 60 < flipped.sum() < 140


def test_normalize_fit_gives_mean_0_std_1_per_channel():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(5, 3, (50, 1, 8, 8)), rng.normal(-1, 0.1, (50, 1, 8, 8)),
                        rng.random((50, 1, 8, 8))], axis=1).astype(np.float32)
    norm = Normalize.fit(x)
    assert norm.mean.shape == (3,) and norm.std.shape == (3,)
    z = norm(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3), dtype=np.float64), 1, atol=1e-4)
    np.testing.assert_allclose(norm.inverse(z), x, rtol=1e-5, atol=1e-5)


def test_normalize_fit_in_chunks_matches_numpy():
    x = np.random.default_rng(1).random((1400, 3, 32, 32), dtype=np.float32)  # 2 chunks
    norm = Normalize.fit(x)
    np.testing.assert_allclose(norm.mean, x.mean(axis=(0, 2, 3), dtype=np.float64),
                               rtol=1e-10)
    np.testing.assert_allclose(norm.std, x.std(axis=(0, 2, 3), dtype=np.float64),
                               rtol=1e-10)


def test_normalize_constant_channel_and_errors():
    x = np.ones((4, 2, 3, 3))
    x[:, 1] = np.arange(36).reshape(4, 3, 3)
    norm = Normalize.fit(x)
    assert norm.std[0] == 1.0 and np.all(np.isfinite(norm(x)))
    with pytest.raises(ValueError, match=r"statistics for 2 channels.*\(5, 3, 2, 2\)"):
        norm(np.zeros((5, 3, 2, 2)))
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize([0.0], [0.0])
    with pytest.raises(ValueError, match="same length"):
        Normalize([0.0, 1.0], [1.0])


def test_normalize_single_value_applies_to_any_shape():
    x = np.full((3, 784), 0.75, dtype=np.float32)
    out = Normalize(0.5, 0.5)(x)
    assert out.dtype == np.float32 and np.allclose(out, 0.5)


def test_compose_applies_in_order():
    x = images()
    composed = Compose([lambda a: a + 1, lambda a: a * 2])
    assert np.array_equal(composed(x), (x + 1) * 2)
    with pytest.raises(ValueError, match="not callable"):
        Compose([1])


def test_loader_with_augmentation_is_reproducible():
    X = images(n=30, c=1, h=8, w=8)
    y = np.arange(30)
    augment = Compose([RandomShift(1), RandomHorizontalFlip(0.5), Normalize(0.5, 0.25)])
    loader = DataLoader(X, y, batch_size=8, transform=augment)
    airi.seed(6)
    first = [xb for xb, _ in loader]
    airi.seed(6)
    second = [xb for xb, _ in loader]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert first[0].dtype == np.float32 and first[0].shape == (8, 1, 8, 8)


# ------------------------------------------------------- map-style datasets (PyTorch)
class SquaresDataset:
    """A map-style dataset as PyTorch users write one: __len__ and __getitem__ -> (x, y)."""

    def __init__(self, n=10):
        self.n = n
        self.requested = []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.requested.append(i)
        image = np.full((1, 2, 2), float(i), dtype=np.float32)
        return image, i % 3


def test_dataloader_accepts_a_map_style_dataset():
    dataset = SquaresDataset(10)
    loader = DataLoader(dataset, batch_size=4, shuffle=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    xb, yb = batches[0]
    assert xb.shape == (4, 1, 2, 2) and xb.dtype == np.float32
    np.testing.assert_array_equal(xb[:, 0, 0, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(yb, [0, 1, 2, 0])
    assert batches[-1][0].shape == (2, 1, 2, 2)
    assert all(type(i) is int for i in dataset.requested)   # plain ints, as in PyTorch


def test_dataset_loader_shuffles_covers_every_sample_and_applies_the_transform():
    airi.seed(0)
    dataset = SquaresDataset(10)
    loader = DataLoader(dataset, batch_size=3, transform=lambda x: x * 10)
    seen = []
    for xb, yb in loader:
        values = xb[:, 0, 0, 0] / 10                        # the transform ran
        np.testing.assert_array_equal(yb, values.astype(int) % 3)   # pairs stay paired
        seen.extend(values.astype(int).tolist())
    assert sorted(seen) == list(range(10)) and seen != list(range(10))   # shuffled
    second = [int(v) for xb, _ in loader for v in xb[:, 0, 0, 0] / 10]
    assert sorted(second) == list(range(10)) and second != seen    # a new order


def test_dataset_loader_positional_batch_size_and_a_list_of_pairs():
    pairs = [(np.zeros(3, np.float32) + i, i) for i in range(5)]
    loader = DataLoader(pairs, 2, shuffle=False)             # DataLoader(dataset, 2)
    assert loader.batch_size == 2 and len(loader) == 3
    xb, yb = next(iter(loader))
    assert xb.shape == (2, 3) and list(yb) == [0, 1]


def test_dataset_loader_trains_with_the_trainer():
    airi.seed(0)
    X = np.random.rand(40, 4).astype(np.float32)
    y = (X.sum(axis=1) > 2).astype(np.int64)
    dataset = [(X[i], y[i]) for i in range(40)]
    model = airi.Sequential([airi.Linear(4, 2)])
    trainer = airi.Trainer(model, airi.CrossEntropyLoss(),
                           airi.optim.SGD(model.parameters(), lr=0.1), verbose=False)
    history = trainer.fit(DataLoader(dataset, batch_size=8), epochs=2)
    assert len(history) == 2 and np.isfinite(history[-1]["train_loss"])


@pytest.mark.parametrize("dataset, message", [
    ([], "the dataset is empty"),
    ([(1, 2, 3)], r"dataset\[0\] must return a pair \(x, y\), got tuple of length 3"),
    ([(np.zeros(2), 0), (np.zeros(3), 1)], r"share one shape.*\(2,\).*\(3,\)"),
])
def test_bad_datasets_are_one_clear_error(dataset, message):
    with pytest.raises(ValueError, match=message):
        list(DataLoader(dataset, batch_size=2, shuffle=False))


def test_arrays_without_labels_or_batch_size_are_errors():
    with pytest.raises(ValueError, match="map-style dataset.*got ndarray and no y"):
        DataLoader(np.zeros((4, 2)), batch_size=2)
    with pytest.raises(ValueError, match="batch_size is required"):
        DataLoader(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="map-style dataset"):
        DataLoader(5, batch_size=2)
