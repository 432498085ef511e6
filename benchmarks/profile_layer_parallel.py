"""Where a layer-parallel training step's time goes, phase by phase (issue 26, step 1).

The setting: scikit-learn digits at 16x16, batch 50, SGD; ``conv_resnet`` with open
conv3x3(1->4)+ReLU, N steps ``x + h ReLU(conv3x3(4->4)(x))``, close flatten+linear; MGRIT 3
levels, cfactor 4, F fine / FCF coarse, 2 forward / 1 adjoint iterations; 1 thread per
process; 1 process, and 2 Gloo processes (``spawn_gloo``).

Measured from outside, src untouched: the benchmark wraps (instance attributes, removed
again after each profiled step) the solvers' cycle operations (``Cycle.f_relax``,
``c_relax``, ``restrict``, ``correct``, ``forward_solve`` (the coarsest level)), the fine
residual (``torchpint.core.mgrit.fine_residual``), every method of the two communicators,
``LayerParallel.forward_solve``/``adjoint_solve``, the two final sweeps (the problems'
``final_step``, ``final_step_into``: the forward's records each step's graph, the
adjoint's takes the parameter gradients in the same autograd call as its step), open,
close, loss and SGD. Times are exclusive (a wrapped call inside another is taken out of
its parent), so the phases add up to the step; "bookkeeping" is what no wrapper holds: the
solvers' own code outside the cycle operations (reset, result, schedule, edges),
autograd's glue and the backward of open and close. Each timed round runs an unprofiled
layer-parallel step, a profiled one and (1 process) a serial step (``net.serial()``,
forward + backward + SGD) of the same network; medians over the rounds after warm-up.

    cd benchmarks && python profile_layer_parallel.py --json results/profile_layer_parallel.json
    python benchmarks/profile_layer_parallel.py --steps 32 --ranks 1 --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import torchpint.core.mgrit as mgrit_module
from common import machine_info, write_json  # this directory is on sys.path
from torchpint.data import digits_datasets
from torchpint.layerparallel import LayerParallel, conv_resnet
from torchpint.testing import spawn_gloo

SOLVER = dict(levels=3, cfactor=4, fwd_iterations=2, bwd_iterations=1)
CHANNELS, BATCH, LR = 4, 50, 0.05

# (key, group, what is inside): exclusive seconds of each
PHASES = [
    ("fwd_relax", "forward MGRIT", "F- and C-relaxation, all levels but the coarsest"),
    ("fwd_restrict", "forward MGRIT", "injection + FAS right-hand side (its steps)"),
    ("fwd_coarse", "forward MGRIT", "the coarsest level's sequential solve"),
    ("fwd_correct", "forward MGRIT", "coarse-grid correction at the C-points"),
    ("fwd_residual", "forward MGRIT", "fine residual: Phi at the fine C-points, norms"),
    ("fwd_final", "final sweeps", "the forward's final fine sweep, recording the graphs"),
    ("adj_relax", "adjoint MGRIT", "F- and C-relaxation (VJPs; coarse graphs recorded)"),
    ("adj_restrict", "adjoint MGRIT", "injection + FAS right-hand side"),
    ("adj_coarse", "adjoint MGRIT", "the coarsest level's sequential solve"),
    ("adj_correct", "adjoint MGRIT", "coarse-grid correction"),
    ("adj_residual", "adjoint MGRIT", "fine residual"),
    ("adj_final", "final sweeps", "the adjoint's final fine sweep, with the parameter "
     "gradients"),
    ("wait_fwd", "messages", "forward communicator: sends posted, receives, collectives"),
    ("wait_adj", "messages", "adjoint communicator: the same"),
    ("fwd_other", "bookkeeping", "LayerParallel.forward_solve/MGRIT.solve outside the above"),
    ("adj_other", "bookkeeping", "LayerParallel.adjoint_solve/MGRIT.solve outside the above"),
    ("ends", "open/close/loss/SGD", "open and close forwards, loss, zero_grad, SGD step"),
    ("rest", "bookkeeping", "the rest: autograd glue, open/close backward, Python"),
]
GROUPS = ["forward MGRIT", "adjoint MGRIT", "final sweeps", "messages", "bookkeeping",
          "open/close/loss/SGD"]
COMM_METHODS = ("send", "recv_into", "irecv", "wait", "flush", "all_reduce", "all_reduce_",
                "all_gather", "broadcast", "broadcast_", "barrier", "all_gather_object",
                "gather_object")
CYCLE_OPS = (("f_relax", "relax"), ("c_relax", "relax"), ("restrict", "restrict"),
             ("correct", "correct"), ("forward_solve", "coarse"),
             ("nested_iteration", "relax"))


class Clock:
    """Exclusive wall time per label: a call's seconds minus its timed callees'."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.in_steps: dict[str, float] = defaultdict(float)  # problem.step, by phase
        self.stack: list[list[Any]] = []

    def push(self, label: str) -> None:
        self.stack.append([label, time.perf_counter(), 0.0])

    def pop(self) -> None:
        label, t0, inner = self.stack.pop()
        dt = time.perf_counter() - t0
        self.seconds[label] += dt - inner
        if self.stack:
            self.stack[-1][2] += dt

    def steps(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a problem's step) with its seconds tallied under the running phase
        (not taken out of it)."""

        def timed(*args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.in_steps[self.stack[-1][0] if self.stack else "?"] += (
                    time.perf_counter() - t)

        return timed

    def wrap(self, fn: Callable[..., Any], label: str | Callable[..., str | None]
             ) -> Callable[..., Any]:
        """``fn`` timed under ``label`` (or ``label(*args, **kw)``; ``None``: untimed)."""

        def timed(*args: Any, **kw: Any) -> Any:
            name = label(*args, **kw) if callable(label) else label
            if name is None:
                return fn(*args, **kw)
            self.push(name)
            try:
                return fn(*args, **kw)
            finally:
                self.pop()

        return timed


class Instruments:
    """The wrappers of one net's phases, installed for a profiled step and removed."""

    def __init__(self, net: LayerParallel, clock: Clock) -> None:
        self.net, self.clock = net, clock
        self.patched: list[tuple[Any, str]] = []
        self.saved: list[tuple[Any, str, Any]] = []

    def _instance(self, obj: Any, name: str, label: Any) -> None:
        setattr(obj, name, self.clock.wrap(getattr(obj, name), label))
        self.patched.append((obj, name))

    def _global(self, obj: Any, name: str, fn: Any) -> None:
        self.saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, fn)

    def install(self) -> None:
        net, clock = self.net, self.clock
        fwd_problem, fwd = net._fwd  # (problem, MGRIT) pairs the net keeps across batches
        adj_problem, adj = net._adj
        cycles = {id(fwd._cycler): "fwd", id(adj._cycler): "adj"}
        for tag, problem, solver in (("fwd", fwd_problem, fwd), ("adj", adj_problem, adj)):
            for name in ("step", "step_into"):  # (the steps written into the rows)
                setattr(problem, name, clock.steps(getattr(problem, name)))
                self.patched.append((problem, name))
            for name, label in CYCLE_OPS:
                self._instance(solver._cycler, name, f"{tag}_{label}")
        comms = [(net.comm, "wait_fwd"), (net._rcomm, "wait_adj")]
        for comm, label in comms:
            for name in COMM_METHODS:
                self._instance(comm, name, label)
        self._instance(net, "forward_solve", "fwd_other")
        self._instance(net, "adjoint_solve", "adj_other")
        for mod in (net.open, net.close):
            if mod is not None:
                self._instance(mod, "forward", "ends")
        residual = mgrit_module.fine_residual
        self._global(mgrit_module, "fine_residual", clock.wrap(
            residual, lambda cycle, *a: f"{cycles.get(id(cycle), 'other')}_residual"))
        for tag, problem in (("fwd", fwd_problem), ("adj", adj_problem)):
            for name in ("final_step", "final_step_into"):
                self._instance(problem, name, f"{tag}_final")

    def remove(self) -> None:
        for obj, name in reversed(self.patched):
            delattr(obj, name)
        for obj, name, fn in reversed(self.saved):
            setattr(obj, name, fn)
        self.patched, self.saved = [], []


