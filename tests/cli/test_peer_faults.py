"""A peer rank that dies (``kill -9``) or hangs (``SIGSTOP``) mid-run: every surviving rank
exits 4 with one line on stderr, no traceback, within a bounded time.

Each rank is its own ``python -m torchpint`` process with torchrun's environment
(``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), so a test
signals one rank directly and reads every rank's own exit code (under torchrun the agent
would tear the others down itself).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchpint.testing import free_port

TIMEOUT = 6  # --timeout: seconds a rank waits for its peers
STARTUP = 120  # seconds until rank 0 reports training progress (4 ranks on 2 cores)

PARAREAL = ["train-parareal", "--model", "vgg-small", "--width", "4", "--image-size", "8",
            "--batch-size", "32", "--no-progress", "--executor", "distributed",
            "--epochs", "1000", "--timeout", str(TIMEOUT)]  # fmt: skip
TRAIN_MGRIT = ["train-mgrit", "--problem", "xor", "--steps", "32000", "--solver", "V",
               "--no-verify", "--no-progress", "--timeout", str(TIMEOUT)]  # fmt: skip
LAYER_PARALLEL = ["train-layer-parallel", "--epochs", "1000", "--no-progress",
                  "--timeout", str(TIMEOUT)]  # fmt: skip
MGRIT = ["mgrit", "--steps", "20000", "--tol", "1e-300", "--max-iter", "100",
         "--timeout", str(TIMEOUT)]  # fmt: skip

# name: (ranks, the rank that fails, command, what rank 0 prints once the run is underway)
CASES = {
    "parareal": (2, 1, [*PARAREAL, "--chunks", "2"], "epoch 1/"),
    "grid": (4, 1, [*PARAREAL, "--chunks", "2", "--data-parallel", "2"], "epoch 1/"),
    "train-mgrit": (2, 1, TRAIN_MGRIT, "train-mgrit:"),
    "train-layer-parallel": (2, 1, LAYER_PARALLEL, "epoch 1/"),
    # rank 1: replica 0's second slab, the slab peer of rank 0 and replica peer of rank 3
    "layer-parallel-grid": (4, 1, [*LAYER_PARALLEL, "--data-parallel", "2"], "epoch 1/"),
    "mgrit": (2, 1, MGRIT, "iter   2 "),
}
# 4 ranks, or a long start on 2 cores
SLOW = {"grid", "train-layer-parallel", "layer-parallel-grid", "mgrit"}


def _launch(world: int, args: list[str], tmp_path: Path) -> list[subprocess.Popen]:
    """``world`` ranks of ``torchpint ARGS``, each with torchrun's environment; their
    stdout and stderr go to files (a full pipe would stall a rank)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT", "TORCHPINT_TRACEBACK")}  # fmt: skip
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    procs = []
    for r in range(world):
        with open(tmp_path / f"out{r}", "w") as out, open(tmp_path / f"err{r}", "w") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "torchpint", *args], cwd=tmp_path, stdout=out,
                stderr=err, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}))
    return procs


def _wait_for(marker: str, procs: list[subprocess.Popen], tmp_path: Path) -> None:
    """Until rank 0 has printed ``marker`` (the run is underway); every rank still alive."""
    deadline = time.monotonic() + STARTUP
    while marker not in (tmp_path / "out0").read_text():
        dead = {r: p.returncode for r, p in enumerate(procs) if p.poll() is not None}
        assert not dead, f"ranks ended before the fault {dead}: {(tmp_path / 'err0').read_text()}"
        assert time.monotonic() < deadline, f"no {marker!r} from rank 0 in {STARTUP} s"
        time.sleep(0.1)


def _end(procs: list[subprocess.Popen]) -> None:
    """Stop every rank still running (a stopped one is continued first, so it can die)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
        p.wait()


@pytest.mark.parametrize("how", ["kill", "stop"])
@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES]
)
def test_a_dead_or_hung_peer_exits_4_on_every_rank(case, how, tmp_path):
    world, victim, args, marker = CASES[case]
    procs = _launch(world, args, tmp_path)
    try:
        _wait_for(marker, procs, tmp_path)
        time.sleep(0.5)  # into the run's messages
        procs[victim].send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        t0 = time.monotonic()
        # a hang is noticed after --timeout; a rank that learns of it from a peer that
        # exited in turn may need one more (the 2x2 grid); 15 s for the exits
        bound = 2 * TIMEOUT + 15
        for r, p in enumerate(procs):
            if r == victim:
                continue
            try:
                p.wait(timeout=max(0.1, bound - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                pytest.fail(f"rank {r} still runs {bound} s after rank {victim} was {how}ed")
            err = (tmp_path / f"err{r}").read_text()
            assert p.returncode == 4, f"rank {r}: exit {p.returncode}\n{err[-3000:]}"
            assert "Traceback" not in err, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "peer rank failed" in lines[0], err
    finally:
        _end(procs)
