"""SIGTERM mid-run, through the real command line: every rank stops at the next MGRIT
iteration or batch with one line and exit 143, the checkpoint names where, and --resume
ends exactly where the uninterrupted run does (1 and 2 ranks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchpint.testing import free_port

MGRIT = ["train-mgrit", "--problem", "xor", "--steps", "1600", "--no-progress", "--no-verify"]
PARAREAL = ["train-parareal", "--model", "vgg-small", "--width", "4", "--image-size", "8",
            "--batch-size", "64", "--epochs", "2", "--no-progress"]  # fmt: skip


def _launch(args: list[str], world: int) -> list[subprocess.Popen]:
    """``world`` processes of ``torchpint ARGS``, as torchrun would start them."""
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if world > 1:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank),
                       LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
        procs.append(subprocess.Popen([sys.executable, "-m", "torchpint", *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        _, err = p.communicate(timeout=240)
        out.append((p.returncode, err))
    return out


def _wait_for(path: Path, procs: list[subprocess.Popen]) -> None:
    deadline = time.time() + 120
    while not path.exists() and time.time() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.02)
    assert path.exists(), _finish(procs)


@pytest.mark.parametrize("world", [1, 2])
def test_train_mgrit_sigterm_mid_solve_resumes_exactly(tmp_path, world):
    full, part = tmp_path / "full.json", tmp_path / "part.json"
    done = _finish(_launch([*MGRIT, "--json", str(full)], world))
    assert all(code == 0 for code, _ in done), done
    ckpt = tmp_path / "run.pt"
    procs = _launch([*MGRIT, "--checkpoint", str(ckpt), "--json", str(part)], world)
    first = ckpt if world == 1 else tmp_path / "run.pt.rank1"
    _wait_for(first, procs)
    procs[-1].send_signal(signal.SIGTERM)  # the last rank only: all must stop
    for code, err in _finish(procs):
        lines = err.strip().splitlines()
        assert code == 143, err
        assert len(lines) == 1 and "stopped by SIGTERM at MGRIT iteration" in lines[0], err
        assert str(ckpt) in lines[0] and "resume with --resume" in lines[0]
    done = _finish(_launch([*MGRIT, "--checkpoint", str(ckpt), "--resume", "--json",
                            str(part)], world))
    assert all(code == 0 for code, _ in done), done
    a, b = json.loads(full.read_text()), json.loads(part.read_text())
    assert a["residuals"] == b["residuals"] and a["iterations"] == b["iterations"]


def test_train_parareal_sigterm_mid_epoch_resumes_exactly(tmp_path):
    full, part = tmp_path / "full.json", tmp_path / "part.json"
    done = _finish(_launch([*PARAREAL, "--json", str(full)], 1))
    assert done[0][0] == 0, done
    ck = tmp_path / "ck"
    procs = _launch([*PARAREAL, "--checkpoint", str(ck), "--json", str(part)], 1)
    _wait_for(ck / "parareal.pt", procs)  # epoch 1 written: SIGTERM lands in epoch 2
    procs[0].send_signal(signal.SIGTERM)
    (code, err), = _finish(procs)
    assert code == 143 and len(err.strip().splitlines()) == 1, err
    assert "stopped by SIGTERM at" in err and "parareal.pt" in err
    done = _finish(_launch([*PARAREAL, "--checkpoint", str(ck), "--resume", "--json",
                            str(part)], 1))
    assert done[0][0] == 0, done
    a, b = json.loads(full.read_text()), json.loads(part.read_text())
    ha, hb = a["parareal"]["history"], b["parareal"]["history"]
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    assert [h["test_accuracy"] for h in ha] == [h["test_accuracy"] for h in hb]


def test_train_layer_parallel_sigterm_mid_epoch_resumes_exactly(tmp_path):
    """Layer-parallel training stops at the next batch and resumes bit for bit: the
    forward's warm start is in the checkpoint (the network's extra state)."""
    args = ["train-layer-parallel", "--image-size", "8", "--layers", "4", "--channels", "4",
            "--levels", "2", "--cfactor", "2", "--fwd-iterations", "1", "--batch-size", "16",
            "--epochs", "3", "--no-progress"]  # fmt: skip  (1 iteration: not yet exact)
    full = tmp_path / "full.json"
    done = _finish(_launch([*args, "--json", str(full)], 1))
    assert done[0][0] == 0, done
    args += ["--checkpoint", str(tmp_path / "ck")]
    procs = _launch(args, 1)
    _wait_for(tmp_path / "ck" / "layer_parallel.pt", procs)
    procs[0].send_signal(signal.SIGTERM)
    (code, err), = _finish(procs)
    assert code == 143 and "stopped by SIGTERM at epoch 2/3, batch" in err, err
    done = _finish(_launch([*args, "--resume", "--json", str(tmp_path / "r.json")], 1))
    assert done[0][0] == 0, done
    r = json.loads((tmp_path / "r.json").read_text())["layer_parallel"]
    assert r["resumed_from_epoch"] == 1 and r["epochs"] == 3
    ha, hb = json.loads(full.read_text())["layer_parallel"]["history"], r["history"]
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    assert [h["test_accuracy"] for h in ha] == [h["test_accuracy"] for h in hb]
