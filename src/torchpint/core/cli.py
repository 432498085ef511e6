"""``torchpint mgrit``: solve a model problem with MGRIT (or parareal), serial or distributed."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch.distributed as dist

from torchpint.core.distributed import init_distributed
from torchpint.core.history import plot_residuals
from torchpint.core.mgrit import MGRIT, Parareal
from torchpint.core.problem import serial_solve
from torchpint.problems import PROBLEMS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem", choices=sorted(PROBLEMS), default="heat1d")
    p.add_argument("--t-stop", type=float, default=None, help="end time (problem default)")
    p.add_argument("--nt", type=int, default=1025,
                   help="number of time points, t_0 and t_N included (default 1025)")
    p.add_argument("--nx", type=int, default=65, help="space points, heat1d / allen-cahn")
    p.add_argument("--lam", type=float, default=-1.0, help="lambda, dahlquist")
    p.add_argument("--method", choices=["BE", "FE", "CN"], default="BE", help="dahlquist")
    p.add_argument("--levels", type=int, default=None, help="levels (default: coarsen fully)")
    p.add_argument("--cfactor", type=int, default=2)
    p.add_argument("--min-coarse", type=int, default=2, help="smallest level size (points)")
    p.add_argument("--cycle", choices=["V", "F"], default="V")
    p.add_argument("--relax", choices=["F", "FCF"], default="FCF")
    p.add_argument("--cf-iter", type=int, default=1)
    p.add_argument("--nested", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--parareal", type=int, default=None, metavar="SLICES",
                   help="run parareal with this many slices (two levels, F-relaxation)")
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a peer")
    p.add_argument("--check", action="store_true",
                   help="also time-step serially and report the difference")
    p.add_argument("--json", metavar="PATH", help="write the history as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the residual history")


def _problem(args: argparse.Namespace) -> Any:
    nt = args.nt - 1
    if nt < 1:
        raise SystemExit(f"--nt must be at least 2 time points, got {args.nt}")
    kw: dict[str, Any] = {} if args.t_stop is None else {"t_stop": args.t_stop}
    cls = PROBLEMS[args.problem]
    if args.problem == "dahlquist":
        return cls(nt, lam=args.lam, method=args.method, **kw)
    return cls(nt, nx=args.nx, **kw)


def run(args: argparse.Namespace) -> int:
    distributed = init_distributed(timeout=args.timeout)
    group = "world" if distributed else None
    problem = _problem(args)
    lead = not distributed or dist.get_rank() == 0

    def show(k: int, res: float) -> None:
        if not lead:
            return
        hist = solver._residuals
        factor = f"{res / hist[-2]:.3f}" if len(hist) > 1 and hist[-2] > 0 else "-"
        print(f"iter {k:3d} | residual {res:.6e} | conv factor {factor:>7} | "
              f"time {solver._iter_times[-1]:.4f} s", flush=True)

    common = dict(tol=args.tol, max_iter=args.max_iter, group=group, timeout=args.timeout,
                  callback=show)
    try:
        if args.parareal:
            solver = Parareal(problem, args.parareal, **common)
        else:
            solver = MGRIT(problem, cfactor=args.cfactor, levels=args.levels,
                           min_coarse=args.min_coarse, cycle=args.cycle, relax=args.relax,
                           cf_iter=args.cf_iter, nested=args.nested, **common)
    except (ValueError, TypeError) as err:
        print(f"torchpint mgrit: {err}", file=sys.stderr)
        return 2
    if lead:
        g = solver.grid
        world = solver.comm.size
        print(f"{args.problem}: {g.nt + 1} time points, {g.num_levels} levels {list(g.n)} steps, "
              f"cfactor {list(g.m)}, {args.cycle}-cycle, {args.relax}-relaxation, "
              f"{world} process{'es' if world > 1 else ''}")
    result = solver.solve()
    summary = result.to_dict()
    summary.update(problem=args.problem, nt=args.nt, processes=solver.comm.size)
    if args.check and not distributed:
        t = time.perf_counter()
        ref = serial_solve(problem)
        summary["serial_time_s"] = time.perf_counter() - t
        summary["max_diff_vs_serial"] = float((result.u - ref).abs().max())
    if lead:
        status = "converged" if result.converged else "not converged"
        solve_s = result.timings["solve"]
        print(f"{status} after {result.iterations} iterations; solve {solve_s:.3f} s"
              + (f"; max |u - serial| = {summary['max_diff_vs_serial']:.3e}"
                 if "max_diff_vs_serial" in summary else ""))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=2)
        if args.plot:
            label = f"{args.cycle}-cycle {args.relax}" if not args.parareal else "parareal"
            plot_residuals({label: result.residuals}, args.plot, f"{args.problem}, nt={args.nt}")
    return 0 if result.converged else 1
