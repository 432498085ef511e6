import json

from torchpint.cli import main


def test_demo_runs_all_three_parts(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    heat = summary["mgrit_heat1d"]
    assert all(v["max_diff_vs_serial"] < 1e-9 for v in heat.values())
    train = summary["train_mgrit_xor"]
    assert train["converged"] and train["max_weight_diff_vs_serial"] < 1e-6
    assert train["accuracy"] == 1.0  # the demo's network visibly learns XOR
    para = summary["train_parareal_digits"]
    assert para["parareal"]["test_accuracy"] > 20 and para["baseline"] is not None
    for png in ("mgrit_heat1d.png", "train-mgrit.png", "train-parareal.png"):
        assert (tmp_path / png).stat().st_size > 1000
