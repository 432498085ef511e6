"""``torchpint train-layer-parallel`` end to end on a tiny configuration."""

from __future__ import annotations

import json

import pytest

from torchpint.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["train-layer-parallel", "--image-size", "8", "--layers", "4", "--channels", "4",
        "--levels", "2", "--cfactor", "2", "--batch-size", "256", "--no-progress"]  # fmt: skip


def test_json_plot_and_gradient_check(tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main([*TINY, "--epochs", "1", "--serial-baseline", "--json", str(out),
                 "--plot", str(png)]) == 0
    r = json.loads(out.read_text())
    lp = r["layer_parallel"]
    assert 0 <= lp["test_accuracy"] <= 100 and lp["step_time_s"] > 0
    assert lp["fwd_iters"] == 2 and lp["bwd_iters"] == 1
    assert len(lp["fwd_residuals"]) == 2 and len(lp["bwd_residuals"]) == 1
    assert r["serial"]["step_time_s"] > 0
    # 4 steps, two levels, m = 2: two forward iterations are exact; one adjoint is not
    assert r["gradient_check"]["output_rel_err"] < 1e-6
    assert 0 < r["gradient_check"]["grad_rel_err"] < 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exact_settings_match_backprop(tmp_path):
    out = tmp_path / "r.json"
    assert main([*TINY, "--epochs", "1", "--bwd-iters", "2", "--json", str(out)]) == 0
    check = json.loads(out.read_text())["gradient_check"]
    assert check["output_rel_err"] < 1e-6 and check["grad_rel_err"] < 1e-5  # float32


def test_resume_refuses_other_solver_settings(tmp_path, capsys):
    d = str(tmp_path / "ck")
    assert main([*TINY, "--epochs", "2", "--checkpoint", d]) == 0
    capsys.readouterr()
    assert main([*TINY, "--epochs", "2", "--checkpoint", d, "--resume",
                 "--fwd-iterations", "3"]) == 2
    assert "fwd_iters" in capsys.readouterr().err


def _two_ranks(rank, world, args):
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):
        code = main(args)
    return code


def test_two_ranks_train_as_one_process_and_resume(tmp_path):
    """Under two Gloo ranks (as torchrun gives) each rank holds half of the layers; the
    run equals the one-process run, and it resumes from the ranks' checkpoint files."""
    from torchpint.testing import spawn_gloo

    one, two, again = (tmp_path / f"{n}.json" for n in ("one", "two", "again"))
    d = str(tmp_path / "ck")
    assert main([*TINY, "--epochs", "2", "--json", str(one)]) == 0
    args = [*TINY, "--epochs", "2", "--checkpoint", d, "--json", str(two)]
    assert spawn_gloo(_two_ranks, 2, args) == [0, 0]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "layer_parallel.pt.rank0", "layer_parallel.pt.rank1"]
    args = [*TINY, "--epochs", "2", "--checkpoint", d, "--resume", "--json", str(again)]
    assert spawn_gloo(_two_ranks, 2, args) == [0, 0]
    a, b, c = (json.loads(p.read_text()) for p in (one, two, again))
    assert b["config"]["world"] == 2 and b["config"]["layer_slabs"] == [[0, 2], [2, 4]]
    assert c["layer_parallel"]["resumed_from_epoch"] == 2
    assert c["layer_parallel"]["history"] == b["layer_parallel"]["history"]
    for ha, hb in zip(a["layer_parallel"]["history"], b["layer_parallel"]["history"],
                      strict=True):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-5)
        assert hb["test_accuracy"] == pytest.approx(ha["test_accuracy"], abs=1e-9)
    assert b["gradient_check"]["grad_rel_err"] == pytest.approx(
        a["gradient_check"]["grad_rel_err"], rel=1e-4)


def test_old_flag_spellings_still_run_with_a_warning(tmp_path, capsys):
    """--steps, --fwd-iters, --bwd-iters and --checkpoint-dir keep working (deprecated)."""
    old = [a if a != "--layers" else "--steps" for a in TINY]
    d = str(tmp_path / "ck")
    assert main([*old, "--epochs", "1", "--fwd-iters", "2", "--bwd-iters", "1",
                 "--checkpoint-dir", d]) == 0
    err = capsys.readouterr().err
    for flag, new in [("--steps", "--layers"), ("--fwd-iters", "--fwd-iterations"),
                      ("--bwd-iters", "--bwd-iterations"), ("--checkpoint-dir", "--checkpoint")]:
        assert f"{flag} is deprecated; use {new}" in err
    assert (tmp_path / "ck" / "layer_parallel.pt").exists()


def test_adaptive_raises_to_exact_and_reports_its_probes(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main([*TINY, "--batch-size", "64", "--epochs", "1", "--adaptive",
                 "--adaptive-every", "3", "--adaptive-threshold", "1e-9", "--json",
                 str(out)]) == 0
    lp = json.loads(out.read_text())["layer_parallel"]
    assert [p["step"] for p in lp["adaptive"]] == list(range(0, 22, 3))  # 22 batches
    raised = [p["raised_to"] for p in lp["adaptive"] if p["raised_to"]]
    assert raised == [{"fwd_iterations": 4, "bwd_iterations": 2, "levels": 2},
                      {"fwd_iterations": 8, "bwd_iterations": 4, "levels": 2},
                      {"fwd_iterations": 8, "bwd_iterations": 4, "levels": 1}]
    assert lp["solves_at_end"] == {"fwd_iterations": 8, "bwd_iterations": 4, "levels": 1}
    assert lp["adaptive"][-1]["grad_rel_err"] < 1e-5  # exact solves: backprop's (float32)
    assert "adaptive: 8 probes; raised batch 3 to" in capsys.readouterr().out
