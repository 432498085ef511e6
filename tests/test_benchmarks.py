"""The rules of benchmarks/: short files, shared code through public names, working ``--help``.

A benchmark is a script (it has ``if __name__ == "__main__"``); the other modules there
(``common.py`` and the like) are helpers the scripts import. No file is over 800 lines;
no module imports an underscore name from another benchmark module or from torchpint
(what is shared has a public name, e.g. in ``common.py``); every script's ``--help``
prints its usage (in this process, where torch is imported once; two scripts also as
real subprocesses, the way they are run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
FILES = sorted(BENCH.glob("*.py"))
MODULES = {p.stem for p in FILES}
MAX_LINES = 800


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_script(tree: ast.Module) -> bool:
    """Whether the module has an ``if __name__ == "__main__":`` block."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            left = node.test.left
            if isinstance(left, ast.Name) and left.id == "__name__":
                return True
    return False


SCRIPTS = [p for p in FILES if _is_script(_tree(p))]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _ours(module: str) -> bool:
    """A benchmark module or torchpint: the code whose private names are off limits."""
    root = module.split(".")[0]
    return root in MODULES or root == "torchpint"


def private_imports(tree: ast.Module) -> list[str]:
    """``module.name`` of every underscore name the module takes from another benchmark
    module or from torchpint: ``from m import _x``, ``import m._x`` and ``m._x`` (also on
    an alias ``import m as a``)."""
    aliases: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and _ours(node.module):
            found += [f"{node.module}.{a.name}" for a in node.names if _private(a.name)]
            found += [node.module] if any(map(_private, node.module.split("."))) else []
        elif isinstance(node, ast.Import):
            for a in node.names:
                if _ours(a.name):
                    aliases[a.asname or a.name.split(".")[0]] = a.name
                    found += [a.name] if any(map(_private, a.name.split("."))) else []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append(f"{ast.unparse(node.value)}.{node.attr}")
    return found


def test_the_scripts_are_found():
    assert {"bench_parareal", "bench_parareal_vs", "mgrit_training_tables"} <= {
        p.stem for p in SCRIPTS
    }
    assert "common" not in {p.stem for p in SCRIPTS}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_file_over_800_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.name} has {n} lines (at most {MAX_LINES}): split it"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_private_names_of_other_modules(path):
    bad = private_imports(_tree(path))
    assert not bad, (
        f"{path.name} uses private names {bad}: give them a public name where they belong "
        "(benchmarks/common.py for what benchmarks share)"
    )


def test_the_check_can_fail():
    tree = ast.parse(
        "from bench_parareal import CONFIGS, _batch\n"
        "import torchpint.parareal.costs as c\n"
        "c._n_params(None)\n"
        "from torchpint.cli._common import x\n"
        "from json import _default_decoder\n"
    )
    assert private_imports(tree) == [
        "bench_parareal._batch",
        "torchpint.cli._common",
        "c._n_params",
    ]


