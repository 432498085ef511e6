"""Training-step time of layer-parallel MGRIT against ordinary training, side by side.

On this CPU, for ``conv_resnet`` with N residual steps (C channels, batch B, digits at
16x16, 3 levels, cfactor 4, F fine / FCF coarse, 2 forward / 1 adjoint iterations):
  (a) the serial network (exact forward and backprop) on 1 intra-op thread,
  (b) the serial network on all cores as intra-op threads (the honest baseline here),
  (c) layer-parallel in one process (1 thread), for each setting of how the solves start,
  (d) layer-parallel on P Gloo processes (1 thread each), kept alive across rounds.
Rounds interleave the variants; a ratio is the median (quartiles) over rounds of the two
variants' median step times in the same round, so drift in machine load cancels.

The settings (``--starts``, forward/adjoint): ``warm/cold`` is the default; ``skip/skip``
is XBraid's skip in both solves, TorchBraid's drivers' setting. Each setting's gradient
error on the first batch against exact backprop (the CLI's ``gradient_check``) is printed
beside its times: "equal accuracy" compares those.

Also: how much slower a layer step runs on every rank at once than in one process alone
(no messages: what sharing the machine costs, a bound on (c)/(d)), the solver overhead on
1 process (the solves' wall time minus their time inside the steps, as a share of the
solves; the issue's target is under 10%), and the measured point-to-point latency. The
cost model and the scaling beyond 2 processes are ``scaling_lab.py``'s.

    python benchmarks/bench_layer_parallel.py --json benchmarks/results/bench_layer_parallel.json
    python benchmarks/bench_layer_parallel.py --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common import (  # this directory is on sys.path
    digits_batch,
    median_quartiles,
    ping_pong,
    timed_step,
    write_json,
)
from torchpint.core.costmodel import Hierarchy
from torchpint.layerparallel import (
    LayerParallel,
    choose_layer_parallel,
    conv_resnet,
    equal_accuracy,
    gradient_check,
)
from torchpint.testing import free_port

SOLVER = dict(levels=3, cfactor=4, fwd_iterations=2, bwd_iterations=1)
STARTS = ["warm/cold", "skip/skip"]


def _setting(starts: str, h: Hierarchy | None = None) -> str:
    """A setting's name: ``fwd/bwd`` starts, and ``@levels,cfactor,relax`` when the
    hierarchy is not the issue's."""
    return starts if h is None else f"{starts}@{h.levels},{h.cfactor},{'+'.join(h.relax)}"


def _net(n: int, channels: int, setting: str, group: Any = None) -> LayerParallel:
    torch.manual_seed(0)
    starts, _, hierarchy = setting.partition("@")
    fwd, bwd = starts.split("/")
    solver = dict(SOLVER)
    if hierarchy:
        levels, cfactor, relax = hierarchy.split(",")
        solver.update(levels=int(levels), cfactor=int(cfactor), relax=relax.split("+"))
    return conv_resnet(n, channels, 1, 10, 16, group=group, fwd_start=fwd, bwd_start=bwd,
                       **solver)


def _chosen(n: int, channels: int, procs: int, starts: list[str], x: torch.Tensor,
            y: torch.Tensor) -> dict[str, Any]:
    """For each pair of starts, the chooser's hierarchy for ``procs`` ranks at equal
    accuracy measured on the first batch (gradient error no larger than the issue's
    settings give: default hierarchy, first pair of starts): its setting name, the
    candidates tried and their errors."""
    bound = gradient_check(_net(n, channels, starts[0]), x, y)["grad_rel_err"]
    out = {}
    for s in starts:
        accept = equal_accuracy(lambda h, s=s: _net(n, channels, _setting(s, h)), x, y,
                                bound=bound)
        f, b = s.split("/")
        choice = choose_layer_parallel(n, procs, accept=accept, fwd_start=f, bwd_start=b)
        out[_setting(s, choice.best)] = {
            "starts": s, "hierarchy": str(choice.best), "bound": bound,
            "tried": [{"hierarchy": str(h), "accepted": ok,
                       "grad_rel_err": accept.errors[h]} for h, ok in choice.checked]}
    return out


