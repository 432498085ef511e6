"""``torchpint demo``: the main job on embedded data, a minute or two on 2 CPU cores.

1. MGRIT on the 1-D heat equation, checked against serial time stepping.
2. Training by MGRIT over optimizer steps: XOR learned, with the weights of serial training.
3. A parareal neural network on scikit-learn's digits, beside the original network.
4. Layer-parallel training (MGRIT across a residual network's layers, forward and
   adjoint) on digits, beside ordinary training of the same network.

Everything is written under ``--out`` (plots and a JSON summary).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from torchpint.cli._common import check_outputs, write_json
from torchpint.cli._plots import plot_residuals
from torchpint.core import MGRIT, serial_solve
from torchpint.problems import Heat1D


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``torchpint demo``."""
    p.add_argument("--out", default="out/demo",
                   help="folder for plots and summary.json (default out/demo)")
    p.add_argument("--quick", action="store_true", help="smaller settings (for tests)")


def _mgrit_heat(out: Path, quick: bool) -> dict[str, Any]:
    print("== 1. MGRIT on the heat equation u_t = u_xx (backward Euler) ==")
    problem = Heat1D(nt=256 if quick else 2048, nx=65)
    t = time.perf_counter()
    reference = serial_solve(problem)
    serial_s = time.perf_counter() - t
    histories, summary = {}, {}
    for cycle, relax in (("V", "F"), ("V", "FCF"), ("F", "FCF")):
        res = MGRIT(problem, cycle=cycle, relax=relax, tol=1e-10).solve()
        diff = float((res.u - reference).abs().max())
        label = f"{cycle}-cycle {relax}"
        histories[label] = res.residuals
        summary[label] = {"iterations": res.iterations, "max_diff_vs_serial": diff,
                          "residuals": res.residuals}
        print(f"  {label:<12} {res.iterations:2d} iterations, {res.grid.num_levels} levels, "
              f"residual {res.residuals[-1]:.1e}, max |u - serial| = {diff:.1e}")
    plot_residuals(histories, str(out / "mgrit_heat1d.png"), f"heat1d, {problem.nt} steps")
    print(f"  serial time stepping {serial_s:.3f} s (one process: MGRIT does more work; its "
          "speedup needs many processes)")
    return summary


def _subcommand(name: str, argv: list[str], out: Path) -> dict[str, Any]:
    """Run another torchpint command (the demo shows exactly what users run)."""
    from torchpint.cli import main

    print(f"  $ torchpint {name} {' '.join(argv)}", flush=True)
    rc = main([name, *argv, "--json", str(out / f"{name}.json"),
               "--plot", str(out / f"{name}.png")])
    if rc != 0:
        raise _PartFailed(rc)
    with open(out / f"{name}.json") as f:
        return json.load(f)


class _PartFailed(Exception):
    """A part of the demo failed; it printed its own line, the demo exits with its code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def run(args: argparse.Namespace) -> int:
    """The four parts in order; every output under ``--out``; a failed part's exit code."""
    try:
        return _run_parts(args)
    except _PartFailed as failed:
        return failed.code


def _run_parts(args: argparse.Namespace) -> int:
    check_outputs(args)
    out = Path(args.out)
    torch.manual_seed(0)
    summary = {"mgrit_heat1d": _mgrit_heat(out, args.quick)}
    print("\n== 2. Training by MGRIT over optimizer steps: XOR learned (100% of the four "
          "cases), the same weights as serial training ==")
    steps = "800" if args.quick else "3200"  # full batch, lr 1, coarse rate 2: two-level
    summary["train_mgrit_xor"] = _subcommand(
        "train-mgrit", ["--problem", "xor", "--steps", steps, "--solver", "two-level",
                        "--lr", "1.0", "--lr-max", "2", "--data", "full", "--no-progress"], out)
    print("\n== 3. A parareal neural network (2 chunks) on scikit-learn's digits ==")
    epochs = ["--epochs", "1"] if args.quick else []
    summary["train_parareal_digits"] = _subcommand(
        "train-parareal", ["--chunks", "2", "--baseline", "--no-progress", *epochs], out)
    print("\n== 4. Layer-parallel training (MGRIT across 16 residual layers) on digits ==")
    lp = summary["train_layer_parallel_digits"] = _subcommand(
        "train-layer-parallel", ["--layers", "16", "--channels", "4", "--serial-baseline",
                                 "--epochs", "1" if args.quick else "2", "--no-progress"], out)
    mine, theirs = lp["layer_parallel"]["step_time_s"], lp["serial"]["step_time_s"]
    print(f"  one process: a layer-parallel step takes {1e3 * mine:.1f} ms, an ordinary one "
          f"{1e3 * theirs:.1f} ms ({mine / theirs:.1f}x). The solves do more work than "
          "backprop; the time comes back on many processes (docs/layer-parallel.md).")
    write_json(out / "summary.json", summary)
    print(f"plots and summary.json written to {out}/")
    return 0
