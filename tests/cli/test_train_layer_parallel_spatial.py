"""``torchpint train-layer-parallel --spatial-coarsening``: the flag reaches the module."""

from __future__ import annotations

import argparse
import json

import pytest

from torchpint.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["train-layer-parallel", "--image-size", "8", "--layers", "4", "--channels", "4",
        "--levels", "2", "--cfactor", "2", "--batch-size", "256", "--no-progress",
        "--epochs", "1"]  # fmt: skip


def test_spatial_coarsening_trains_and_converged_solves_are_backprop(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main([*TINY, "--spatial-coarsening", "bilinear", "--fwd-iterations", "4",
                 "--bwd-iterations", "4", "--json", str(out)]) == 0
    assert "FCF-relaxation" in capsys.readouterr().out  # spatial coarsening's default
    r = json.loads(out.read_text())
    assert r["config"]["spatial_coarsening"] == "bilinear"
    check = r["gradient_check"]
    assert check["output_rel_err"] < 1e-6 and check["grad_rel_err"] < 1e-5  # float32


def test_the_flag_alone_means_nearest_and_a_bad_value_is_refused(capsys):
    from torchpint.cli import train_layer_parallel as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert parser.parse_args(["--spatial-coarsening"]).spatial_coarsening == "nearest"
    assert parser.parse_args([]).spatial_coarsening is None
    assert main([*TINY, "--spatial-coarsening", "cubic"]) == 2
