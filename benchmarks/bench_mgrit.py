"""MGRIT vs serial time stepping on the 1-D heat equation, measured side by side.

In one run: serial time stepping (1 thread, and all cores as intra-op threads), MGRIT on
1 process and on 2 Gloo processes (1 thread each), then the cost-model ("potential")
speedup for 1..1024 processes from the measured cost of one step and the measured
iteration count. Prints a table and writes JSON.

    python benchmarks/bench_mgrit.py --nt 4097 --nx 257 --json out/bench_mgrit.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from common import write_json  # this directory is on sys.path
from torchpint.core import MGRIT, Grid, potential_speedup, serial_solve
from torchpint.problems import Heat1D
from torchpint.testing import spawn_gloo


def _problem(args):
    return Heat1D(nt=args.nt - 1, nx=args.nx, t_stop=args.t_stop)


def _mgrit(args, group=None):
    return MGRIT(_problem(args), cfactor=args.cfactor, cycle=args.cycle, relax=args.relax,
                 tol=args.tol, max_iter=50, group=group)


def _time_serial(args, threads: int) -> tuple[float, torch.Tensor]:
    torch.set_num_threads(threads)
    p = _problem(args)
    serial_solve(p)  # warm up (LU factorization)
    t = time.perf_counter()
    u = serial_solve(p)
    return time.perf_counter() - t, u


def _time_mgrit_1(args):
    torch.set_num_threads(1)
    solver = _mgrit(args)
    t = time.perf_counter()
    res = solver.solve()
    return time.perf_counter() - t, res


def _rank(rank, world, args):
    solver = _mgrit(args, "world")
    torch.distributed.barrier()
    t = time.perf_counter()
    res = solver.solve()
    elapsed = time.perf_counter() - t
    return elapsed, res.iterations, res.residuals[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nt", type=int, default=4097, help="time points (t_0 and t_N included)")
    ap.add_argument("--nx", type=int, default=257)
    ap.add_argument("--t-stop", type=float, default=1.0)
    ap.add_argument("--cfactor", type=int, default=4)
    ap.add_argument("--cycle", default="V")
    ap.add_argument("--relax", default="FCF")
    ap.add_argument("--tol", type=float, default=1e-9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cores = os.cpu_count() or 1

    rows: dict[str, list[float]] = {"serial, 1 thread": [], f"serial, {cores} threads": [],
                                    "MGRIT, 1 process": [], "MGRIT, 2 processes": []}
    info = {}
    for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
        t1, ref = _time_serial(args, 1)
        rows["serial, 1 thread"].append(t1)
        rows[f"serial, {cores} threads"].append(_time_serial(args, cores)[0])
        tm, res = _time_mgrit_1(args)
        rows["MGRIT, 1 process"].append(tm)
        info["iterations"] = res.iterations
        info["max_diff_vs_serial"] = float((res.u - ref).abs().max())
        info["step_counts"] = res.step_counts
        out = spawn_gloo(_rank, 2, args)
        rows["MGRIT, 2 processes"].append(max(o[0] for o in out))
        assert out[0][1] == res.iterations

    med = {k: statistics.median(v) for k, v in rows.items()}
    base1, baseall = med["serial, 1 thread"], med[f"serial, {cores} threads"]
    print(f"heat1d: nt={args.nt} points, nx={args.nx}, cfactor {args.cfactor}, {args.cycle}-cycle "
          f"{args.relax}, {info['iterations']} iterations, max |u - serial| = "
          f"{info['max_diff_vs_serial']:.2e}; median of {args.repeats}")
    print(f"{'variant':<22}{'wall s':>10}{'vs serial 1 thr':>18}{f'vs serial {cores} thr':>18}")
    for k, v in med.items():
        print(f"{k:<22}{v:>10.3f}{base1 / v:>17.2f}x{baseall / v:>17.2f}x")

    # cost model: every step costs the same here (one LU solve pair), so c_l = c_0
    step_cost = base1 / (args.nt - 1)
    grid = Grid(args.nt - 1, cfactor=args.cfactor)
    model = {p: potential_speedup(grid, info["iterations"], p, relax=args.relax,
                                  cycle=args.cycle) for p in [2**k for k in range(11)]}
    print(f"\ncost model (one step = {step_cost * 1e6:.1f} us, communication free):")
    print("processes  " + " ".join(f"{p:>6}" for p in model))
    print("speedup    " + " ".join(f"{s:>6.2f}" for s in model.values()))
    write_json(args.json, {"settings": vars(args), "cores": cores, "median_s": med,
                           "runs_s": rows, **info, "step_cost_s": step_cost,
                           "cost_model_speedup": {str(p): s for p, s in model.items()}})


if __name__ == "__main__":
    main()
