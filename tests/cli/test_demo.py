import json

from torchpint.cli import main


def test_demo_runs_all_four_parts(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    heat = summary["mgrit_heat1d"]
    assert all(v["max_diff_vs_serial"] < 1e-9 for v in heat.values())
    train = summary["train_mgrit_xor"]
    assert train["converged"] and train["max_weight_diff_vs_serial"] < 1e-6
    assert train["accuracy"] == 1.0  # the demo's network visibly learns XOR
    para = summary["train_parareal_digits"]
    assert para["parareal"]["test_accuracy"] > 20 and para["baseline"] is not None
    lp = summary["train_layer_parallel_digits"]
    assert lp["layer_parallel"]["test_accuracy"] > 50 and lp["serial"]["step_time_s"] > 0
    assert lp["gradient_check"]["grad_rel_err"] < 0.05
    for png in ("mgrit_heat1d.png", "train-mgrit.png", "train-parareal.png",
                "train-layer-parallel.png"):
        assert (tmp_path / png).stat().st_size > 1000
