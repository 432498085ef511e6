"""``torchpint train-layer-parallel --model gpt`` end to end on a tiny configuration."""

from __future__ import annotations

import json

import pytest

from torchpint.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["train-layer-parallel", "--model", "gpt", "--layers", "4", "--levels", "2",
        "--cfactor", "2", "--corpus-chars", "6000", "--seq-len", "16", "--width", "16",
        "--heads", "2", "--batch-size", "16", "--epochs", "1", "--no-progress"]  # fmt: skip


def test_stdlib_corpus_json_with_both_test_losses(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main([*TINY, "--serial-baseline", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    corpus = r["corpus"]
    assert corpus["source"] == "stdlib" and corpus["chars"] == 6000
    assert len(corpus["sha256"]) == 64 and corpus["sha256"] in capsys.readouterr().out
    for label in ("layer_parallel", "serial"):
        assert 0 < r[label]["test_loss"] < 10 and r[label]["step_time_s"] > 0
        assert r[label]["test_loss"] == r[label]["history"][-1]["test_loss"]
    assert r["config"]["model"] == "gpt" and r["config"]["layer_slabs"] == [[0, 4]]
    assert r["gradient_check"]["output_rel_err"] < 1e-5  # 2 levels of 4: two iterations exact


def test_a_corpus_file_with_dropout_and_the_file_errors(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    out = tmp_path / "r.json"
    assert main([*TINY, "--corpus", str(text), "--dropout", "0.1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["corpus"]["source"] == str(text) and r["serial"] is None
    assert r["gradient_check"]["output_rel_err"] < 1e-5  # checked with dropout off
    capsys.readouterr()
    missing = tmp_path / "missing.txt"
    assert main([*TINY, "--corpus", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err
    (tmp_path / "empty.txt").write_text("")
    assert main([*TINY, "--corpus", str(tmp_path / "empty.txt")]) == 2
    assert "empty.txt: empty" in capsys.readouterr().err


def test_options_of_the_other_model_are_refused(capsys):
    assert main([*TINY, "--dataset", "shapes"]) == 2
    assert "--dataset applies to --model conv_resnet" in capsys.readouterr().err
    assert main(["train-layer-parallel", "--seq-len", "8"]) == 2
    assert "--seq-len applies to --model gpt" in capsys.readouterr().err
    assert main([*TINY, "--heads", "3"]) == 2
    assert "multiple of --heads" in capsys.readouterr().err


def _two_ranks(rank, world, args):
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):
        return main(args)


@pytest.mark.parametrize("grid, slabs", [([], [[0, 2], [2, 4]]),
                                         (["--data-parallel", "2"], [[0, 4]])])
def test_two_ranks_train_as_one_process(grid, slabs, tmp_path):
    """Two Gloo ranks (as torchrun gives) train as one process: each holding two blocks,
    or as two data-parallel replicas of all four, each on half of every batch."""
    from torchpint.testing import spawn_gloo

    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main([*TINY, "--json", str(one)]) == 0
    assert spawn_gloo(_two_ranks, 2, [*TINY, *grid, "--json", str(two)]) == [0, 0]
    a, b = (json.loads(p.read_text()) for p in (one, two))
    assert b["config"]["world"] == 2 and b["config"]["layer_slabs"] == slabs
    ha, hb = a["layer_parallel"]["history"][-1], b["layer_parallel"]["history"][-1]
    assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-5)
    assert hb["test_loss"] == pytest.approx(ha["test_loss"], rel=1e-5)
