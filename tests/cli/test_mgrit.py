import json

import pytest

from torchpint.cli import main


def test_mgrit_cli_prints_iterations_and_writes_json_and_plot(tmp_path, capsys):
    js, png = tmp_path / "h.json", tmp_path / "h.png"
    rc = main(["mgrit", "--problem", "heat1d", "--nt", "129", "--nx", "17", "--cycle", "F",
               "--check", "--json", str(js), "--plot", str(png)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "iter   1 | residual" in out and "converged after" in out
    data = json.loads(js.read_text())
    assert data["iterations"] == len(data["residuals"]) and data["residuals"][-1] <= 1e-10
    assert data["max_diff_vs_serial"] < 1e-9
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("argv", [
    ["mgrit", "--problem", "dahlquist", "--nt", "101", "--parareal", "10", "--tol", "1e-12"],
    ["mgrit", "--problem", "allen-cahn", "--nt", "65", "--nx", "17", "--levels", "3",
     "--relax", "F", "--nested"],
])
def test_mgrit_cli_variants_converge(argv, capsys):
    assert main(argv) == 0
    assert "converged" in capsys.readouterr().out


def test_mgrit_cli_bad_input_is_a_clear_error(capsys):
    assert main(["mgrit", "--cfactor", "1"]) == 2
    assert "cfactor must be an integer >= 2" in capsys.readouterr().err
    assert main(["mgrit", "--nt", "9", "--levels", "6"]) == 2
    assert "cannot make 6 levels" in capsys.readouterr().err


def test_steps_count_time_steps_and_the_old_nt_still_works(tmp_path, capsys):
    """``--steps N`` is N time steps (N + 1 points); the deprecated ``--nt`` counted points."""
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    assert main(["mgrit", "--problem", "dahlquist", "--steps", "64", "--json", str(new)]) == 0
    assert main(["mgrit", "--problem", "dahlquist", "--nt", "65", "--json", str(old)]) == 0
    err = capsys.readouterr().err
    assert "--nt is deprecated; use --steps" in err
    a, b = json.loads(new.read_text()), json.loads(old.read_text())
    assert a["steps"] == b["steps"] == 64 and a["residuals"] == b["residuals"]