def make_net(n: int, group: Any = None, starts: str = "warm/cold") -> LayerParallel:
    torch.manual_seed(0)
    fwd, bwd = starts.split("/")
    return conv_resnet(n, CHANNELS, 1, 10, 16, group=group, fwd_start=fwd, bwd_start=bwd,
                       **SOLVER)


def batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` consecutive batches of the digits training set (16x16, 1 channel)."""
    train, _ = digits_datasets(16, 1)
    x, y = train.tensors
    return [(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]) for i in range(count)]


class Trainer:
    """SGD steps of ``model`` over the batches in turn, timed as a whole and by phase."""

    def __init__(self, model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]
                 ) -> None:
        self.model, self.data, self.i = model, data, 0
        self.opt = torch.optim.SGD(model.parameters(), lr=LR)
        model.train()

    def step(self, clock: Clock | None = None) -> float:
        x, y = self.data[self.i % len(self.data)]
        self.i += 1
        mark = clock.push if clock is not None else (lambda _: None)
        done = clock.pop if clock is not None else (lambda: None)
        t = time.perf_counter()
        mark("rest")
        out = self.model(x)
        mark("ends")
        loss = F.cross_entropy(out, y)
        self.opt.zero_grad(set_to_none=True)
        done()
        loss.backward()
        mark("ends")
        self.opt.step()
        done()
        done()
        return time.perf_counter() - t


def profile(net: LayerParallel, trainer: Trainer, serial: Trainer | None, warmup: int,
            reps: int, sync: Callable[[], None]) -> dict[str, Any]:
    """Warm-up, then ``reps`` rounds of: unprofiled step, profiled step, serial step."""
    for _ in range(warmup):
        sync()
        trainer.step()
        if serial is not None:
            serial.step()
    plain, timed, serial_s, phases = [], [], [], []
    for _ in range(reps):
        sync()
        plain.append(trainer.step())
        clock = Clock()
        tools = Instruments(net, clock)
        tools.install()
        sync()
        try:
            timed.append(trainer.step(clock))
        finally:
            tools.remove()
        phases.append({**clock.seconds,
                       **{f"{k}:steps": v for k, v in clock.in_steps.items()}})
        if serial is not None:
            serial_s.append(serial.step())
    report = net.report
    return {"plain_s": plain, "profiled_s": timed, "serial_s": serial_s, "phases": phases,
            "step_counts": report.step_counts, "timings": report.timings}


def minimum_counts(n: int, cfactor: int = 4) -> dict[str, list[int]]:
    """The method's minimum steps per level (ALGORITHMS.md section 4: 3 levels, F fine /
    FCF coarse, 2 forward / 1 adjoint iterations, skip on, fused sweeps), the final sweeps
    included."""
    n1, n2 = n // cfactor, n // cfactor**2
    return {"forward": [2 * n, 5 * n1 - 2 * n2, 3 * n2], "adjoint": [n, n1 - n2, n2]}


def worker(rank: int, world: int, n: int, warmup: int, reps: int, starts: str
           ) -> dict[str, Any]:
    """One rank of the 2-process cell (spawned by ``spawn_gloo``, 1 thread)."""
    import torch.distributed as dist

    net = make_net(n, "world", starts)
    trainer = Trainer(net, batches(warmup + reps + 1))
    trainer.step()  # the solvers are built by the first step
    return profile(net, trainer, None, warmup, reps, dist.barrier)


def summarise(n: int, world: int, rank: int, raw: dict[str, Any], step_s: list[float],
              serial_s: float) -> dict[str, Any]:
    """Medians of one rank's phases (ms and share of its median profiled step)."""
    keys = [k for k, _, _ in PHASES]
    med = {k: 1e3 * statistics.median(p.get(k, 0.0) for p in raw["phases"]) for k in keys}
    step = 1e3 * statistics.median(raw["profiled_s"])
    groups = {g: sum(med[k] for k, gg, _ in PHASES if gg == g) for g in GROUPS}
    in_steps = {k: 1e3 * statistics.median(p.get(f"{k}:steps", 0.0) for p in raw["phases"])
                for k in keys if k.startswith(("fwd", "adj"))}
    lp = 1e3 * statistics.median(step_s)
    return {
        "steps": n, "ranks": world, "rank": rank,
        "step_ms": lp, "profiled_step_ms": step,
        "unprofiled_step_ms": 1e3 * statistics.median(raw["plain_s"]),
        "serial_step_ms": 1e3 * serial_s, "lp_over_serial": lp / (1e3 * serial_s),
        "phases_ms": med, "groups_ms": groups,
        "in_problem_step_ms": in_steps,  # of each MGRIT phase, inside problem.step
        "groups_share": {g: v / step for g, v in groups.items()},
        "solver_step_ms": {k: 1e3 * v for k, v in raw["timings"].items()
                           if k.endswith("_steps")},
        "step_counts": raw["step_counts"],
    }


def run_cell(n: int, world: int, warmup: int, reps: int, serial_cache: dict[int, float],
             starts: str = "warm/cold") -> list[dict[str, Any]]:
    if world == 1:
        torch.set_num_threads(1)
        data = batches(warmup + reps + 1)
        net = make_net(n, None, starts)
        trainer, serial = Trainer(net, data), Trainer(make_net(n).serial(), data)
        trainer.step()
        serial.step()
        raw = profile(net, trainer, serial, warmup, reps, lambda: None)
        serial_cache[n] = statistics.median(raw["serial_s"])
        return [summarise(n, 1, 0, raw, raw["plain_s"], serial_cache[n])]
    ranks = spawn_gloo(worker, world, n, warmup, reps, starts, timeout=600.0)
    slowest = [max(ts) for ts in zip(*(r["plain_s"] for r in ranks), strict=True)]
    if n not in serial_cache:
        run_cell(n, 1, warmup, reps, serial_cache, starts)
    return [summarise(n, world, r, raw, slowest, serial_cache[n]) for r, raw in enumerate(ranks)]


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [f"N={r['steps']} P={r['ranks']}" + (f" r{r['rank']}" if r["ranks"] > 1 else "")
            for r in rows]
    w = max(17, *map(len, cols))
    print(f"\n{'phase (exclusive ms, % of step)':<34}" + "".join(f"{c:>{w}}" for c in cols))

    def line(name: str, vals: list[float], shares: list[float] | None = None) -> None:
        cells = [f"{v:8.1f}" + (f" {100 * s:5.1f}%" if shares else "") for v, s in
                 zip(vals, shares or vals, strict=True)]
        print(f"{name:<34}" + "".join(f"{c:>{w}}" for c in cells))

    for g in GROUPS:
        line(g, [r["groups_ms"][g] for r in rows], [r["groups_share"][g] for r in rows])
        for k, gg, _ in PHASES:
            if gg == g:
                line(f"  {k}", [r["phases_ms"][k] for r in rows],
                     [r["phases_ms"][k] / r["profiled_step_ms"] for r in rows])
    line("profiled step (this rank)", [r["profiled_step_ms"] for r in rows])
    line("unprofiled LP step (slowest rank)", [r["step_ms"] for r in rows])
    line("net.timings: in the solvers' steps", [sum(r["solver_step_ms"].values()) for r in rows])
    for tag, g in (("fwd", "forward MGRIT"), ("adj", "adjoint MGRIT")):
        line(f"{g}: inside problem.step", [sum(v for k, v in r["in_problem_step_ms"].items()
                                                if k.startswith(tag)) for r in rows])
    line("serial step (1 process)", [r["serial_step_ms"] for r in rows])
    print(f"{'LP / serial':<34}" + "".join(f"{r['lp_over_serial']:>{w}.2f}" for r in rows))
    print("\nsteps per level (this rank; final sweeps included, the adjoint's steps of a "
          "zero state left out) against the method's minimum (whole net):")
    for r in rows:
        c, m = r["step_counts"], minimum_counts(r["steps"])
        print(f"  N={r['steps']} P={r['ranks']} r{r['rank']}: forward {c['forward']}, "
              f"adjoint {c['adjoint']}; minimum forward {m['forward']}, adjoint {m['adjoint']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[32, 128], help="depths N")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="process counts")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds (default 2)")
    ap.add_argument("--reps", type=int, default=8, help="timed rounds (default 8)")
    ap.add_argument("--starts", default="warm/cold",
                    help="the forward/adjoint starts (default warm/cold, LayerParallel's)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    serial: dict[int, float] = {}
    for n in args.steps:
        for world in args.ranks:
            rows += run_cell(n, world, args.warmup, args.reps, serial, args.starts)
            print(f"  N={n} P={world} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    print_table(rows)
    for r in rows:
        r["minimum_step_counts"] = minimum_counts(r["steps"])
    write_json(args.json, {
        "machine": machine_info(threads_per_process=1),
        "setting": {"data": "digits 16x16", "channels": CHANNELS, "batch": BATCH,
                    "optimizer": f"SGD lr={LR}", **SOLVER, "relax": "F fine / FCF coarse",
                    "starts": args.starts,
                    "warmup": args.warmup, "reps": args.reps},
        "phases": [{"key": k, "group": g, "inside": d} for k, g, d in PHASES],
        "rows": rows,
    }, indent=1)


if __name__ == "__main__":
    main()
