"""``torchpint train-mgrit`` end to end: JSON output, plot, divergence exit status."""

import json

import pytest

from torchpint.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(["train-mgrit", "--problem", "xor", "--steps", "64", "--solver", "F",
               "--lr-max", "4", "--data", "serial", "--json", str(out), "--plot", str(png),
               "--no-progress"])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["converged"] and d["iterations"] == len(d["residuals"]) > 0
    assert d["residuals"][-1] <= 1e-9 * 64**0.5
    assert d["max_weight_diff_vs_serial"] < 1e-7
    assert len(d["loss_mgrit"]) == len(d["loss_serial"]) == len(d["curve_points"])
    assert d["settings"]["n_weights"] == 16 and d["settings"]["data_rule"] == "serial"
    assert png.stat().st_size > 1000


def test_cli_reports_divergence(tmp_path, capsys):
    out = tmp_path / "d.json"
    # coarse rate 5000 on digits: the coarse weights explode in the first iteration
    rc = main(["train-mgrit", "--problem", "digits", "--steps", "32", "--solver", "two-level",
               "--lr", "0.5", "--lr-growth", "1e4", "--lr-max", "1e9", "--no-verify",
               "--no-progress", "--json", str(out)])
    assert rc == 3
    err = capsys.readouterr().err
    assert "diverged" in err and "coarse-level learning rate is too large" in err
    assert json.loads(out.read_text())["diverged"]


def test_cli_not_converged_names_the_coarse_rate(capsys):
    # XOR seed 0 with coarse rates up to 8: the F-cycle stalls (see docs/training-mgrit.md)
    rc = main(["train-mgrit", "--problem", "xor", "--steps", "800", "--solver", "F",
               "--lr-max", "8", "--data", "full", "--max-iter", "3", "--no-verify",
               "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "not converged in 3 iterations" in err and "lower --lr-max" in err
    assert "amplifies errors" in err  # the second cause, error growth along training
