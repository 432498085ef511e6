"""``torchpint train-parareal`` end to end on a tiny configuration."""

from __future__ import annotations

import json
import os

import pytest
import torch

from torchpint.cli import main
from torchpint.trainer import load_checkpoint

TINY = [
    "train-parareal",
    "--model", "vgg-small",
    "--width", "4",
    "--image-size", "8",
    "--batch-size", "128",
    "--lr", "0.1",
    "--no-progress",
]  # fmt: skip


def _run(*extra: str) -> int:
    return main([*TINY, *extra])


def test_end_to_end_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert _run("--epochs", "2", "--baseline", "--json", str(out), "--plot", str(png)) == 0
    r = json.loads(out.read_text())
    for key in ("parareal", "baseline"):
        part = r[key]
        assert 0.0 <= part["test_accuracy"] <= 100.0
        assert part["step_time_s"] > 0 and part["params"] > 0
        assert len(part["history"]) == 2 and part["epochs"] == 2
    p, b = r["parareal"], r["baseline"]
    assert p["params"] == b["params"] + p["coarse_params"]  # the fine chunks are the original
    assert r["speedup"] == pytest.approx(b["step_time_s"] / p["step_time_s"])
    assert p["chunks"] == 2 and p["iterations"] == 1 and p["executor"] == "threads"
    assert len(p["cut_points"]) == 1
    assert p["cost_report"]["ideal_speedup"] > 0
    assert r["dataset"] == {
        "name": "digits", "train": 1437, "test": 360, "channels": 1, "image_size": 8,
        "classes": 10,
    }  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "speedup" in text and "parareal: test accuracy" in text


def test_without_baseline_json_has_nulls(tmp_path):
    out = tmp_path / "r.json"
    assert _run("--epochs", "1", "--executor", "serial", "--json", str(out)) == 0
    r = json.loads(out.read_text())
    assert r["baseline"] is None and r["speedup"] is None
    assert r["parareal"]["executor"] == "serial"


def test_checkpoint_resume_matches_uninterrupted(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    args = ("--epochs", "2", "--schedule", "step", "--baseline")
    assert _run(*args, "--checkpoint", str(full), "--json", str(tmp_path / "a.json")) == 0
    assert _run(*args, "--checkpoint", str(part), "--stop-after", "1") == 0
    assert load_checkpoint(str(part / "parareal.pt"))["epoch"] == 1
    assert load_checkpoint(str(part / "baseline.pt"))["epoch"] == 1
    assert (
        _run(*args, "--checkpoint", str(part), "--resume", "--json", str(tmp_path / "b.json"))
        == 0
    )
    for label in ("parareal", "baseline"):
        a = load_checkpoint(str(full / f"{label}.pt"))
        b = load_checkpoint(str(part / f"{label}.pt"))
        assert a["epoch"] == b["epoch"] == 2
        assert a["model"].keys() == b["model"].keys()
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), k
    ra = json.loads((tmp_path / "a.json").read_text())
    rb = json.loads((tmp_path / "b.json").read_text())
    for label in ("parareal", "baseline"):
        ha, hb = ra[label]["history"], rb[label]["history"]
        assert [h["test_accuracy"] for h in ha] == [h["test_accuracy"] for h in hb]
        assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    assert rb["parareal"]["resumed_from_epoch"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--devices", "cuda:3"), "does not exist"),
        (("--executor", "devices", "--devices", "cuda:0,cuda:1"), "does not exist"),
        (("--executor", "distributed"), "torchrun"),
        (("--resume",), "--resume needs --checkpoint"),
        (("--dataset", "cifar10"), "never downloaded"),
        (("--chunks", "40"), "chunks"),
    ],
)
def test_bad_input_gives_clear_errors(extra, message, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    if "cuda" in " ".join(extra) and torch.cuda.device_count() >= 4:
        pytest.skip("this machine has the devices")
    assert _run("--epochs", "1", *extra) == 2
    assert message in capsys.readouterr().err


def test_missing_data_root_names_expected_files(tmp_path, capsys):
    assert _run("--dataset", "svhn", "--data-root", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "train_32x32.mat" in err and str(tmp_path) in err
    assert not os.listdir(tmp_path)  # nothing downloaded or written


def _torchrun(nproc: int, args: list[str], tmp_path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--standalone", "-m", "torchpint", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # as torchrun's ranks: the same rounding
def test_torchrun_distributed_resume_matches_single_process(tmp_path):
    """Two ranks, stopped after epoch 1 and resumed, end where one serial process ends."""
    args = [*TINY, "--epochs", "2", "--executor", "distributed"]
    _torchrun(2, [*args, "--checkpoint", "d", "--stop-after", "1"], tmp_path)
    proc = _torchrun(2, [*args, "--checkpoint", "d", "--resume", "--json", "d.json"], tmp_path)
    assert proc.stdout.count("parareal: test accuracy") == 1  # only rank 0 prints
    assert _run("--epochs", "2", "--executor", "serial", "--checkpoint",
                str(tmp_path / "s")) == 0  # fmt: skip
    a = load_checkpoint(str(tmp_path / "d" / "parareal.pt"))
    b = load_checkpoint(str(tmp_path / "s" / "parareal.pt"))
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4, msg=k)
    r = json.loads((tmp_path / "d.json").read_text())
    assert r["parareal"]["executor"] == "distributed" and r["parareal"]["resumed_from_epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["d", "d.json", "s"]


@pytest.mark.usefixtures("one_thread")  # as torchrun's ranks: the same rounding
def test_torchrun_data_parallel_resume_matches_whole_batch(tmp_path):
    """2 replicas x 2 chunks on 4 ranks (batch norm synced over the replicas), stopped
    after epoch 1 and resumed, end where one serial process with the whole batch ends.

    lr 0.01: the replicas sum in another order, and at TINY's lr 0.1 this training
    amplifies float32 rounding tenfold per step (in float64 the two agree to 12 digits)."""
    args = [*TINY, "--lr", "0.01", "--epochs", "2", "--executor", "distributed",
            "--data-parallel", "2"]  # fmt: skip
    _torchrun(4, [*args, "--checkpoint", "d", "--stop-after", "1"], tmp_path)
    proc = _torchrun(4, [*args, "--checkpoint", "d", "--resume", "--json", "d.json"], tmp_path)
    assert "2 replicas x 2 chunks, 4 ranks" in proc.stdout
    assert _run("--lr", "0.01", "--epochs", "2", "--executor", "serial", "--json",
                str(tmp_path / "s.json"),
                "--checkpoint", str(tmp_path / "s")) == 0  # fmt: skip
    a = load_checkpoint(str(tmp_path / "d" / "parareal.pt"))
    b = load_checkpoint(str(tmp_path / "s" / "parareal.pt"))
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=5e-4, rtol=1e-3, msg=k)
    r, s = (json.loads((tmp_path / f).read_text()) for f in ("d.json", "s.json"))
    assert r["parareal"]["data_parallel"] == 2 and r["parareal"]["resumed_from_epoch"] == 1
    for h, g in zip(r["parareal"]["history"], s["parareal"]["history"], strict=True):
        assert h["train_loss"] == pytest.approx(g["train_loss"], rel=1e-3)  # the whole batch's
        assert h["test_accuracy"] == pytest.approx(g["test_accuracy"], abs=0.1)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--data-parallel", "2"), "needs --executor distributed"),
    ],
)
def test_data_parallel_errors(extra, message, capsys):
    assert _run(*extra) == 2
    assert message in capsys.readouterr().err
