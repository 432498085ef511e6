"""Time serial training against MGRIT training of the same N steps, and the cost model.

In one run: serial training (step after step), MGRIT on 1 process and on 2 Gloo
processes (same weights, checked), the measured cost of one optimizer step, and the
paper's cost model (critical path of one iteration when every coarse interval has its own
processor, ``torchpint.core.potential_speedup``) for P = 1, 2 and N/m processes. The
paper reports about 2.9x for XOR at 25.6K steps (F-cycles) and about 6.6x for the adder
at 12.8K steps (V-cycles).

    python benchmarks/bench_train_mgrit.py --problem xor --steps 25600 --solver F --data serial
    python benchmarks/bench_train_mgrit.py --problem adder --steps 200 --solver V
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from common import write_json  # this directory is on sys.path
from torchpint.core import iteration_cost, potential_speedup
from torchpint.testing import spawn_gloo
from torchpint.training import make_task, serial_train, train_mgrit


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    task = make_task(args.problem, args.seed)
    d = task.defaults
    return dict(solver=args.solver, lr=args.lr or d["lr"],
                lr_max=args.lr_max or d.get("lr_max", float("inf")),
                data_rule=args.data or d["data_rule"],
                batch_size=d.get("batch_size") if (args.data or d["data_rule"]) == "minibatch"
                else None,
                seed=args.seed, max_iter=args.max_iter, verify_serial=False)


def _mgrit(rank: int, world: int, problem: str, steps: int, kw: dict[str, Any]):
    threadpool_limits(1)
    task = make_task(problem, kw["seed"])
    t = time.perf_counter()
    r = train_mgrit(task.model, task.loss_fn, task.data, steps,
                    group="world" if world > 1 else None, **kw)
    wall = time.perf_counter() - t
    h = r.history
    return dict(wall=wall, weights=r.weights, iterations=r.iterations,
                converged=r.converged, step_time=h.timings["step"],
                step_counts=h.step_counts, levels=h.grid.num_levels)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", choices=["xor", "adder", "digits"], default="xor")
    ap.add_argument("--steps", type=int, default=3200)
    ap.add_argument("--solver", choices=["two-level", "V", "F"], default="F")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--lr-max", type=float, default=None)
    ap.add_argument("--data", choices=["full", "serial", "minibatch"], default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--procs", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--json", default="benchmarks/results/bench_train_mgrit.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # tiny steps: threads only contend (torch and NumPy's BLAS)
    threadpool_limits(1)
    kw = _settings(args)
    n = args.steps

    task = make_task(args.problem, args.seed)
    from torchpint.training import TrainingProblem

    p = TrainingProblem(task.model, task.loss_fn, task.data, n, lr=kw["lr"],
                        lr_max=kw["lr_max"], data_rule=kw["data_rule"],
                        batch_size=kw["batch_size"], seed=args.seed)
    ser = serial_train(p)
    c_step = ser.seconds / n
    runs: dict[int, dict[str, Any]] = {}
    for procs in args.procs:
        if procs == 1:
            runs[1] = _mgrit(0, 1, args.problem, n, kw)
        else:
            runs[procs] = spawn_gloo(_mgrit, procs, args.problem, n, kw, timeout=600)[0]
        runs[procs]["max_weight_diff_vs_serial"] = float(
            (runs[procs]["weights"] - p.weights(ser.final)).abs().max())
    first = runs[min(runs)]
    from torchpint.core import Grid
    from torchpint.training.config import solver_options

    opts = solver_options(args.solver)
    grid = Grid(n, 2, opts.get("levels"), 2, opts.get("max_coarse", 1))
    its = first["iterations"]
    cyc = opts["cycle"]
    rows = []
    for procs in sorted(set(list(runs) + [n // 2])):
        per_it = iteration_cost(grid, procs, relax="FCF", cycle=cyc)
        model_speedup = potential_speedup(grid, its, procs, relax="FCF", cycle=cyc)
        rows.append(dict(
            procs=procs, model_steps_per_iteration=per_it, model_speedup=model_speedup,
            model_wall=ser.seconds / model_speedup,
            measured_wall=runs[procs]["wall"] if procs in runs else None,
            measured_speedup=ser.seconds / runs[procs]["wall"] if procs in runs else None))
    solver_step_cost = first["step_time"] / max(1, sum(first["step_counts"]))
    print(f"{args.problem}: N={n}, solver={args.solver}, data={kw['data_rule']}, lr={kw['lr']}, "
          f"lr_max={kw['lr_max']}, levels={grid.num_levels}, iterations={its} "
          f"(converged={first['converged']})")
    print(f"serial training: {ser.seconds:.2f}s = {c_step * 1e6:.1f} us/step; one step inside "
          f"MGRIT: {solver_step_cost * 1e6:.1f} us; MGRIT work per iteration on 1 process: "
          f"{sum(first['step_counts']) / its / n:.1f} steps per fine step")
    print(f"{'P':>7} {'model steps/it':>15} {'model speedup':>14} {'model wall s':>13} "
          f"{'measured wall s':>16} {'measured speedup':>17}")
    for r in rows:
        mw = f"{r['measured_wall']:.2f}" if r["measured_wall"] is not None else "-"
        ms = f"{r['measured_speedup']:.3f}" if r["measured_speedup"] is not None else "-"
        print(f"{r['procs']:>7} {r['model_steps_per_iteration']:>15.0f} "
              f"{r['model_speedup']:>14.3f} {r['model_wall']:>13.2f} {mw:>16} {ms:>17}")
    for procs, r in runs.items():
        print(f"P={procs}: max |w_mgrit - w_serial| = {r['max_weight_diff_vs_serial']:.2e}")
    write_json(args.json, dict(
        problem=args.problem, steps=n, settings={k: v for k, v in kw.items()},
        serial_seconds=ser.seconds, step_seconds=c_step, solver_step_seconds=solver_step_cost,
        iterations=its, levels=grid.num_levels, rows=rows,
        runs={p_: {k: v for k, v in r.items() if k != "weights"} for p_, r in runs.items()},
    ), indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
