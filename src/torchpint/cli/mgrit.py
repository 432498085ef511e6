"""``torchpint mgrit``: solve a model problem with MGRIT (or parareal), serial or distributed."""

from __future__ import annotations

import argparse
import time
from typing import Any

from torchpint.cli import _plots as plots
from torchpint.cli._common import (
    COUNT,
    POSITIVE,
    add_timeout,
    bounded,
    check_outputs,
    deprecated_alias,
    save_outputs,
    say,
)
from torchpint.core.mgrit import CYCLES, RELAXATIONS
from torchpint.problems import PROBLEMS


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``torchpint mgrit``."""
    a = p.add_argument
    a("--problem", choices=sorted(PROBLEMS), default="heat1d",
      help="model problem (default heat1d)")
    a("--t-stop", type=POSITIVE, default=None, help="end time (default: the problem's)")
    a("--steps", type=COUNT, default=1024,
      help="N, the number of time steps (N + 1 time points; default 1024)")
    deprecated_alias(p, "--nt", "--steps", "steps", type=bounded(int, 2),
                     convert=lambda points: points - 1,
                     note=" (--nt counted time points, --steps counts steps: points - 1)")
    a("--nx", type=bounded(int, 3), default=65,
      help="space points, heat1d / allen-cahn (default 65)")
    a("--lam", type=bounded(float), default=-1.0, help="lambda, dahlquist (default -1)")
    a("--method", choices=["BE", "FE", "CN"], default="BE",
      help="time integrator, dahlquist (default BE)")
    a("--levels", type=COUNT, default=None, help="levels (default: coarsen fully)")
    a("--cfactor", type=int, default=2, help="coarsening factor (default 2)")
    a("--min-coarse", type=bounded(int, 2), default=2,
      help="smallest level size in points (default 2)")
    a("--cycle", choices=CYCLES, default="V", help="MGRIT cycle (default V)")
    a("--relax", choices=RELAXATIONS, default="FCF", help="relaxation (default FCF)")
    a("--cf-iter", type=COUNT, default=1, help="CF sweeps per FCF relaxation (default 1)")
    a("--nested", action=argparse.BooleanOptionalAction, default=False,
      help="initial guess by nested iteration")
    a("--parareal", type=bounded(int, 2), default=None, metavar="CHUNKS",
      help="run parareal with this many time chunks (two levels, F-relaxation)")
    a("--tol", type=POSITIVE, default=1e-10, help="residual tolerance (default 1e-10)")
    a("--max-iter", type=COUNT, default=100, help="iteration budget (default 100)")
    add_timeout(p)
    a("--check", action="store_true", help="also time-step serially and report the difference")
    a("--json", metavar="PATH", help="write the history as JSON")
    a("--plot", metavar="PATH", help="write a PNG of the residual history")


MEMORY_HINT = "--steps (time steps) or --nx (space points)"


def _check_memory(args: argparse.Namespace, world: int) -> None:
    """Refuse before any allocation a solve whose states cannot fit: every rank holds
    its slab's fine points and about as much again on the coarse levels and in the FAS
    right-hand sides (float64 states of ``nx`` values, one for dahlquist)."""
    from torchpint.runtime.resources import require_memory

    state = 8 * (1 if args.problem == "dahlquist" else args.nx)
    need = 2.0 * state * (args.steps + 1) / world
    require_memory(need, f"an MGRIT solve of {args.steps + 1} time points of {state} bytes",
                   MEMORY_HINT)


def _problem(args: argparse.Namespace) -> Any:
    nt = args.steps
    kw: dict[str, Any] = {} if args.t_stop is None else {"t_stop": args.t_stop}
    cls = PROBLEMS[args.problem]
    if args.problem == "dahlquist":
        return cls(nt, lam=args.lam, method=args.method, **kw)
    return cls(nt, nx=args.nx, **kw)


def run(args: argparse.Namespace) -> int:
    """Solve as the options say; 0 converged, 1 not converged."""
    from torchpint.core import MGRIT, Parareal, init_distributed, serial_solve

    check_outputs(args)
    distributed = init_distributed(timeout=args.timeout)
    from torchpint.runtime.comm import world_size

    _check_memory(args, world_size())
    problem = _problem(args)

    def show(k: int, res: float) -> None:
        hist = solver.residuals
        factor = f"{res / hist[-2]:.3f}" if len(hist) > 1 and hist[-2] > 0 else "-"
        say(f"iter {k:3d} | residual {res:.6e} | conv factor {factor:>7} | "
            f"time {solver.iteration_times[-1]:.4f} s")

    common = dict(tol=args.tol, max_iter=args.max_iter, group="world" if distributed else None,
                  timeout=args.timeout, callback=show)
    if args.parareal is not None:
        solver = Parareal(problem, args.parareal, **common)
    else:
        solver = MGRIT(problem, cfactor=args.cfactor, levels=args.levels,
                       min_coarse=args.min_coarse, cycle=args.cycle, relax=args.relax,
                       cf_iter=args.cf_iter, nested=args.nested, **common)
    g, world = solver.grid, solver.comm.size
    say(f"{args.problem}: {g.nt + 1} time points, {g.num_levels} levels {list(g.n)} steps, "
        f"cfactor {list(g.m)}, {args.cycle}-cycle, {args.relax}-relaxation, "
        f"{world} process{'es' if world > 1 else ''}")
    result = solver.solve()
    summary = result.to_dict()
    summary.update(problem=args.problem, steps=args.steps, processes=world)
    if args.check and not distributed:
        t = time.perf_counter()
        ref = serial_solve(problem)
        summary["serial_time_s"] = time.perf_counter() - t
        summary["max_diff_vs_serial"] = float((result.u - ref).abs().max())
    status = "converged" if result.converged else "not converged"
    say(f"{status} after {result.iterations} iterations; solve {result.timings['solve']:.3f} s"
        + (f"; max |u - serial| = {summary['max_diff_vs_serial']:.3e}"
           if "max_diff_vs_serial" in summary else ""))
    label = f"{args.cycle}-cycle {args.relax}" if args.parareal is None else "parareal"
    save_outputs(args, summary, lambda path: plots.plot_residuals(
        {label: result.residuals}, path, f"{args.problem}, {args.steps} steps"))
    return 0 if result.converged else 1
