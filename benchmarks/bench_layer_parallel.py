"""Training-step time of layer-parallel MGRIT against ordinary training, side by side.

On this CPU, for ``conv_resnet`` with N residual steps (C channels, batch B, 16x16
inputs, 3 levels, cfactor 4, 2 forward / 1 adjoint iterations):
  (a) the serial network (exact forward and backprop) on 1 intra-op thread,
  (b) the serial network on all cores as intra-op threads (the honest baseline here),
  (c) layer-parallel in one process (1 thread),
  (d) layer-parallel on P Gloo processes (1 thread each), kept alive across rounds.
Rounds interleave the variants; a ratio is the median (quartiles) over rounds of the two
variants' median step times in the same round, so drift in machine load cancels.

Also: how much slower a layer step runs on every rank at once than in one process alone
(no messages: what sharing the machine costs, a bound on (c)/(d)), the share of a
layer-parallel step (1 process) spent beyond the steps themselves
(the solvers' bookkeeping and communication: each solve's wall time minus its time inside
the layers), the measured point-to-point latency, and a cost model of one step on P
ranks (critical path from the measured step costs and latency) with the predicted
crossover P against (a) and (b) for N = 128 and 1024.

    python benchmarks/bench_layer_parallel.py --json benchmarks/results/bench_layer_parallel.json
    python benchmarks/bench_layer_parallel.py --quick
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from common import median_quartiles, step_fn, write_json  # this directory is on sys.path
from torchpint.layerparallel import LayerParallel, conv_resnet
from torchpint.testing import free_port

SOLVER = dict(levels=3, cfactor=4, fwd_iterations=2, bwd_iterations=1)


def _net(n: int, channels: int, group: Any = None, **kw: Any) -> LayerParallel:
    torch.manual_seed(0)
    return conv_resnet(n, channels, 1, 10, 16, group=group, **{**SOLVER, **kw})


def _batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, 16, 16, generator=g), torch.randint(0, 10, (batch,), generator=g)


def _stepper(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    """A training step on ``(x, y)`` that returns its seconds."""
    step = step_fn(model, x, y)

    def timed() -> float:
        t = time.perf_counter()
        step()
        return time.perf_counter() - t

    return timed


def _worker(rank: int, world: int, port: int, n: int, channels: int, batch: int,
            commands: Any, results: Any) -> None:
    """A rank of variant (d): waits for 'run k' commands and times k training steps."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(minutes=5))
    try:
        net = _net(n, channels, "world")
        step = _stepper(net, *_batch(batch))
        step()  # warm up: solvers and shapes
        latency = _ping(rank)
        results.put(("ready", rank, latency))
        while True:
            k = commands[rank].get()
            if k is None:
                break
            dist.barrier()
            if isinstance(k, tuple):  # ("alone", reps): layer steps, no messages
                results.put(("times", rank, [_layer_steps(net, batch, k[1])]))
                continue
            times = [step() for _ in range(k)]
            results.put(("times", rank, times))
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


def _ping(rank: int, rounds: int = 200) -> float:
    """One-way point-to-point latency between ranks 0 and 1 (half a round trip)."""
    t = torch.zeros(8)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(rounds):
        if rank == 0:
            dist.send(t, 1)
            dist.recv(t, 1)
        elif rank == 1:
            dist.recv(t, 0)
            dist.send(t, 0)
    return (time.perf_counter() - start) / rounds / 2


