"""Finding the sets read from files, their messages when missing, each layout through
``make_loaders``, and the real Fashion-MNIST when it is installed."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from tests.data.data_helpers import (
    IDX_FILES,
    idx_bytes,
    labels,
    write,
    write_cifar,
    write_idx_set,
    write_kmnist_npz,
    write_svhn,
)
from torchpint.data import (
    DATASET_NAMES,
    FILE_SPECS,
    DataFileError,
    DataSetNotFoundError,
    file_datasets,
    locate,
    make_loaders,
    vision_datasets,
)
from torchpint.data import files as files_mod

FASHION = "/usr/share/datasets/fashion-mnist"


def test_names_cover_every_set():
    assert set(DATASET_NAMES) == {"digits", "shapes", "fashion-mnist", "mnist", "kmnist",
                                  "cifar10", "cifar100", "svhn"}


@pytest.mark.parametrize("sub", ["", "MNIST/raw", "mnist"])
def test_idx_found_in_the_root_or_torchvision_folders(tmp_path, sub):
    write_idx_set(tmp_path / sub if sub else tmp_path)
    found = locate("mnist", tmp_path)
    assert found.folder == str(tmp_path / sub if sub else tmp_path)
    assert all(p.endswith(".gz") for p in found.train + found.test)


def test_raw_and_gzipped_files_mix(tmp_path):
    write_idx_set(tmp_path, gz=False)
    gz = tmp_path / (IDX_FILES["test"][1] + ".gz")
    os.rename(tmp_path / IDX_FILES["test"][1], tmp_path / "x")
    write(gz.with_suffix(""), idx_bytes(labels(20, seed=2)), gz=True)
    found = locate("fashion-mnist", tmp_path)
    assert found.test[1] == str(gz) and not found.train[0].endswith(".gz")
    (xtr, _), (_, yte) = files_mod.load_arrays("fashion-mnist", tmp_path)
    assert xtr.shape == (40, 1, 28, 28) and yte.tolist() == labels(20, seed=2).tolist()


def test_cifar_found_from_the_root_or_its_own_folder(tmp_path):
    folder = write_cifar(tmp_path, 10)
    assert locate("cifar10", tmp_path).folder == str(folder)
    assert locate("cifar10", folder).folder == str(folder)


def test_missing_fashion_mnist_says_apt_get_or_data_root(tmp_path, monkeypatch):
    spec = dataclasses.replace(FILE_SPECS["fashion-mnist"], default_root=str(tmp_path / "no"))
    monkeypatch.setitem(FILE_SPECS, "fashion-mnist", spec)
    with pytest.raises(DataSetNotFoundError) as err:
        locate("fashion-mnist", None)
    text = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in text and "--data-root" in text
    assert str(tmp_path / "no") in text and "t10k-labels-idx1-ubyte" in text
    (tmp_path / "d").mkdir()
    write_idx_set(tmp_path / "d")
    os.remove(tmp_path / "d" / (IDX_FILES["test"][0] + ".gz"))
    with pytest.raises(DataSetNotFoundError) as err:
        locate("fashion-mnist", tmp_path / "d")
    text = str(err.value)
    assert f"lacks {IDX_FILES['test'][0]}" in text and "apt-get install" in text


@pytest.mark.parametrize(("name", "expected"), [
    ("mnist", "train-images-idx3-ubyte"), ("kmnist", "kmnist-train-imgs.npz"),
    ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
    ("svhn", "test_32x32.mat"),
])  # fmt: skip
def test_other_sets_say_where_to_get_them(tmp_path, name, expected):
    with pytest.raises(DataSetNotFoundError, match="never downloaded") as err:
        locate(name, None)
    assert expected in str(err.value) and "--data-root" in str(err.value)
    with pytest.raises(DataSetNotFoundError) as err:
        locate(name, tmp_path)
    text = str(err.value)
    assert expected in text and str(tmp_path) in text and "get the files from http" in text
    assert "apt-get" not in text


def test_a_file_as_root_says_so(tmp_path):
    f = tmp_path / "fashion.tar.gz"
    f.write_bytes(b"x")
    with pytest.raises(DataSetNotFoundError, match="it is a file, not a folder"):
        locate("fashion-mnist", f)
    with pytest.raises(DataSetNotFoundError, match="does not exist"):
        locate("cifar10", tmp_path / "nowhere")


def test_a_bad_file_names_the_set_and_the_fix(tmp_path):
    write_idx_set(tmp_path)
    bad = labels(40, seed=1)
    bad[0] = 12
    write(tmp_path / IDX_FILES["train"][1], idx_bytes(bad), gz=True)
    with pytest.raises(DataFileError) as err:
        make_loaders("fashion-mnist", data_root=tmp_path, batch_size=8)
    text = str(err.value)
    assert "train-labels-idx1-ubyte.gz" in text and "0..12" in text
    assert "re-download Fashion-MNIST" in text and "reinstall dataset-fashion-mnist" in text


def test_counts_of_images_and_labels_from_two_files_must_agree(tmp_path):
    write_idx_set(tmp_path, 40, 20)
    write(tmp_path / IDX_FILES["test"][1], idx_bytes(labels(19)), gz=True)
    with pytest.raises(DataFileError, match="19 labels for the 20 images of .*t10k-images"):
        make_loaders("mnist", data_root=tmp_path, batch_size=8)


LAYOUTS = {
    "fashion-mnist": (lambda root: write_idx_set(root), 40, 20, 1, 28, 10),
    "mnist": (lambda root: write_idx_set(root / "MNIST" / "raw", gz=False), 40, 20, 1, 28, 10),
    "kmnist": (lambda root: write_kmnist_npz(root / "kmnist"), 20, 10, 1, 28, 10),
    "cifar10": (lambda root: write_cifar(root, 10, 4), 20, 4, 3, 32, 10),
    "cifar100": (lambda root: write_cifar(root, 100, 12, style="py3"), 12, 12, 3, 32, 100),
    "svhn": (lambda root: write_svhn(root, 12, 6), 12, 6, 3, 32, 10),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_layout_through_make_loaders(tmp_path, name):
    writer, n_train, n_test, ch, size, classes = LAYOUTS[name]
    writer(tmp_path)
    data = make_loaders(name, data_root=tmp_path, batch_size=4, augment=True)
    assert (data.num_classes, data.in_channels, data.image_size) == (classes, ch, size)
    assert len(data.train.dataset) == n_train and len(data.test.dataset) == n_test
    x, y = next(iter(data.train))
    assert x.shape == (4, ch, size, size) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int(y.max()) < classes
    assert sum(len(b[1]) for b in data.test) == n_test
    small = make_loaders(name, data_root=tmp_path, batch_size=4, image_size=16)
    assert next(iter(small.test))[0].shape[1:] == (ch, 16, 16) and small.image_size == 16
    with pytest.raises(ValueError, match="channels"):
        make_loaders(name, data_root=tmp_path, channels=2 if ch == 1 else 1)


def test_normalisation_uses_the_sets_constants(tmp_path):
    write_idx_set(tmp_path)
    train, test = file_datasets("fashion-mnist", tmp_path, augment=False)
    (xtr, _), _ = files_mod.load_arrays("fashion-mnist", tmp_path)
    want = (torch.from_numpy(xtr[:3]).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(train.batch([0, 1, 2])[0], want, atol=1e-6)


def test_deprecated_vision_names_still_work(tmp_path):
    write_cifar(tmp_path, 10, 4)
    train, test = vision_datasets("cifar10", tmp_path, augment=False)
    assert len(train) == 20 and len(test) == 4


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="dataset-fashion-mnist not installed")
def test_the_real_fashion_mnist():
    """The files Debian's dataset-fashion-mnist installs: 60,000 + 10,000 images of 28x28,
    6,000 and 1,000 of each class, mean and std of the training pixels as FILE_SPECS says."""
    (xtr, ytr), (xte, yte) = files_mod.load_arrays("fashion-mnist", None)
    assert xtr.shape == (60000, 1, 28, 28) and xte.shape == (10000, 1, 28, 28)
    assert np.bincount(ytr).tolist() == [6000] * 10
    assert np.bincount(yte).tolist() == [1000] * 10
    pixels = xtr.astype(np.float64) / 255
    spec = FILE_SPECS["fashion-mnist"]
    assert abs(pixels.mean() - spec.mean[0]) < 1e-4 and abs(pixels.std() - spec.std[0]) < 1e-4