def _worker(rank: int, world: int, port: int, n: int, channels: int, batch: int,
            starts: list[str], commands: Any, results: Any) -> None:
    """A rank of variant (d): waits for ``(setting, k)`` commands and times k training
    steps of that setting's net."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(minutes=5))
    try:
        nets = {s: _net(n, channels, s, "world") for s in starts}
        steps = {s: timed_step(net, *digits_batch(batch)) for s, net in nets.items()}
        for step in steps.values():
            step()  # warm up: solvers and shapes
        latency = ping_pong(rank, torch.zeros(8), 200)
        results.put(("ready", rank, latency))
        while True:
            cmd = commands[rank].get()
            if cmd is None:
                break
            dist.barrier()
            setting, k = cmd
            if setting == "alone":  # layer steps, no messages
                results.put(("times", rank, [_layer_steps(nets[starts[0]], batch, k)]))
                continue
            results.put(("times", rank, [steps[setting]() for _ in range(k)]))
    finally:
        dist.destroy_process_group()


def _layer_steps(net: LayerParallel, batch: int, reps: int) -> float:
    """Seconds per forward step of one layer with a fixed state, no messages: timed on
    every rank at once, against one process alone, it shows what running the ranks side
    by side costs this machine (shared memory bandwidth and caches)."""
    layer = net.steps[0]
    u = torch.randn(batch, layer[0].in_channels, 16, 16)
    with torch.no_grad():
        layer(u)
        t = time.perf_counter()
        for _ in range(reps):
            u = u + 0.01 * layer(u)
    return (time.perf_counter() - t) / reps


class _Ranks:
    """P spawned Gloo ranks running variant (d) on command."""

    def __init__(self, world: int, n: int, channels: int, batch: int, starts: list[str]
                 ) -> None:
        ctx = mp.get_context("spawn")
        self.commands = [ctx.Queue() for _ in range(world)]
        self.results = ctx.Queue()
        port = free_port()
        self.procs = [ctx.Process(target=_worker, args=(r, world, port, n, channels, batch,
                                                        starts, self.commands, self.results))
                      for r in range(world)]
        for p in self.procs:
            p.start()
        ready = [self.results.get(timeout=600) for _ in range(world)]
        self.latency = next(x[2] for x in ready if x[1] == 0)

    def run(self, setting: str, k: int) -> list[float]:
        for q in self.commands:
            q.put((setting, k))
        out = {}
        for _ in self.commands:
            _, rank, times = self.results.get(timeout=600)
            out[rank] = times
        return [max(ts) for ts in zip(*out.values(), strict=True)]  # the slowest rank

    def close(self) -> None:
        for q in self.commands:
            q.put(None)
        for p in self.procs:
            p.join(timeout=60)


def measure(n: int, channels: int, batch: int, world: int, rounds: int, k: int,
            threads: int, starts: list[str], choose: bool = False) -> dict[str, Any]:
    """Interleaved rounds of (a), (b) and (c), (d) per setting for one depth; medians and
    per-round ratios. ``choose``: each pair of starts also with the chooser's hierarchy
    for ``world`` ranks at equal accuracy (:func:`_chosen`)."""
    x, y = digits_batch(batch)
    chosen = _chosen(n, channels, world, starts, x, y) if choose else {}
    starts = [*starts, *(c for c in chosen if c not in starts)]
    lps = {s: _net(n, channels, s) for s in starts}
    errors = {s: gradient_check(_net(n, channels, s), x, y) for s in starts}
    serial = _net(n, channels, starts[0]).serial()
    steps = {"a": timed_step(serial, x, y), **{f"c {s}": timed_step(lp, x, y)
                                             for s, lp in lps.items()}}
    for st in steps.values():
        st()
    ranks = _Ranks(world, n, channels, batch, starts)
    variants = ["a", "b", *(f"{v} {s}" for s in starts for v in "cd")]
    per_round: dict[str, list[float]] = {v: [] for v in variants}
    overhead: dict[str, list[float]] = {s: [] for s in starts}
    try:
        for r in range(rounds):
            for v in variants if r % 2 == 0 else variants[::-1]:
                if v.startswith("d"):
                    times = ranks.run(v[2:], k)
                else:
                    torch.set_num_threads(threads if v == "b" else 1)
                    step = steps["a" if v == "b" else v]
                    times = []
                    for _ in range(k):
                        times.append(step())
                        if v.startswith("c"):
                            t = lps[v[2:]].timings
                            solves = t["forward_solve"] + t["adjoint_solve"]
                            extra = solves - t["forward_steps"] - t["adjoint_steps"]
                            overhead[v[2:]].append(extra / solves)
                per_round[v].append(statistics.median(times))
        latency = ranks.latency
        side_by_side = statistics.median(ranks.run("alone", 100))
        alone = _layer_steps(lps[starts[0]], batch, 100)
    finally:
        ranks.close()
        torch.set_num_threads(1)

    def ratio(num: str, den: str) -> dict[str, float]:
        mid, lo, hi = median_quartiles([a / b for a, b in
                                        zip(per_round[num], per_round[den], strict=True)],
                                       method="inclusive")
        return {"median": mid, "q1": lo, "q3": hi}

    settings = {s: {
        "step_time_s": {v: statistics.median(per_round[f"{v} {s}"]) for v in "cd"},
        "lp_1proc_over_serial_1thread": ratio(f"c {s}", "a"),  # target <= 2.3
        "lp_ranks_over_serial_1thread": ratio(f"d {s}", "a"),  # target <= 1.2
        "lp_ranks_over_serial_threads": ratio(f"d {s}", "b"),
        "lp_1proc_over_lp_ranks": ratio(f"c {s}", f"d {s}"),  # target >= 1.85 at P = 2
        "overhead_share_of_solves_1proc": statistics.median(overhead[s]),  # target < 0.1
        "gradient_check": errors[s],
        "step_counts": dict(lps[s].step_counts),
    } for s in starts}
    return {
        "steps": n, "channels": channels, "batch": batch, "ranks": world,
        "serial_step_time_s": {v: statistics.median(per_round[v]) for v in "ab"},
        "settings": settings,
        # a layer step on every rank at once over one alone: (c)/(d) cannot pass P / this
        "side_by_side_slowdown": side_by_side / alone,
        "chosen": chosen,
        "latency_s": latency,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--starts", nargs="+", default=STARTS,
                    help="forward/adjoint starts to compare (default: warm/cold skip/skip)")
    ap.add_argument("--choose", action="store_true",
                    help="also each pair of starts with the hierarchy choose_layer_parallel "
                         "picks for --ranks at the issue settings' first-batch gradient error")
    ap.add_argument("--quick", action="store_true", help="N=16, 2 rounds of 1 step")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds, args.reps = [16], 2, 1
    threads = os.cpu_count() or 1
    rows = [measure(n, args.channels, args.batch, args.ranks, args.rounds, args.reps, threads,
                    args.starts, args.choose) for n in args.steps]
    print(f"\nconv_resnet C={args.channels}, batch {args.batch}, digits 16x16, {SOLVER}; "
          f"{args.ranks} Gloo ranks; {threads} cores; medians of {args.rounds} rounds")
    print(f"{'N':>5} {'setting':>18} {'(a) serial 1t':>14} {'(b) serial':>11} {'(c) LP 1p':>10} "
          f"{'(d) LP':>8} {'(c)/(a)':>8} {'(d)/(a)':>8} {'(d)/(b)':>8} {'(c)/(d)':>8} "
          f"{'overhead':>9} {'grad err':>9}")
    for r in rows:
        a, b = (r["serial_step_time_s"][v] for v in "ab")
        for s, c in r["settings"].items():
            t = c["step_time_s"]
            print(f"{r['steps']:>5} {s:>18} {1e3 * a:>11.1f} ms {1e3 * b:>8.1f} ms "
                  f"{1e3 * t['c']:>7.1f} ms {1e3 * t['d']:>5.1f} ms "
                  f"{c['lp_1proc_over_serial_1thread']['median']:>8.2f} "
                  f"{c['lp_ranks_over_serial_1thread']['median']:>8.2f} "
                  f"{c['lp_ranks_over_serial_threads']['median']:>8.2f} "
                  f"{c['lp_1proc_over_lp_ranks']['median']:>8.2f} "
                  f"{100 * c['overhead_share_of_solves_1proc']:>8.1f}% "
                  f"{c['gradient_check']['grad_rel_err']:>9.2e}")
        print(f"      side by side {r['side_by_side_slowdown']:.2f}x, latency "
              f"{1e6 * r['latency_s']:.0f} us; step counts " + "; ".join(
                  f"{s}: {c['step_counts']}" for s, c in r["settings"].items()))
        for s, c in r["chosen"].items():
            print(f"      chosen for {args.ranks} ranks at grad err <= {c['bound']:.2e}: {s} "
                  "(tried " + ", ".join(f"{t['hierarchy']} {t['grad_rel_err']:.2e}"
                                        for t in c["tried"]) + ")")
    write_json(args.json, {"machine": {"cpus": threads, "platform": platform.platform(),
                                       "torch": torch.__version__},
                           "solver": SOLVER, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
