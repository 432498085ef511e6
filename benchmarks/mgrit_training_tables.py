"""Reproduce the MGRIT iteration-count tables of Schroder (2017), training as time stepping.

XOR (3-4-1 sigmoid, 16 weights) for N = 100 .. 25600 and every solver variant listed in
``design/ALGORITHMS.md`` section 2; the 12-bit adder (24-128-64-12, 12,032 weights) for
N = 40 .. 12800 with lr 0.1 and 0.025. Settings: m = 2, FCF, coarsen to <= 10 points,
stop at ||r||_2 <= 1e-9 sqrt(N), at most 50 iterations. Each cell is run for several
seeds of the initial weights and reported as ``median [min-max]``; ``50+`` means not
converged within the budget, ``div`` a DivergenceError. The published counts are printed
beside ours as labelled reference numbers. Results are written to JSON after every run,
so an interrupted run keeps what it finished (``--resume`` skips finished cells); with
``--checkpoint-dir`` each solve also saves its MGRIT state after every iteration and a
later run with the same directory continues an unfinished cell where it stopped.

    python benchmarks/mgrit_training_tables.py --problem xor --max-steps 3200 --seeds 0 1 2
    python benchmarks/mgrit_training_tables.py --problem adder --max-steps 400 --seeds 0 1
    python benchmarks/mgrit_training_tables.py --problem adder --report --plot adder.png
    python benchmarks/mgrit_training_tables.py --problem adder-paper --jobs 2 \
        --json benchmarks/results/mgrit_training_tables_adder_paper.json --resume
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import re
import sys
import time
from pathlib import Path
from typing import Any

from common import (  # this directory is on sys.path
    ADDER_STEPS,
    PAPER_ADDER,
    PAPER_FULL,
    PAPER_LONG,
    XOR_STEPS,
    cell_text,
    table_cell,
    write_json,
)

# name -> settings and the published counts (Schroder 2017, via ALGORITHMS.md); None = 50+.
XOR_VARIANTS: dict[str, dict[str, Any]] = {
    "naive two-level a=1.0": dict(
        solver="two-level", lr=1.0, lr_rule="naive", lr_max=math.inf, data="full",
        paper=[14, 19, 24, 31, 40, 49, None, None, None]),
    "Solver1 two-level a=1.0": dict(
        solver="two-level", lr=1.0, lr_rule="geometric", lr_max=8.0, data="full",
        paper=[6, 6, 6, 6, 6, 6, 6, 6, 5]),
    "Solver1 F a=1.0 amax=8": dict(
        solver="F", lr=1.0, lr_rule="geometric", lr_max=8.0, data="full",
        paper=[6, 6, 7, 7, 7, 8, 11, 16, 21]),
    "Solver1 F a=0.5 amax=8": dict(
        solver="F", lr=0.5, lr_rule="geometric", lr_max=8.0, data="full",
        paper=[5, 5, 5, 6, 6, 5, 6, 9, 12]),
    "Solver2 two-level a=1.0 amax=8": dict(
        solver="two-level", lr=1.0, lr_rule="geometric", lr_max=8.0, data="serial",
        paper=[10, 12, 15, 18, 20, 20, 20, 20, 19]),
    "Solver2 F a=1.0 amax=8": dict(
        solver="F", lr=1.0, lr_rule="geometric", lr_max=8.0, data="serial",
        paper=[10, 12, 15, 21, 26, 27, 29, 41, 50]),
    "Solver2 F a=0.1 amax=30": dict(
        solver="F", lr=0.1, lr_rule="geometric", lr_max=30.0, data="serial",
        paper=[5, 5, 5, 6, 7, 8, 10, 13, 14]),
    # Not in the paper: our Solver 1 F-cycles stall with a coarse rate of 8 (see docs).
    "(extra) Solver1 F a=1.0 amax=4": dict(
        solver="F", lr=1.0, lr_rule="geometric", lr_max=4.0, data="full", paper=None),
    # The other reading of Solver 2: coarse step k of level l takes the example of its
    # first fine step, (k * 2**l) mod 4, instead of k mod 4 (what the library does).
    "(extra) Solver2 two-level a=1.0 amax=8 fine-index data": dict(
        solver="two-level", lr=1.0, lr_rule="geometric", lr_max=8.0, data="serial",
        keying="fine", paper=None),
    # The paper's "slow" growth: level l takes rate min(1.25**l, 8).
    "(extra) Solver1 F a=1.0 g=1.25 amax=8": dict(
        solver="F", lr=1.0, lr_rule="geometric", lr_growth=1.25, lr_max=8.0, data="full",
        paper=None),
}

# The first reading of the adder (uniform weights, wrapping sums: ``variant="uniform"``);
# its table is in the appendix of docs/training-mgrit.md.
ADDER_VARIANTS: dict[str, dict[str, Any]] = {
    f"{solver} a={lr}": dict(solver=solver, lr=lr, lr_rule="geometric", lr_max=0.2,
                             data="full", adder="uniform", paper=None)
    for lr in (0.1, 0.025)
    for solver in ("two-level", "V", "F")
}

# the paper's adder Tables 8-16 (PAPER_ADDER) are in common.py: mgrit_potential_speedup.py
# reads them too
PROBLEMS = {"xor": (XOR_VARIANTS, XOR_STEPS), "adder": (ADDER_VARIANTS, ADDER_STEPS),
            "adder-paper": (PAPER_ADDER, sorted({*PAPER_FULL, *PAPER_LONG}))}


def _ckpt_name(problem: str, variant: str, n: int, seed: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", variant).strip("_")
    return f"{problem}_{slug}_N{n}_seed{seed}.pt"


def run_cell(job: tuple[str, str, dict[str, Any], int, int, int, str | None]) -> dict[str, Any]:
    """One MGRIT solve: (problem, variant, settings, N, seed, max_iter, ckpt dir) -> record.

    With a checkpoint directory the solve resumes from its checkpoint there, saves after
    every iteration and deletes the file when the cell is finished. ``seconds`` counts
    the iterations of earlier, interrupted runs too (``resumed_seconds``), and so does the
    table's ``wall_seconds``.
    """
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # tiny steps: threads only contend (torch and NumPy's BLAS)
    threadpool_limits(1)
    from torchpint.core import MGRIT, DivergenceError
    from torchpint.training import TrainingProblem, make_task
    from torchpint.training.config import default_tol, solver_options
    from torchpint.training.tasks import adder_options

    problem_name, variant, cfg, n, seed, max_iter, ckpt_dir = job
    name = problem_name.split("-")[0]  # adder-paper is the adder
    task = make_task(name, seed, **adder_options(name, cfg.get("adder"), cfg.get("pairs")))
    p = TrainingProblem(task.model, task.loss_fn, task.data, n, lr=cfg["lr"],
                        lr_rule=cfg["lr_rule"], lr_growth=cfg.get("lr_growth", 2.0),
                        lr_max=cfg["lr_max"], data_rule=cfg["data"],
                        batch_size=cfg.get("batch_size"))
    if cfg.get("keying") == "fine":  # data of a coarse step keyed by its fine index
        batch = p.batch
        p.batch = lambda i, level=0: batch(p.fine_index(i, level), 0)  # type: ignore[method-assign]
    t = time.perf_counter()
    rec: dict[str, Any] = dict(problem=problem_name, variant=variant, steps=n, seed=seed)
    ckpt = Path(ckpt_dir, _ckpt_name(problem_name, variant, n, seed)) if ckpt_dir else None
    earlier = 0.0  # seconds of the iterations done by interrupted runs
    try:
        mg = MGRIT(p, relax="FCF", tol=default_tol(n), max_iter=max_iter,
                   **solver_options(cfg["solver"]))
        if ckpt is not None and ckpt.exists():
            state = torch.load(ckpt, weights_only=False)
            earlier = sum(state["iter_times"])
            rec.update(resumed_at_iteration=state["iteration"], resumed_seconds=earlier)
        res = mg.solve(checkpoint=ckpt, resume=True)
        rec.update(iterations=res.iterations, converged=res.converged,
                   residuals=res.residuals, levels=mg.grid.num_levels)
    except DivergenceError as err:
        rec.update(iterations=None, converged=False, diverged=True, error=str(err)[:300])
    rec["seconds"] = earlier + time.perf_counter() - t
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    return rec


def format_table(records: list[dict[str, Any]], problem: str, variants: dict[str, Any],
                 steps: list[int], max_iter: int) -> str:
    """Rows: each variant (ours: median [min-max] over seeds) and its published counts."""
    width = max(len(v) for v in variants) + 9
    head = "variant".ljust(width) + "".join(f"{n:>14}" for n in steps)
    lines = [f"{problem}: MGRIT iterations to ||r|| <= 1e-9 sqrt(N) (max {max_iter})", head,
             "-" * len(head)]
    for name, cfg in variants.items():
        cells = [cell_text(table_cell(records, problem, name, n), max_iter)
                 if n in cfg.get("steps", steps) else "-" for n in steps]
        lines.append(f"{name} (ours)".ljust(width) + "".join(f"{c:>14}" for c in cells))
        if cfg.get("paper"):
            full = cfg.get("steps") or (XOR_STEPS if problem == "xor" else ADDER_STEPS)
            pub = {n: v for n, v in zip(full, cfg["paper"], strict=True)}
            cells = [("50+" if pub[n] is None else str(pub[n])) if n in pub else "-"
                     for n in steps]
            lines.append(f"{name} (paper)".ljust(width) + "".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def plot_histories(records: list[dict[str, Any]], problem: str, variants: dict[str, Any],
                   steps: list[int], seed: int, path: str) -> None:
    """One panel per variant: the residual history of every N for ``seed``, log scale,
    with each N's tolerance 1e-9 sqrt(N) dashed in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3 if len(variants) > 4 else len(variants)
    rows = -(-len(variants) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False,
                             sharex=True, sharey=True)
    colours = plt.cm.viridis([k / max(1, len(steps) - 1) for k in range(len(steps))])
    for ax, name in zip(axes.flat, variants, strict=False):
        for n, colour in zip(steps, colours, strict=True):
            rec = next((r for r in table_cell(records, problem, name, n)
                        if r["seed"] == seed and r.get("residuals")), None)
            if rec is None:
                continue
            res = rec["residuals"]
            ax.semilogy(range(1, len(res) + 1), [max(r, 1e-300) for r in res], "-",
                        color=colour, lw=1.2, label=f"N={n}")
            ax.axhline(1e-9 * math.sqrt(n), color=colour, ls=":", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.flat[len(variants):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("MGRIT iteration")
    for ax in axes[:, 0]:
        ax.set_ylabel("residual 2-norm")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(f"{problem}: residual histories, seed {seed} (dotted: tolerance of each N)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", choices=[*PROBLEMS, "all"], default="xor",
                    help="xor; adder (the first, uniform reading); adder-paper (Tables 8-16 "
                    "on Trask's adder)")
    ap.add_argument("--variants", nargs="*", help="substrings of variant names to run")
    ap.add_argument("--steps", type=int, nargs="*", help="N values (default: the paper's)")
    ap.add_argument("--max-steps", type=int, default=None, help="skip N above this")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--json", default="benchmarks/results/mgrit_training_tables.json")
    ap.add_argument("--resume", action="store_true", help="keep finished cells of --json")
    ap.add_argument("--checkpoint-dir", default=None,
                    help="save each solve's MGRIT state here after every iteration and "
                         "continue unfinished solves from it")
    ap.add_argument("--plot", metavar="PATH",
                    help="write the residual histories of --plot-seed as a PNG (per problem: "
                         "PATH with the problem's name inserted when --problem all)")
    ap.add_argument("--plot-seed", type=int, default=0)
    ap.add_argument("--report", action="store_true",
                    help="only print the tables of the cells already in --json")
    args = ap.parse_args(argv)

    problems = list(PROBLEMS) if args.problem == "all" else [args.problem]
    out = Path(args.json)
    records: list[dict[str, Any]] = []
    prev_wall = 0.0  # wall seconds of earlier runs of this table
    if (args.resume or args.report) and out.exists():
        old = json.loads(out.read_text())
        records, prev_wall = old["records"], old["meta"].get("wall_seconds", 0.0)
    done = {(r["problem"], r["variant"], r["steps"], r["seed"]) for r in records}
    jobs, tables = [], []
    for prob in problems:
        variants, steps = PROBLEMS[prob]
        if args.variants:
            variants = {k: v for k, v in variants.items()
                        if any(s.lower() in k.lower() for s in args.variants)}
        steps = args.steps or steps
        if args.max_steps:
            steps = [n for n in steps if n <= args.max_steps]
        tables.append((prob, variants, steps))
        for n in steps:  # small N first: partial runs give whole columns
            for name, cfg in variants.items():
                if n not in cfg.get("steps", steps):
                    continue
                for seed in args.seeds:
                    if (prob, name, n, seed) not in done and not args.report:
                        cfg2 = {k: v for k, v in cfg.items() if k not in ("paper", "steps")}
                        jobs.append((prob, name, cfg2, n, seed, args.max_iter,
                                     args.checkpoint_dir))

    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    n_old = len(records)

    def wall() -> float:
        # a cell resumed from a checkpoint brings the time of the run that was cut off
        cut_off = sum(r.get("resumed_seconds", 0.0) for r in records[n_old:])
        return prev_wall + cut_off + (time.perf_counter() - t0 if jobs else 0.0)

    def save() -> None:
        meta = {"seeds": sorted({r["seed"] for r in records}), "max_iter": args.max_iter,
                "wall_seconds": wall(),
                "cpu_seconds": sum(r["seconds"] for r in records)}
        write_json(out, {"meta": meta, "records": records}, indent=1, quiet=True)

    if jobs:
        print(f"{len(jobs)} solves on {args.jobs} worker(s)", file=sys.stderr)
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for rec in pool.imap_unordered(run_cell, jobs):  # save each cell as it ends
                records.append(rec)
                it = "div" if rec.get("diverged") else rec["iterations"]
                print(f"  {rec['problem']} {rec['variant']:32s} N={rec['steps']:6d} "
                      f"seed={rec['seed']} it={it} ({rec['seconds']:.1f}s)", file=sys.stderr)
                save()
        save()
    for prob, variants, steps in tables:
        print(format_table(records, prob, variants, steps, args.max_iter))
        print()
        if args.plot:
            path = Path(args.plot)
            if len(tables) > 1:
                path = path.with_name(f"{path.stem}_{prob}{path.suffix}")
            plot_histories(records, prob, variants, steps, args.plot_seed, str(path))
            print(f"plot: {path}")
    run = time.perf_counter() - t0 if jobs else 0.0
    print(f"wall {run:.0f}s this run, {wall() / 3600:.1f} h with the earlier runs; "
          f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