class _Ranks:
    """P spawned Gloo ranks running variant (d) on command."""

    def __init__(self, world: int, n: int, channels: int, batch: int) -> None:
        ctx = mp.get_context("spawn")
        self.commands = [ctx.Queue() for _ in range(world)]
        self.results = ctx.Queue()
        port = free_port()
        self.procs = [ctx.Process(target=_worker, args=(r, world, port, n, channels, batch,
                                                        self.commands, self.results))
                      for r in range(world)]
        for p in self.procs:
            p.start()
        ready = [self.results.get(timeout=600) for _ in range(world)]
        self.latency = next(x[2] for x in ready if x[1] == 0)

    def run(self, k: int | tuple[str, int]) -> list[float]:
        for q in self.commands:
            q.put(k)
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
            threads: int) -> dict[str, Any]:
    """Interleaved rounds of (a)-(d) for one depth; medians and per-round ratios."""
    x, y = _batch(batch)
    lp = _net(n, channels)
    serial = _net(n, channels).serial()
    steps = {"lp_1proc": _stepper(lp, x, y), "serial": _stepper(serial, x, y)}
    for s in steps.values():
        s()
    ranks = _Ranks(world, n, channels, batch)
    per_round: dict[str, list[float]] = {v: [] for v in ("a", "b", "c", "d")}
    overhead: list[float] = []
    in_solver: dict[str, list[float]] = {"forward": [], "vjp": []}
    try:
        for r in range(rounds):
            order = ["a", "b", "c", "d"] if r % 2 == 0 else ["d", "c", "b", "a"]
            for v in order:
                if v == "d":
                    times = ranks.run(k)
                else:
                    torch.set_num_threads(threads if v == "b" else 1)
                    step = steps["serial" if v in "ab" else "lp_1proc"]
                    times = []
                    for _ in range(k):
                        times.append(step())
                        if v == "c":
                            t = lp.timings
                            extra = (t["forward_solve"] - t["forward_steps"]
                                     + t["adjoint_solve"] - t["adjoint_steps"])
                            overhead.append(extra / times[-1])
                            in_solver["forward"].append(
                                t["forward_steps"] / sum(lp.step_counts["forward"]))
                            in_solver["vjp"].append(
                                t["adjoint_steps"] / sum(lp.step_counts["adjoint"]))
                per_round[v].append(statistics.median(times))
        latency = ranks.latency
        side_by_side = statistics.median(ranks.run(("alone", 100)))
        alone = _layer_steps(lp, batch, 100)
    finally:
        ranks.close()
        torch.set_num_threads(1)
    med = {v: statistics.median(ts) for v, ts in per_round.items()}

    def ratio(num: str, den: str) -> dict[str, float]:
        mid, lo, hi = median_quartiles([a / b for a, b in
                                        zip(per_round[num], per_round[den], strict=True)],
                                       method="inclusive")
        return {"median": mid, "q1": lo, "q3": hi}

    return {
        "steps": n, "channels": channels, "batch": batch, "ranks": world,
        "step_time_s": med,
        "lp_1proc_over_lp_ranks": ratio("c", "d"),  # parallel efficiency x P
        "serial_1thread_over_lp_ranks": ratio("a", "d"),  # (a)/(d): > 1 is a speedup
        "serial_threads_over_lp_ranks": ratio("b", "d"),
        "lp_1proc_over_serial_1thread": ratio("c", "a"),
        "overhead_share_1proc": statistics.median(overhead),
        # a layer step on every rank at once over one alone: (c)/(d) cannot pass P / this
        "side_by_side_slowdown": side_by_side / alone,
        "latency_s": latency,
        "counts": _counts(lp),
        # a step's and a VJP's cost inside the solves (1 process): what the model uses
        "costs": {**_step_costs(n, channels, batch),
                  **{k: statistics.median(v) for k, v in in_solver.items()}},
    }


def _counts(net: LayerParallel) -> dict[str, list[int]]:
    """Steps per level of the last forward and adjoint solves (one process)."""
    return dict(net.step_counts)


def _step_costs(n: int, channels: int, batch: int) -> dict[str, float]:
    """Seconds of one layer's forward step and of one vector-Jacobian product alone
    (``*_alone``), and of the serial net's open+close+loss (forward and backward), all on
    1 thread."""
    torch.set_num_threads(1)
    net = _net(n, channels)
    x, y = _batch(batch)
    layer, u = net.steps[0], net.open(x).detach()

    def timed(f, reps=20) -> float:
        f()
        t = time.perf_counter()
        for _ in range(reps):
            f()
        return (time.perf_counter() - t) / reps

    with torch.no_grad():
        fwd = timed(lambda: u + 0.1 * layer(u))
    ur = u.clone().requires_grad_(True)
    out = ur + 0.1 * layer(ur)
    v = torch.randn_like(out)
    vjp = timed(lambda: torch.autograd.grad(out, [ur, *layer.parameters()], v,
                                            retain_graph=True))

    def ends() -> None:
        z = net.open(x)
        F.cross_entropy(net.close(z), y).backward()

    return {"forward_alone": fwd, "vjp_alone": vjp, "open_close": timed(ends)}


def model_time(n: int, world: int, counts: dict[str, list[int]], costs: dict[str, float],
               latency: float, cfactor: int = 4, fwd_iters: int = 2, bwd_iters: int = 1
               ) -> float:
    """Predicted seconds of one layer-parallel training step on ``world`` ranks.

    Level l's steps split over min(P, points on level l) ranks; the coarsest level is
    sequential (its time stepping pipelined over the ranks, P - 1 messages); the final
    sweep and the parameter gradients (about one VJP per layer) split over P; each level
    of each iteration adds two messages (relaxation, restriction), each iteration two
    all-reduces (log2 P messages each). The serial open, close and loss are added once.
    """
    levels = len(counts["forward"])
    time_s = costs["open_close"]
    for key, iters, c in (("forward", fwd_iters, costs["forward"]),
                          ("adjoint", bwd_iters, costs["vjp"])):
        for l, cnt in enumerate(counts[key]):
            points = n // cfactor**l
            share = 1 if l == levels - 1 else min(world, points)
            time_s += cnt * c / share
        msgs = iters * (2 * levels + 2 * math.ceil(math.log2(world))) + (world - 1) * iters
        time_s += msgs * latency if world > 1 else 0.0
    time_s += n * (costs["forward"] + costs["vjp"]) / world  # final sweep, gradients
    return time_s


def serial_time(n: int, costs: dict[str, float]) -> float:
    """Predicted seconds of a serial training step: a forward and a VJP per layer (each
    at its cost alone: serial autograd does no solver work)."""
    return costs["open_close"] + n * (costs["forward_alone"] + costs["vjp_alone"])


