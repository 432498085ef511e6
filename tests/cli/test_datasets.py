"""The training commands on the sets read from files: a tiny epoch on small IDX files, and
the one-line exit-2 messages of a missing or bad set (on the data tests' file writers)."""

from __future__ import annotations

import json

import pytest

from tests.data.data_helpers import IDX_FILES, idx_bytes, images, write, write_idx_set
from torchpint.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_LP = ["train-layer-parallel", "--image-size", "8", "--layers", "4", "--channels", "4",
           "--levels", "2", "--cfactor", "2", "--batch-size", "16", "--epochs", "1",
           "--no-progress"]  # fmt: skip


def test_layer_parallel_trains_on_fashion_mnist_files(tmp_path, capsys):
    write_idx_set(tmp_path / "fm", 64, 32)
    out = tmp_path / "r.json"
    code = main([*TINY_LP, "--dataset", "fashion-mnist", "--data-root", str(tmp_path / "fm"),
                 "--augment", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    assert r["config"]["dataset"] == "fashion-mnist" and r["config"]["augment"] == "standard"
    assert len(r["layer_parallel"]["history"]) == 1
    assert "on fashion-mnist" in capsys.readouterr().out


def test_parareal_trains_on_mnist_files(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", 64, 32, gz=False)
    out = tmp_path / "r.json"
    assert main(["train-parareal", "--model", "vgg-small", "--width", "4", "--image-size", "8",
                 "--batch-size", "32", "--epochs", "1", "--no-progress", "--dataset", "mnist",
                 "--data-root", str(tmp_path), "--json", str(out)]) == 0
    d = json.loads(out.read_text())["dataset"]
    assert d == {"name": "mnist", "train": 64, "test": 32, "channels": 1, "image_size": 8,
                 "classes": 10}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_fashion_mnist_exits_2_with_the_apt_get_hint(tmp_path, capsys):
    assert main([*TINY_LP, "--dataset", "fashion-mnist", "--data-root", str(tmp_path)]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("torchpint train-layer-parallel: error:")
    assert "apt-get install dataset-fashion-mnist" in line and str(tmp_path) in line


def test_a_truncated_file_exits_2_naming_it(tmp_path, capsys):
    write_idx_set(tmp_path, 64, 32)
    bad = write(tmp_path / IDX_FILES["test"][0], idx_bytes(images(32))[:-5], gz=True)
    assert main([*TINY_LP, "--dataset", "fashion-mnist", "--data-root", str(tmp_path)]) == 2
    line = _one_line_error(capsys)
    assert str(bad) in line and "truncated" in line and "dataset-fashion-mnist" in line


def test_augment_on_an_embedded_set_is_refused(capsys):
    assert main([*TINY_LP, "--augment", "crop"]) == 2
    assert "--augment applies to the data sets read from files" in _one_line_error(capsys)
