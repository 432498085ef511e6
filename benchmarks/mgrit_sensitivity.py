"""Why MGRIT training stalls for some seeds and rates: how much serial training amplifies errors.

MGRIT's error at step k is carried to later steps by the tangent dynamics of training,
the product J_k ... J_1 of the step Jacobians (J_i = I - lr H(w_i) for gradient descent).
When that product keeps growing, an error the coarse grid leaves behind is amplified
along the serial path, and the iteration can only converge as fast as information
travels step by step. This script measures, along ordinary serial training at the fine
rate, the growth G(k) = ||J_k ... J_1 d|| of a random unit vector d (finite differences,
renormalized every step, so it never saturates), and prints log10 G at the table's N
beside the MGRIT iteration counts of ``mgrit_training_tables.py`` (two-level / V / F).

    python benchmarks/mgrit_sensitivity.py --problem adder --lr 0.1 0.025 --seeds 0 1 2 \
        --json benchmarks/results/mgrit_sensitivity_adder.json --plot growth.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from common import (  # this directory is on sys.path
    ADDER_STEPS,
    RESULTS,
    XOR_STEPS,
    cell_text,
    table_cell,
    write_json,
)
from torchpint.training import TrainingProblem, make_task
from torchpint.training.rules import DATA_RULES
from torchpint.training.tasks import ADDER_VARIANTS, adder_options

_COLUMNS = {"xor": XOR_STEPS, "adder": ADDER_STEPS}
_SOLVERS = ("two-level", "V", "F")


def perturbation_growth(problem: TrainingProblem, steps: int, eps: float = 1e-6,
                        seed: int = 0) -> list[float]:
    """log10 G(k) for k = 1..steps, G(k) = ||J_k ... J_1 d|| along serial training (level 0).

    Each step also takes the state plus ``eps`` times the current unit direction, so one
    call costs two steps per step; the direction is renormalized to unit length every step.
    """
    u = problem.initial_state()
    d = torch.randn(u.shape, dtype=u.dtype, generator=torch.Generator().manual_seed(seed))
    d /= d.norm()
    log_g, out = 0.0, []
    for i in range(steps):
        nxt = problem.step(u, i, 0)
        g = (problem.step(u + eps * d, i, 0) - nxt) / eps
        n = float(g.norm())
        if not math.isfinite(n) or n == 0.0:
            raise FloatingPointError(f"tangent norm {n} at step {i}; try another --eps")
        log_g += math.log10(n)
        out.append(log_g)
        u, d = nxt, g / n
    return out


def _counts(table: dict[str, Any] | None, problem: str, lr: float, seed: int, n: int) -> str:
    """'two-level/V/F' MGRIT iterations of one seed's cell in the table JSON, as the table
    writes them ('-' = not run)."""
    if table is None:
        return ""
    return "/".join(
        cell_text([r for r in table_cell(table["records"], problem, f"{solver} a={lr}", n)
                   if r["seed"] == seed], table["meta"]["max_iter"])
        for solver in _SOLVERS)


def _print_row(problem: str, seed: int, lr: float, at_columns: list[float],
               table: dict[str, Any] | None, cols: list[int]) -> None:
    """One seed and rate: log10 G at the table's N, and the MGRIT counts under it."""
    print(f"{seed:4d} {lr:6g} " + " ".join(f"{g:10.1f}" for g in at_columns))
    counts = [_counts(table, problem, lr, seed, n) for n in cols]
    if any(c.strip("-/") for c in counts):
        print(f"{'':11s} " + " ".join(f"{c:>10s}" for c in counts), flush=True)


def _plot(path: str, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for row in rows:  # one line style per rate, one colour per seed
        g = row["log10_growth"]
        ax.plot(range(1, len(g) + 1), g, label=f"seed {row['seed']}, lr {row['lr']:g}",
                lw=1.4, ls="-" if row["lr"] == rows[0]["lr"] else "--",
                color=f"C{row['seed'] % 10}")
    ax.set_xscale("log")
    ax.set_xlabel("training step k")
    ax.set_ylabel("log10 ||J_k ... J_1 d||")
    ax.set_title("How much serial training amplifies a perturbation of the weights")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", choices=sorted(_COLUMNS), default="adder")
    ap.add_argument("--adder-variant", choices=ADDER_VARIANTS, default="trask",
                    help="the adder's weights and data (the stored results used uniform)")
    ap.add_argument("--steps", type=int, default=None, help="default: the table's largest N")
    ap.add_argument("--columns", type=int, nargs="+", default=None,
                    help="N at which to print G (default: the table's)")
    ap.add_argument("--data", choices=DATA_RULES, default=None,
                    help="data rule (default: the task's; the adder's full batch is Tables 8-11)")
    ap.add_argument("--batch-size", type=int, default=None, help="for --data minibatch")
    ap.add_argument("--pairs", type=int, default=None, help="the adder's pairs (default 500)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", type=float, nargs="+", default=None,
                    help="fine rates (default: the task's)")
    ap.add_argument("--eps", type=float, default=1e-6, help="finite-difference step")
    ap.add_argument("--table", default=None, help="iteration-count JSON of "
                    "mgrit_training_tables.py (default: benchmarks/results/"
                    "mgrit_training_tables_PROBLEM.json if present)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--report", action="store_true",
                    help="only reprint the run saved in --json, with the table's current counts")
    args = ap.parse_args()
    if args.report and not args.json:
        ap.error("--report needs --json, the file of an earlier run")
    torch.set_num_threads(1)

    cols = [n for n in args.columns or _COLUMNS[args.problem]
            if args.steps is None or n <= args.steps]
    steps = args.steps or cols[-1]
    table_path = Path(args.table or RESULTS / f"mgrit_training_tables_{args.problem}.json")
    # the stored adder table is the uniform variant's, the only one named by rate alone
    stored = args.problem != "adder" or args.adder_variant == "uniform"
    table = (json.loads(table_path.read_text())
             if table_path.exists() and (stored or args.table) else None)
    print(f"{args.problem}: log10 G(N), the growth of a unit perturbation along serial "
          f"training" + (f"; below it MGRIT iterations two-level/V/F ({table_path})"
                         if table else ""))
    print(f"{'seed':>4s} {'lr':>6s} " + " ".join(f"{n:>10d}" for n in cols))
    if args.report:  # reprint a saved run with the table's current counts
        for r in json.loads(Path(args.json).read_text())["rows"]:
            _print_row(args.problem, r["seed"], r["lr"], r["at_columns"], table, cols)
        return 0
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for lr in args.lr or [None]:
        for seed in args.seeds:
            task = make_task(args.problem, seed, **adder_options(args.problem, args.adder_variant,
                                                                args.pairs))
            rate = lr if lr is not None else task.defaults["lr"]
            p = TrainingProblem(task.model, task.loss_fn, task.data, steps, lr=rate,
                                lr_rule="naive",
                                data_rule=args.data or task.defaults["data_rule"],
                                batch_size=args.batch_size)
            g = perturbation_growth(p, steps, args.eps)
            rows.append(dict(seed=seed, lr=rate, log10_growth=g))
            _print_row(args.problem, seed, rate, [g[n - 1] for n in cols], table, cols)
    print(f"wall {time.perf_counter() - t0:.0f}s")
    write_json(args.json,
               {"args": vars(args), "columns": cols,
                "rows": [dict(r, at_columns=[round(r["log10_growth"][n - 1], 3) for n in cols],
                              log10_growth=[round(v, 3) for v in
                                            r["log10_growth"][::max(1, steps // 2000)]])
                         for r in rows]}, indent=1)
    if args.plot:
        _plot(args.plot, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