def _model_counts(n: int) -> dict[str, list[int]]:
    """Step counts of one training step at depth ``n`` (a tiny state: only counts)."""
    torch.manual_seed(0)
    net = LayerParallel(torch.nn.Identity(), [torch.nn.Linear(2, 2) for _ in range(n)],
                        torch.nn.Identity(), **SOLVER)
    net(torch.randn(3, 2)).sum().backward()
    return _counts(net)


def crossover(n: int, costs: dict[str, float], latency: float, threads_speedup: float
              ) -> dict[str, Any]:
    """The smallest P (a power of 2 up to n / cfactor) where the model beats serial on
    1 thread, and serial on ``threads_speedup`` times faster cores."""
    counts = _model_counts(n)
    serial = serial_time(n, costs)
    table = {p: model_time(n, p, counts, costs, latency)
             for p in (2**k for k in range(int(math.log2(n // 4)) + 1))}
    first = lambda bar: next((p for p, t in table.items() if t < bar), None)  # noqa: E731
    return {"steps": n, "serial_s": serial,
            "model_s": {str(p): t for p, t in table.items()},
            "crossover_vs_serial_1thread": first(serial),
            "crossover_vs_serial_threads": first(serial / threads_speedup)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--quick", action="store_true", help="N=16, 2 rounds of 1 step")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds, args.reps = [16], 2, 1
    threads = os.cpu_count() or 1
    rows = [measure(n, args.channels, args.batch, args.ranks, args.rounds, args.reps, threads)
            for n in args.steps]
    print(f"\nconv_resnet C={args.channels}, batch {args.batch}, {SOLVER}; "
          f"{args.ranks} Gloo ranks; {threads} cores; medians of {args.rounds} rounds")
    print(f"{'N':>5} {'(a) serial 1t':>14} {'(b) serial':>11} {'(c) LP 1p':>10} "
          f"{'(d) LP':>8} {'(c)/(d)':>8} {'(a)/(d)':>8} {'(b)/(d)':>8} {'overhead':>9} "
          f"{'side by side':>13}")
    for r in rows:
        t = r["step_time_s"]
        print(f"{r['steps']:>5} {1e3 * t['a']:>11.1f} ms {1e3 * t['b']:>8.1f} ms "
              f"{1e3 * t['c']:>7.1f} ms {1e3 * t['d']:>5.1f} ms "
              f"{r['lp_1proc_over_lp_ranks']['median']:>8.2f} "
              f"{r['serial_1thread_over_lp_ranks']['median']:>8.2f} "
              f"{r['serial_threads_over_lp_ranks']['median']:>8.2f} "
              f"{100 * r['overhead_share_1proc']:>8.1f}% "
              f"{r['side_by_side_slowdown']:>12.2f}x")
    base = rows[-1]
    thr = base["step_time_s"]["a"] / base["step_time_s"]["b"]
    model = []
    for n in sorted({*args.steps, 128, 1024}):
        model.append(crossover(n, base["costs"], base["latency_s"], thr))
    for r in rows:  # the model against the measured P = 1 and P = ranks
        counts = r["counts"]
        r["model_check"] = {
            "lp_1proc_s": model_time(r["steps"], 1, counts, r["costs"], r["latency_s"]),
            "lp_ranks_s": model_time(r["steps"], args.ranks, counts, r["costs"],
                                     r["latency_s"]),
            "serial_s": serial_time(r["steps"], r["costs"]),
        }
    print(f"\ncost model (in the solver: step {1e3 * base['costs']['forward']:.2f} ms, VJP "
          f"{1e3 * base['costs']['vjp']:.2f} ms; alone {1e3 * base['costs']['forward_alone']:.2f}"
          f" and {1e3 * base['costs']['vjp_alone']:.2f} ms; latency "
          f"{1e6 * base['latency_s']:.0f} us; "
          f"serial on {threads} threads {thr:.2f}x faster than on 1):")
    for r in rows:
        c = r["model_check"]
        t = r["step_time_s"]
        print(f"  N={r['steps']}: predicted (c) {1e3 * c['lp_1proc_s']:.1f} ms (measured "
              f"{1e3 * t['c']:.1f}), (d) {1e3 * c['lp_ranks_s']:.1f} ms (measured "
              f"{1e3 * t['d']:.1f}), serial {1e3 * c['serial_s']:.1f} ms (measured "
              f"{1e3 * t['a']:.1f})")
    for m in model:
        print(f"  N={m['steps']}: crossover P vs serial 1 thread: "
              f"{m['crossover_vs_serial_1thread']}, vs serial on {threads} threads: "
              f"{m['crossover_vs_serial_threads']}  (P: predicted ms "
              + ", ".join(f"{p}: {1e3 * t:.0f}" for p, t in m["model_s"].items()) + ")")
    write_json(args.json, {"machine": {"cpus": threads, "platform": platform.platform(),
                                       "torch": torch.__version__},
                           "solver": SOLVER, "rows": rows, "model": model}, indent=1)


if __name__ == "__main__":
    main()
