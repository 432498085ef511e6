"""``ImageSet``: augmentation shapes and semantics, keyed draws, and the same batches for
the same seed whatever the number of workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.data.data_helpers import write_cifar, write_idx_set
from torchpint.data import Augment, EpochSampler, ImageSet, make_loaders, parse_augment


def _set(n=6, size=8, channels=1, augment=None, seed=0, out=None):
    x = np.random.default_rng(0).integers(0, 256, size=(n, channels, size, size),
                                          dtype=np.uint8)
    return ImageSet(x, np.arange(n) % 3, [0.0] * channels, [1.0] * channels,
                    size=out, augment=augment or Augment(), seed=seed), x


def test_parse_augment():
    assert parse_augment(True, flip_suits=True, size=32) == Augment(True, True, 4)
    assert parse_augment("standard", flip_suits=False, size=28) == Augment(True, False, 3)
    assert parse_augment(False, flip_suits=True, size=28) == Augment()
    assert parse_augment("none", flip_suits=True, size=28) == Augment()
    assert parse_augment("flip", flip_suits=False, size=28) == Augment(False, True, 0)
    assert parse_augment("crop+flip", flip_suits=False, size=8) == Augment(True, True, 1)
    with pytest.raises(ValueError, match="augment must be"):
        parse_augment("rotate", flip_suits=True, size=8)


def test_without_augmentation_images_are_scaled_only():
    ds, x = _set()
    got, y = ds.batch([2, 0])
    assert torch.equal(got, torch.from_numpy(x[[2, 0]]).float() / 255)
    assert y.tolist() == [2, 0]
    assert torch.equal(ds[0][0], got[1]) and int(ds[2][1]) == 2


def test_crop_is_a_shift_of_the_zero_padded_image():
    ds, x = _set(n=30, augment=Augment(crop=True, pad=2))
    got, _ = ds.batch(range(30))
    src = torch.nn.functional.pad(torch.from_numpy(x).float() / 255, (2, 2, 2, 2))
    shifts = set()
    for j in range(30):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(got[j], src[j, :, dy:dy + 8, dx:dx + 8])]
        assert hits, j
        shifts.add(hits[0])
    assert len(shifts) > 5  # the offsets vary across images


def test_flip_is_all_or_nothing_and_varies():
    ds, x = _set(n=40, augment=Augment(flip=True))
    got, _ = ds.batch(range(40))
    plain = torch.from_numpy(x).float() / 255
    flipped = [bool(torch.equal(got[j], plain[j].flip(-1))) for j in range(40)]
    assert all(f or torch.equal(got[j], plain[j]) for j, f in enumerate(flipped))
    assert 5 < sum(flipped) < 35


def test_augmentation_is_keyed_by_seed_epoch_and_index():
    aug = Augment(True, True, 2)
    a, _ = _set(n=20, augment=aug, seed=1)
    b, _ = _set(n=20, augment=aug, seed=1)
    c, _ = _set(n=20, augment=aug, seed=2)
    assert torch.equal(a.batch(range(20))[0], b.batch(range(20))[0])
    assert not torch.equal(a.batch(range(20))[0], c.batch(range(20))[0])
    # the same image gets the same draw whatever batch it is fetched in
    assert torch.equal(a.batch([5, 7])[0][1], a.batch([7])[0][0])
    e0 = a.batch(range(20))[0]
    a.set_epoch(1)
    assert not torch.equal(a.batch(range(20))[0], e0)
    sampler = EpochSampler(20, 1, follow=(b,))
    sampler.set_epoch(1)
    assert b.epoch == 1 and torch.equal(a.batch(range(20))[0], b.batch(range(20))[0])


def test_augmented_shapes_with_resize():
    ds, _ = _set(n=4, size=28, augment=Augment(True, True, 2), out=16)
    x, _ = ds.batch(range(4))
    assert x.shape == (4, 1, 16, 16) and x.dtype == torch.float32


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(np.zeros((2, 1, 4, 4), np.float32), [0, 1], [0.0], [1.0])
    with pytest.raises(ValueError, match="one value per channel"):
        ImageSet(np.zeros((2, 3, 4, 4), np.uint8), [0, 1], [0.0], [1.0])
    with pytest.raises(ValueError, match="labels for"):
        ImageSet(np.zeros((2, 1, 4, 4), np.uint8), [0], [0.0], [1.0])


def _epochs(bundle, epochs=2):
    out = []
    for e in range(epochs):
        bundle.train.sampler.set_epoch(e)
        out.append([(x.clone(), y.clone()) for x, y in bundle.train])
    return out


def test_same_seed_same_batches_and_augmentation(tmp_path):
    write_idx_set(tmp_path, 40, 8)
    kw = dict(data_root=tmp_path, batch_size=8, augment="standard")
    a, b = (_epochs(make_loaders("fashion-mnist", seed=3, **kw)) for _ in range(2))
    c = _epochs(make_loaders("fashion-mnist", seed=4, **kw))
    for ea, eb in zip(a, b, strict=True):
        for (xa, ya), (xb, yb) in zip(ea, eb, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    order = [torch.cat([y for _, y in e]).tolist() for e in a]
    assert order[0] != order[1]  # epochs differ
    assert order[0] != torch.cat([y for _, y in c[0]]).tolist()  # seeds differ


def test_workers_give_the_same_batches(tmp_path):
    write_cifar(tmp_path, 10, 4)
    kw = dict(data_root=tmp_path, batch_size=5, augment=True, seed=2)
    inline = _epochs(make_loaders("cifar10", **kw), 1)
    workers = _epochs(make_loaders("cifar10", num_workers=2, **kw), 1)
    for (xa, ya), (xb, yb) in zip(inline[0], workers[0], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="num_workers"):
        make_loaders("cifar10", num_workers=-1, **kw)
