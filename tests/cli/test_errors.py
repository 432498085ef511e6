"""The exit-code contract and early errors, through ``main(argv)`` and the entry point.

0 success, 1 not converged, 2 bad usage or input (one line, no traceback), 3 diverged,
130 interrupted. Output paths are checked before any work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from torchpint.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_PARAREAL = ["train-parareal", "--model", "vgg-small", "--width", "4", "--image-size", "8",
                 "--batch-size", "128", "--no-progress"]  # fmt: skip


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize(("argv", "needle"), [
    (["train-mgrit", "--lr", "0"], "--lr"),
    (["train-mgrit", "--lr", "nan"], "--lr"),
    (["train-mgrit", "--steps", "0"], "--steps"),
    (["train-mgrit", "--cfactor", "1"], "--cfactor"),
    (["train-mgrit", "--batch-size", "0"], "--batch-size"),
    (["train-mgrit", "--max-coarse", "0"], "--max-coarse"),
    (["train-mgrit", "--threads", "0"], "--threads"),
    (["train-mgrit", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["train-mgrit", "--momentum", "1"], "--momentum"),
    (["mgrit", "--nx", "0"], "--nx"),
    (["mgrit", "--t-stop", "nan"], "--t-stop"),
    (["mgrit", "--parareal", "0"], "--parareal"),
    (["mgrit", "--min-coarse", "0"], "--min-coarse"),
    (["mgrit", "--tol", "-1"], "--tol"),
    ([*TINY_PARAREAL, "--lr", "inf"], "--lr"),
    ([*TINY_PARAREAL, "--lr", "nan"], "--lr"),
    ([*TINY_PARAREAL, "--momentum", "nan"], "--momentum"),
    ([*TINY_PARAREAL, "--weight-decay", "inf"], "--weight-decay"),
    ([*TINY_PARAREAL, "--epochs", "0"], "--epochs"),
    (["no-such-command"], "invalid choice"),
])  # fmt: skip
def test_bad_values_are_refused_at_parse_time(argv, needle, capsys):
    assert main(argv) == 2
    _one_line_error(capsys, needle, "must be" if needle.startswith("--") else needle)


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "exit codes" in capsys.readouterr().out


def test_resume_needs_a_checkpoint(capsys):
    assert main(["train-mgrit", "--steps", "8", "--resume", "--no-progress"]) == 2
    _one_line_error(capsys, "--resume needs --checkpoint")


def test_mgrit_divergence_is_exit_3_with_json(tmp_path, capsys):
    out = tmp_path / "d.json"
    rc = main(["mgrit", "--problem", "dahlquist", "--lam", "20", "--method", "FE",
               "--nt", "101", "--json", str(out)])
    assert rc == 3
    err = capsys.readouterr().err
    assert "torchpint mgrit: diverged:" in err and "Traceback" not in err
    assert json.loads(out.read_text())["diverged"] is True


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_unwritable_outputs_fail_before_the_work(flag, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    t = time.perf_counter()
    for path in ("/proc/torchpint/x.json", str(blocker / "x.json"), str(tmp_path)):
        # a long run: the error must come before it starts
        assert main(["train-mgrit", "--steps", "100000", flag, path, "--no-progress"]) == 2
        _one_line_error(capsys, "cannot write")
    assert time.perf_counter() - t < 10


def test_unwritable_checkpoint_and_out_folders(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train-mgrit", "--steps", "100000", "--checkpoint", str(blocker / "c.pt"),
                 "--no-progress"]) == 2
    _one_line_error(capsys, "is a file, not a folder")
    assert main([*TINY_PARAREAL, "--checkpoint", str(blocker)]) == 2
    _one_line_error(capsys, "cannot write")
    assert main(["demo", "--out", "/proc/torchpint-demo"]) == 2
    _one_line_error(capsys, "cannot write")


def test_stop_after_zero_writes_strict_json(tmp_path):
    out = tmp_path / "r.json"
    assert main([*TINY_PARAREAL, "--epochs", "1", "--stop-after", "0", "--executor", "serial",
                 "--json", str(out)]) == 0

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    data = json.loads(out.read_text(), parse_constant=refuse)
    assert data["parareal"]["test_accuracy"] is None


def test_sigint_ends_in_one_line_and_the_run_resumes(tmp_path):
    """Ctrl-C during a checkpointed run: one line naming the checkpoint, exit 130, and
    --resume continues from it."""
    ckpt = tmp_path / "run.pt"
    cmd = [sys.executable, "-m", "torchpint", "train-mgrit", "--problem", "xor", "--steps",
           "3200", "--solver", "V", "--lr-max", "8", "--data", "full", "--max-iter", "50",
           "--no-verify", "--no-progress", "--checkpoint", str(ckpt)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint appeared"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and str(ckpt) in lines[0], err
    assert "resume with --resume" in lines[0]
    done = subprocess.run([*cmd, "--resume", "--max-iter", "1"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr  # it continued (and stopped at its budget)


def test_train_mgrit_refuses_another_runs_checkpoint(tmp_path, capsys):
    """The issue's probe: seed 0's checkpoint resumed with --seed 5 is refused (exit 2),
    naming the seed, instead of reporting seed 0's weights as converged."""
    ck = str(tmp_path / "b.ckpt")
    base = ["train-mgrit", "--problem", "xor", "--steps", "64", "--no-progress", "--no-verify",
            "--checkpoint", ck]  # fmt: skip
    assert main([*base, "--seed", "0"]) == 0
    capsys.readouterr()
    assert main([*base, "--seed", "5", "--resume"]) == 2
    _one_line_error(capsys, "checkpoint does not match", "seed")
    assert main([*base, "--seed", "0", "--data", "full", "--resume"]) == 2
    _one_line_error(capsys, "data_rule")


def test_train_parareal_refuses_another_runs_checkpoint(tmp_path, capsys):
    d = str(tmp_path / "ck")
    assert main([*TINY_PARAREAL, "--epochs", "2", "--stop-after", "1", "--checkpoint", d]) == 0
    capsys.readouterr()
    assert main([*TINY_PARAREAL, "--epochs", "2", "--dataset", "shapes", "--checkpoint", d,
                 "--resume"]) == 2
    _one_line_error(capsys, "checkpoint does not match", "dataset")


def test_train_parareal_non_finite_loss_is_exit_3(tmp_path, capsys):
    d = tmp_path / "ck"
    rc = main([*TINY_PARAREAL, "--epochs", "1", "--lr", "1e4", "--executor", "serial",
               "--checkpoint", str(d)])
    assert rc == 3
    err = capsys.readouterr().err
    assert "diverged" in err and "epoch" in err and "step" in err and "Traceback" not in err
    assert not (d / "parareal.pt").exists()  # no checkpoint of a non-finite run


def test_train_parareal_lr_beyond_the_parameter_dtype_is_bad_input(capsys):
    assert main([*TINY_PARAREAL, "--epochs", "1", "--lr", "1e300", "--executor", "serial"]) == 2
    _one_line_error(capsys, "does not fit", "float32")


def test_threads_executor_run_exits_cleanly():
    """A train-parareal process on the threads executor ends with exit code 0: chunk
    threads stopped mid-run once made the interpreter abort at exit (code 134)."""
    cmd = [sys.executable, "-m", "torchpint", "train-parareal", "--epochs", "1", "--chunks", "2",
           "--no-progress"]  # fmt: skip
    for _ in range(2):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-500:]