def test_helpers_are_used():
    """Every helper module (not a script) is imported by some benchmark."""
    imported = set()
    for path in FILES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
    unused = sorted(p.stem for p in FILES if p not in SCRIPTS and p.stem not in imported)
    assert not unused, f"helper modules no benchmark imports: {unused}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_help(path, monkeypatch, capsys):
    """``main`` of the script with ``--help`` prints its usage and exits 0 (imported here,
    under a name of its own, with benchmarks/ on sys.path as when it is run)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    try:
        spec.loader.exec_module(mod)
        with pytest.raises(SystemExit) as exit_:
            mod.main()
    finally:  # the benchmarks' own modules (common, ...) leave with the test
        for name in set(sys.modules) - before:
            if name in MODULES:
                del sys.modules[name]
    assert exit_.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


def test_help_as_scripts():
    """Two scripts run as the README runs them (a fresh interpreter, in parallel)."""
    names = ("bench_parareal_vs.py", "mgrit_training_tables.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(BENCH / n), "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    ]
    for n, p in zip(names, procs, strict=True):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"{n} --help failed:\n{err}"
        assert out.startswith("usage:"), out[:200]


def test_scaling_lab_quick(tmp_path):
    """The scaling lab's tiny case end to end (``--quick``: 1 and 2 real Gloo processes,
    N = 16, 1 ms sleeps): every case at both counts, the model and the critical path
    beside each point, the model's step counts equal to the real solvers', JSON and plot."""
    import json
    import os

    out, png = tmp_path / "lab.json", tmp_path / "lab.png"
    src = str(BENCH.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "scaling_lab.py"), "--quick", "--json", str(out),
         "--plot", str(png)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SIMULATED" in proc.stdout
    data = json.loads(out.read_text())
    assert data["what"].startswith("SIMULATED") and png.stat().st_size > 0
    got = {(r["case"], r["procs"]) for r in data["points"]}
    assert got == {(c, p) for c in ("layer-parallel", "adder", "heat") for p in (1, 2)}
    for r in data["points"]:
        assert r["counts_match_model"], r
        assert 0 < r["critical_path_s"] <= r["model_s"] and r["measured_s"] > 0
    assert data["layer_parallel_structure"]["matched"]
    assert data["parameters"]["latency_s"] > 0 and data["chooser"]["pick"]


def test_bench_layer_parallel_quick_with_the_chooser(tmp_path):
    """``bench_layer_parallel.py --quick --choose``: the chooser's pick for each pair of
    starts is timed beside the rest, and its first-batch gradient error, measured again
    on the timed net, is no larger than the issue settings' (the bound it was chosen by);
    every candidate refused before it had a larger one."""
    import json
    import os

    out = tmp_path / "lp.json"
    src = str(BENCH.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_layer_parallel.py"), "--quick", "--choose",
         "--json", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert len(row["chosen"]) == 2
    for setting, c in row["chosen"].items():
        timed = row["settings"][setting]
        assert timed["gradient_check"]["grad_rel_err"] <= c["bound"] * (1 + 1e-4)
        *refused, picked = c["tried"]
        assert picked["accepted"] and picked["hierarchy"] == c["hierarchy"]
        assert all(not t["accepted"] and t["grad_rel_err"] > c["bound"] for t in refused)


def test_fashion_mnist_cells_quick(tmp_path):
    """The Fashion-MNIST study's tiny case end to end (``--quick``: 1 epoch on 384 images,
    seed 0): one JSON per cell in ``--out``, a rerun skips them all, ``--summary`` prints
    the table. Skipped without the installed set."""
    import json
    import os

    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    src = str(BENCH.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    script, out = str(BENCH / "fashion_mnist_cells.py"), tmp_path / "cells"

    def run(*opts: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, script, *opts], capture_output=True, text=True,
                              timeout=600, env=env)

    proc = run("--quick", "--out", str(out), "--cells", "parareal-resnet20", "layer-parallel")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = sorted(p.stem for p in out.glob("*.json"))
    assert cells == ["layer-parallel-conv_resnet-N32C8-e1-s0-quick",
                     "parareal-resnet20-N2-e1-s0-quick", "parareal-resnet20-original-e1-s0-quick"]
    rec = json.loads((out / "parareal-resnet20-N2-e1-s0-quick.json").read_text())
    assert rec["quick"] and 0 <= rec["parareal"]["test_accuracy"] <= 100
    again = run("--quick", "--out", str(out), "--cells", "parareal-resnet20", "layer-parallel")
    assert again.returncode == 0 and "3 done already, 0 to run" in again.stdout
    summary = run("--summary", "--out", str(out), "--json", str(tmp_path / "s.json"))
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert "far more epochs" in summary.stdout and "(quick)" in summary.stdout
    assert {r["study"] for r in json.loads((tmp_path / "s.json").read_text())["accuracy"]} == {
        "parareal", "layer-parallel"}


def test_gpt_cells_quick_late_training(tmp_path):
    """The GPT study's late-training pair, tiny (``--quick``: 2 epochs of a 6,000-character
    text): the adaptive cell runs with the serial baseline and the fixed one without it,
    and ``--summary`` lines up the three runs' losses per epoch and draws them."""
    import json
    import os

    src = str(BENCH.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    script, out = str(BENCH / "gpt_cells.py"), tmp_path / "cells"
    proc = subprocess.run([sys.executable, script, "--quick", "--out", str(out), "--cells",
                           "late"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    adaptive = json.loads((out / "gpt-late-adaptive-N8-e2-s0-quick.json").read_text())
    fixed = json.loads((out / "gpt-late-fixed-N8-e2-s0-quick.json").read_text())
    assert "--adaptive" in adaptive["command"] and "--serial-baseline" in adaptive["command"]
    assert "--adaptive" not in fixed["command"] and fixed["serial"] is None
    png, summary = tmp_path / "late.png", tmp_path / "s.json"
    proc = subprocess.run([sys.executable, script, "--summary", "--out", str(out), "--json",
                           str(summary), "--plot", str(png)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (late,) = json.loads(summary.read_text())["late"]
    assert set(late["curves"]) == {"adaptive", "fixed", "serial"}
    assert all(len(c) == 2 for c in late["curves"].values())
    # probes that never raise leave the adaptive run equal to the fixed one
    if not late["raised"]:
        assert late["curves"]["adaptive"] == late["curves"]["fixed"]
    assert png.stat().st_size > 0 and "epoch  2:" in proc.stdout
