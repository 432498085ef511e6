"""Embedded data sets, deterministic loaders, and the messages of the sets read from files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchpint.data import (
    DATASET_NAMES,
    SHAPE_CLASSES,
    EpochSampler,
    digits_datasets,
    make_loaders,
    shapes_datasets,
    vision_datasets,
)
from torchpint.data.embedded import _shape_masks


def test_digits_split_shapes_and_normalization():
    train, test = digits_datasets(16, 1, seed=0)
    xtr, ytr = train.tensors
    xte, yte = test.tensors
    assert xtr.shape == (1437, 1, 16, 16) and xte.shape == (360, 1, 16, 16)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert abs(float(xtr.mean())) < 1e-4 and abs(float(xtr.std()) - 1.0) < 1e-2
    # stratified: every class in the test set, 36 each give or take one
    counts = torch.bincount(yte, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_digits_seed_fixes_split_and_channels_upscale():
    a, _ = digits_datasets(16, 1, seed=3)
    b, _ = digits_datasets(16, 1, seed=3)
    c, _ = digits_datasets(16, 1, seed=4)
    assert torch.equal(a.tensors[0], b.tensors[0])
    assert not torch.equal(a.tensors[1], c.tensors[1])
    rgb, _ = digits_datasets(32, 3, seed=3)
    x = rgb.tensors[0]
    assert x.shape[1:] == (3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 2])
    with pytest.raises(ValueError, match="channels"):
        digits_datasets(16, 2)


def test_shapes_deterministic_balanced_and_distinct_streams():
    tr1, te1 = shapes_datasets(16, 3, num_train=200, num_test=50, seed=1)
    tr2, _ = shapes_datasets(16, 3, num_train=200, num_test=50, seed=1)
    tr3, _ = shapes_datasets(16, 3, num_train=200, num_test=50, seed=2)
    assert torch.equal(tr1.tensors[0], tr2.tensors[0])
    assert not torch.equal(tr1.tensors[0], tr3.tensors[0])
    assert tr1.tensors[0].shape == (200, 3, 16, 16) and te1.tensors[0].shape == (50, 3, 16, 16)
    assert torch.bincount(tr1.tensors[1], minlength=10).tolist() == [20] * 10
    assert not torch.equal(tr1.tensors[0][:50], te1.tensors[0])
    grey, _ = shapes_datasets(16, 1, num_train=20, num_test=5)
    assert grey.tensors[0].shape[1] == 1


def test_shape_masks_have_the_analytic_areas():
    """The rasterized masks of the shapes have the areas geometry says (unit size)."""
    g = (np.arange(800) + 0.5) / 800 * 2.4 - 1.2
    v, u = np.meshgrid(g, g, indexing="ij")
    pix = (2.4 / 800) ** 2
    area = [float(_shape_masks(k, u, v).sum()) * pix for k in range(len(SHAPE_CLASSES))]
    exact = {
        0: np.pi,  # disc
        1: np.pi * (1 - 0.55**2),  # ring
        2: 1.6**2,  # square
        3: 1.7**2 - 0.9**2,  # frame
        4: 3 * np.sqrt(3) / 4,  # triangle with circumradius 1
        5: 2 * (0.6 * 2.0) - 0.6**2,  # plus
        6: np.pi * 0.45,  # ellipse
        8: 2 * np.pi * 0.4**2,  # pair of discs
        9: np.pi / 2,  # half disc
    }
    for k, a in exact.items():
        assert abs(area[k] - a) < 0.01 * a + 0.01, (SHAPE_CLASSES[k], area[k], a)
    assert 0.5 < area[7] < np.pi  # the star lies inside the unit disc


def test_epoch_sampler_is_keyed_by_seed_and_epoch():
    s = EpochSampler(50, seed=7)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(1)
    b = list(s)
    s.set_epoch(0)
    assert list(s) == a and sorted(a) == list(range(50)) and a != b
    assert list(EpochSampler(50, seed=8)) != a


def test_make_loaders_batches():
    bundle = make_loaders("digits", batch_size=100, seed=0)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 1, 16)
    assert len(bundle.train) == 14  # 1437 // 100, last incomplete batch dropped
    x, y = next(iter(bundle.train))
    assert x.shape == (100, 1, 16, 16) and y.shape == (100,)
    assert sum(len(b[1]) for b in bundle.test) == 360
    with pytest.raises(ValueError, match="unknown dataset"):
        make_loaders("imagenet")
    assert {"digits", "shapes", "cifar10", "cifar100", "svhn", "mnist"} <= set(DATASET_NAMES)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "mnist"])
def test_missing_data_root_says_what_is_expected(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        vision_datasets(name, None)
    with pytest.raises(FileNotFoundError) as err:
        vision_datasets(name, tmp_path)
    expected = {
        "cifar10": "data_batch_1",
        "cifar100": "cifar-100-python",
        "svhn": "train_32x32.mat",
        "mnist": "t10k-images-idx3-ubyte",
    }[name]
    assert expected in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_data_root_that_is_a_file_says_so(tmp_path, name):
    """A file given as --data-root is named as a file, not reported as missing."""
    path = tmp_path / "cifar.tar.gz"
    path.write_bytes(b"not a folder")
    with pytest.raises(FileNotFoundError, match="it is a file, not a folder") as err:
        vision_datasets(name, path)
    assert str(path) in str(err.value) and "does not exist" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vision_datasets(name, tmp_path / "nowhere")


def test_bad_values_are_refused_not_replaced():
    """A value that would be silently replaced, or make non-finite data, is refused."""
    with pytest.raises(ValueError, match="test_batch_size must be >= 1"):
        make_loaders("digits", batch_size=8, test_batch_size=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        make_loaders("digits", seed=-1)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        shapes_datasets(8, 3, num_train=20, num_test=5, seed=-1)
    for noise in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
            shapes_datasets(8, 3, num_train=20, num_test=5, noise=noise)
