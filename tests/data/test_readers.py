"""The file readers on files the tests write: good, truncated, wrong magic, wrong counts,
labels out of range, and pickles holding foreign objects (refused without running)."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from tests.data.data_helpers import (
    cifar_batch,
    idx_bytes,
    images,
    labels,
    py2_cifar_pickle,
    write,
    write_kmnist_npz,
    write_svhn,
)
from torchpint.data.readers import (
    DataFileError,
    DataSetNotFoundError,
    UnsafePickleError,
    check_pair,
    read_cifar_batch,
    read_idx,
    read_npz,
    read_svhn_mat,
    safe_unpickle,
)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_raw_and_gzipped(tmp_path, gz):
    x = images(5)
    p = write(tmp_path / "train-images-idx3-ubyte", idx_bytes(x), gz)
    got = read_idx(p, 3)
    assert got.shape == (5, 28, 28) and got.dtype == np.uint8 and np.array_equal(got, x)
    y = labels(5)
    assert np.array_equal(read_idx(write(tmp_path / "l", idx_bytes(y), gz), 1), y)


def test_gzip_is_told_by_its_bytes_not_its_name(tmp_path):
    x = images(3)
    p = tmp_path / "train-images-idx3-ubyte"  # gzipped under the raw name
    p.write_bytes(gzip.compress(idx_bytes(x)))
    assert np.array_equal(read_idx(p, 3), x)


def test_truncated_idx_names_the_file_and_the_fix(tmp_path):
    data = idx_bytes(images(4))
    p = write(tmp_path / "t10k-images-idx3-ubyte", data[:-100])
    with pytest.raises(DataFileError, match="truncated: the header says 4x28x28") as err:
        read_idx(p, 3, fix="reinstall dataset-fashion-mnist")
    assert str(p) in str(err.value) and "reinstall dataset-fashion-mnist" in str(err.value)
    assert isinstance(err.value, ValueError)
    with pytest.raises(DataFileError, match="no IDX header"):
        read_idx(write(tmp_path / "tiny", b"\0\0"), 3)
    with pytest.raises(DataFileError, match="shorter than its header"):
        read_idx(write(tmp_path / "head", data[:10]), 3)
    with pytest.raises(DataFileError, match="after the 4x28x28 values"):
        read_idx(write(tmp_path / "long", data + b"\0\0"), 3)


def test_truncated_gzip_is_refused(tmp_path):
    p = tmp_path / "x.gz"
    whole = gzip.compress(idx_bytes(images(20)))
    p.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataFileError, match="truncated or corrupt gzip") as err:
        read_idx(p, 3)
    assert str(p) in str(err.value)


def test_wrong_magic_number(tmp_path):
    labels_file = write(tmp_path / "labels", idx_bytes(labels(5)))
    with pytest.raises(DataFileError, match=r"wrong magic number 2049 \(expected 2051"):
        read_idx(labels_file, 3)  # a labels file where images were expected
    junk = write(tmp_path / "junk", b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataFileError, match="not an IDX file"):
        read_idx(junk, 1)
    bad = write(tmp_path / "bad", idx_bytes(images(2), magic=0x0803 | 0x01000000))
    with pytest.raises(DataFileError, match="wrong magic number"):
        read_idx(bad, 3)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(DataSetNotFoundError, match="no such file") as err:
        read_idx(tmp_path / "nothing", 1)
    assert isinstance(err.value, FileNotFoundError)


def test_pair_checks_counts_labels_and_shapes():
    x, y = images(10)[:, None], labels(10)
    xs, ys = check_pair(x, y, (1, 28, 28), 10, where=("imgs", "labs"))
    assert ys.dtype == np.int64 and xs is x
    with pytest.raises(DataFileError, match="labs: 9 labels for the 10 images of imgs"):
        check_pair(x, y[:9], (1, 28, 28), 10, where=("imgs", "labs"))
    bad = y.copy()
    bad[3] = 10
    with pytest.raises(DataFileError, match=r"labs: labels range over 0\.\.10, expected 0\.\.9"):
        check_pair(x, bad, (1, 28, 28), 10, where=("imgs", "labs"))
    with pytest.raises(DataFileError, match="imgs: images of 1x32x32, expected 1x28x28"):
        check_pair(images(10, 32)[:, None], y, (1, 28, 28), 10, where=("imgs", "labs"))
    with pytest.raises(DataFileError, match="holds no images"):
        check_pair(x[:0], y[:0], (1, 28, 28), 10, where=("imgs", "labs"))
    with pytest.raises(DataFileError, match="expected uint8"):
        check_pair(x.astype(np.float32), y, (1, 28, 28), 10, where=("imgs", "labs"))


# --------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_batch_as_python2_wrote_it(tmp_path, classes):
    batch = cifar_batch(6, classes)
    p = write(tmp_path / "data_batch_1", py2_cifar_pickle(batch))
    x, y = read_cifar_batch(p, classes)
    key = "labels" if classes == 10 else "fine_labels"
    assert x.shape == (6, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x.reshape(6, -1), batch["data"])
    assert y.tolist() == batch[key] and y.dtype == np.int64


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_pickled_by_this_python_with_bytes_keys(tmp_path, protocol):
    batch = cifar_batch(4, 10)
    data = pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=protocol)
    x, y = read_cifar_batch(write(tmp_path / "test_batch", data), 10)
    assert np.array_equal(x.reshape(4, -1), batch["data"]) and y.tolist() == batch["labels"]
    gz = write(tmp_path / "g", data, gz=True)
    assert np.array_equal(read_cifar_batch(gz, 10)[0], x)


class _Evil:
    """Runs a shell command when unpickled by an ordinary unpickler."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_a_foreign_object_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    for payload in (_Evil(marker), {b"data": _Evil(marker), b"labels": [0]}):
        p = write(tmp_path / "data_batch_1", pickle.dumps(payload, protocol=2))
        with pytest.raises(UnsafePickleError, match="refused global") as err:
            read_cifar_batch(p, 10)
        assert str(p) in str(err.value) and "was not run" in str(err.value)
        assert isinstance(err.value, ValueError)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        eval,  # builtins.eval, by reference
        np.array([1, "x"], dtype=object),  # object arrays carry arbitrary objects
        np.zeros(3, dtype=[("a", "u1")]),  # a record dtype
        _Evil,  # a class of a test module
    ],
)
def test_every_other_global_is_refused(tmp_path, payload):
    p = write(tmp_path / "b", pickle.dumps({b"data": payload}, protocol=2))
    with pytest.raises(UnsafePickleError):
        safe_unpickle(p)


def test_cifar_batch_content_is_checked(tmp_path):
    good = cifar_batch(4, 10)
    cases = [
        ({**good, "labels": good["labels"][:3]}, "3 labels for the 4 images"),
        ({**good, "labels": [0, 1, 2, 10]}, r"labels range over 0\.\.10, expected 0\.\.9"),
        ({"data": good["data"]}, "has no 'labels' entry"),
        ({**good, "data": good["data"][:, :100]}, r"'data' has shape \(4, 100\)"),
        ({**good, "labels": "abc"}, "'labels' is a str"),
    ]
    for i, (batch, message) in enumerate(cases):
        p = write(tmp_path / f"b{i}", py2_cifar_pickle(batch))
        with pytest.raises(DataFileError, match=message):
            read_cifar_batch(p, 10)
    p = write(tmp_path / "list", pickle.dumps([1, 2], protocol=2))
    with pytest.raises(DataFileError, match="holds a list, expected a CIFAR batch"):
        read_cifar_batch(p, 10)
    whole = py2_cifar_pickle(good)
    p = write(tmp_path / "cut", whole[: len(whole) // 2])
    with pytest.raises(DataFileError, match="truncated or corrupt pickle"):
        read_cifar_batch(p, 10)
    c100 = cifar_batch(4, 100)
    p = write(tmp_path / "c100", py2_cifar_pickle({**c100, "fine_labels": [0, 1, 2, 100]}))
    with pytest.raises(DataFileError, match=r"expected 0\.\.99"):
        read_cifar_batch(p, 100)


# ---------------------------------------------------------------------------- SVHN, npz


def test_svhn_mat_labels_10_become_0(tmp_path):
    write_svhn(tmp_path, 12, 6)
    x, y = read_svhn_mat(tmp_path / "train_32x32.mat")
    assert x.shape == (12, 3, 32, 32) and x.dtype == np.uint8
    assert y.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]


def test_svhn_mat_is_checked(tmp_path):
    write_svhn(tmp_path, 3, 2, y_train=[1, 11, 2])
    with pytest.raises(DataFileError, match=r"labels range over 1\.\.11, expected 1\.\.10"):
        read_svhn_mat(tmp_path / "train_32x32.mat")
    from scipy.io import savemat

    savemat(tmp_path / "wrong.mat", {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": [[1], [2]]})
    with pytest.raises(DataFileError, match=r"'X' has shape \(28, 28, 3, 2\)"):
        read_svhn_mat(tmp_path / "wrong.mat")
    savemat(tmp_path / "other.mat", {"A": np.zeros(2)})
    with pytest.raises(DataFileError, match="has no 'X' and 'y'"):
        read_svhn_mat(tmp_path / "other.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataFileError, match="not a readable MATLAB file"):
        read_svhn_mat(tmp_path / "junk.mat")


def test_kmnist_npz_and_object_arrays_refused(tmp_path):
    write_kmnist_npz(tmp_path, 5, 3)
    assert read_npz(tmp_path / "kmnist-train-imgs.npz").shape == (5, 28, 28)
    np.savez(tmp_path / "obj.npz", arr_0=np.array([1, "x"], dtype=object))
    with pytest.raises(DataFileError, match="not a readable .npz"):
        read_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    with pytest.raises(DataFileError, match="exactly one"):
        read_npz(tmp_path / "two.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "kmnist-train-imgs.npz").read_bytes()[:50])
    with pytest.raises(DataFileError, match="not a readable .npz"):
        read_npz(tmp_path / "cut.npz")
