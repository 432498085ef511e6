"""Scaling lab: the real solvers on real Gloo processes, each step's compute a sleep.

This SIMULATES the parallel structure: compute is free (a sleeping step leaves the cores
idle, so 16 or 32 processes fit on this 2-core machine), while the messages, the
collectives and the solvers' bookkeeping are real. What it measures is each solver's
critical path, messaging and overhead, not the speed of any network.

Three cases, on P = 1, 2, 4, ... processes (``--ranks``):
  layer-parallel  ``LayerParallel`` with N sleeping step layers (forward ``t_f``, backward
                  ``2 t_f``, state (2, 4)), 3 levels, cfactor 4, F/FCF, 2 forward and 1
                  adjoint iterations; one training step = forward + ``loss.backward()``;
                  serial = ``net.serial()`` with the same sleeps;
  adder           MGRIT over the 12-bit adder's training steps (the task's settings and
                  its real iteration count at N; each optimizer step a sleep of ``t``);
  heat            MGRIT on Heat1D (3 levels, cfactor 4, FCF, its real iteration count).
Each point: the median wall time of ``--reps`` repeats (the slowest rank), the cost
model's prediction (``core.costmodel``, ``layerparallel.costmodel``: the same solver
replayed on a virtual clock, with the latency, bandwidth and per-step bookkeeping
measured here), the critical path (the model with free messages and bookkeeping), and
the speedup over serial stepping with the same sleeps. Also: the hierarchy the model's
chooser picks for N = 128 on 16 ranks, measured against the default, and the model's
predictions for N = 1024 on 64 and 256 GPUs.

    python benchmarks/scaling_lab.py --json benchmarks/results/scaling_lab.json \\
        --plot benchmarks/results/scaling_lab.png
    python benchmarks/scaling_lab.py --quick
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

from common import log, machine_info, ping_pong, write_json  # this directory is on sys.path

SIMULATED = ("SIMULATED: every step's compute is a sleep (compute is free); the processes, "
             "messages, collectives and solver bookkeeping are real")
NCCL = {  # published small-message point-to-point latencies (nccl-tests sendrecv_perf)
    "nccl-intra-node": (3.7e-6, "NCCL sendrecv_perf, 1 KB on 4 H800 over NVLink: 3.7 us "
                        "(github.com/NVIDIA/nccl/issues/1984)"),
    "nccl-inter-node": (31e-6, "NCCL sendrecv_perf, 256 B-8 KB between two nodes (A40): "
                        "31-34 us (github.com/NVIDIA/nccl-tests/issues/214)"),
}
MB_PER_PROCESS = 350  # what a worker holding torch needs, with margin

# -------------------------------------------------------------------- sleeping compute

NAP: dict[str, Any] = {"on": True, "calls": {}, "slept": {}}


def nap(seconds: float, kind: str) -> None:
    """The compute of one step: a sleep (skipped while the lab warms up or measures the
    bookkeeping); counted by ``kind``, with the time really slept."""
    NAP["calls"][kind] = NAP["calls"].get(kind, 0) + 1
    if NAP["on"] and seconds > 0:
        t = time.perf_counter()
        time.sleep(seconds)
        NAP["slept"][kind] = NAP["slept"].get(kind, 0.0) + time.perf_counter() - t


class SleepFn(torch.autograd.Function):
    """``x * w`` that sleeps ``t`` in forward and ``2 t`` in backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, t: float) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.t = t
        return x * w

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, w = ctx.saved_tensors
        nap(2 * ctx.t, "backward")
        return g * w, (g * x).sum().reshape(w.shape), None


class SleepLayer(nn.Module):
    """A step layer whose compute is a sleep: F(x) = w x, forward ``t``, backward ``2t``."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = float(t)
        self.w = nn.Parameter(torch.full((1,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nap(self.t, "forward_grad" if torch.is_grad_enabled() else "forward_no_grad")
        return SleepFn.apply(x, self.w, self.t)


def sleep_problem(base: Any, cost: float) -> Any:
    """``base`` (a Problem) with each step replaced by a sleep of ``cost`` (the state is
    the real one, so messages have their real size; the values stay put)."""
    from torchpint.core import Problem

    class SleepProblem(Problem):
        def __init__(self) -> None:
            super().__init__(base.nt, base.t_start, base.t_stop)

        def initial_state(self) -> torch.Tensor:
            return base.initial_state()

        def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
            nap(cost, "step")
            return u.clone()

    return SleepProblem()


def base_problem(case: str, n: int) -> tuple[Any, dict[str, Any]]:
    """The real problem of an MGRIT case and its solver settings (no stopping rule)."""
    if case == "adder":
        from torchpint.training import TrainingConfig, TrainingProblem, make_task

        task = make_task("adder", 0)
        cfg = TrainingConfig.build(None, steps=n, **task.defaults)
        opts = {k: v for k, v in cfg.mgrit_options().items() if k not in ("tol", "max_iter")}
        return TrainingProblem(task.model, task.loss_fn, task.data, config=cfg), opts
    from torchpint.problems import Heat1D

    return Heat1D(nt=n), {"levels": 3, "cfactor": 4, "relax": "FCF"}


def real_iterations(case: str, n: int) -> int:
    """The iterations the real solver needs at N (to its default tolerance): the lab then
    runs exactly that many with sleeping steps."""
    from torchpint.core import MGRIT

    problem, opts = base_problem(case, n)
    if case == "adder":
        opts = {**opts, "tol": problem.config.tolerance, "max_iter": problem.config.max_iter}
    return MGRIT(problem, **opts).solve().iterations


# -------------------------------------------------------------------- the workers
# -------------------------------------------------------------------- the workers


def timed(comm: Any, fn: Any, reps: int) -> list[float]:
    """Seconds of ``fn()`` per repeat, the slowest rank's (all start after a barrier)."""
    out = []
    for _ in range(reps):
        comm.barrier("lab start")
        t = time.perf_counter()
        fn()
        dt = torch.tensor([time.perf_counter() - t], dtype=torch.float64)
        out.append(float(comm.all_reduce(dt, "max", "lab timing")))
    return out


def summed(comm: Any, obj: Any) -> Any:
    """``obj`` (a list of ints or a dict of them) summed over the ranks."""
    parts = comm.all_gather_object(obj, "lab counts")
    if isinstance(obj, dict):
        return {k: sum(p.get(k, 0) for p in parts) for k in sorted(set().union(*parts))}
    return [sum(col) for col in zip(*parts, strict=True)]


def slept(comm: Any, fn: Any, reps: int) -> tuple[list[float], dict[str, float]]:
    """:func:`timed` with the sleeps on, and the mean seconds a nap really slept, per kind
    (over all ranks: under load a sleep ends late)."""
    NAP["on"], NAP["calls"], NAP["slept"] = True, {}, {}
    times = timed(comm, fn, reps)
    calls, total = summed(comm, NAP["calls"]), comm.all_gather_object(NAP["slept"], "naps")
    return times, {k: sum(p.get(k, 0.0) for p in total) / calls[k] for k in calls if calls[k]}


def lp_case(comm: Any, plan: dict[str, Any], spec: dict[str, Any], first: bool
            ) -> dict[str, Any]:
    """Layer-parallel training steps: hierarchy ``spec["h"]``, forward sleep ``spec["t_f"]``
    (``first``: on one process, also the zero-cost steps and the serial baseline)."""
    from torchpint.layerparallel import LayerParallel

    (levels, cfactor, relax), t_f = spec["h"], spec["t_f"]
    torch.manual_seed(0)
    net = LayerParallel(nn.Identity(), lambda k: SleepLayer(t_f), nn.Identity(),
                        num_steps=plan["n"], levels=levels, cfactor=cfactor, relax=tuple(relax),
                        fwd_iterations=2, bwd_iterations=1, group="world")
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))

    def step(model: nn.Module = net) -> None:
        for p in model.parameters():
            p.grad = None
        model(x).pow(2).sum().backward()

    NAP["on"] = False
    step()
    step()  # warm: solvers built, shapes agreed, receive orders known
    out: dict[str, Any] = dict(spec)
    if first and comm.size == 1:  # the bookkeeping of warm zero-cost steps
        out["zero_cost_s"] = statistics.median(timed(comm, step, 5))
    NAP["calls"] = {}
    step()
    out["calls"] = summed(comm, NAP["calls"])
    out["counts"] = {k: summed(comm, v) for k, v in net.step_counts.items()}
    out["times_s"], out["nap_s"] = slept(comm, step, plan["reps"])
    if first and comm.size == 1:
        seq = net.serial()
        NAP["on"] = False
        step(seq)
        out["serial_s"], _ = slept(comm, lambda: step(seq), plan["reps"])
    return out


def mgrit_case(comm: Any, plan: dict[str, Any], case: str) -> dict[str, Any]:
    """MGRIT solves of a sleeping copy of the case's problem (on one process, also the
    zero-cost solves and serial stepping)."""
    from torchpint.core import MGRIT

    n, cost = plan["n"], plan["cost"]
    base, opts = base_problem(case, n)
    problem = sleep_problem(base, cost)
    solver = MGRIT(problem, group="world", iterations=plan["iterations"][case], **opts)
    NAP["on"] = False
    solver.solve()
    out: dict[str, Any] = {"options": opts, "iterations": plan["iterations"][case]}
    if comm.size == 1:
        out["zero_cost_s"] = statistics.median(timed(comm, solver.solve, 5))
    out["counts"] = summed(comm, solver.solve().step_counts)
    out["times_s"], out["nap_s"] = slept(comm, solver.solve, plan["reps"])
    if comm.size == 1:
        def serial() -> None:
            u = problem.initial_state()
            for i in range(n):
                u = problem.step(u, i, 0)

        out["serial_s"], _ = slept(comm, serial, plan["reps"])
    return out


def latencies(rank: int) -> dict[str, float]:
    """One-way seconds of a message between ranks 0 and 1 (Gloo on loopback), small and
    1 MiB: the median of 10 rounds of 100 round trips each (the sizes interleaved, so a
    drift of the machine's load hits both), after a warm-up round."""
    sizes = {"small_8_float64": 8, "large_131072_float64": 131072}
    rounds: dict[str, list[float]] = {k: [] for k in sizes}
    for r in range(11):
        for name, size in sizes.items():
            one_way = ping_pong(rank, torch.zeros(size, dtype=torch.float64), 100)
            if r:
                rounds[name].append(one_way)
    return {k: statistics.median(v) for k, v in rounds.items()}


def worker(rank: int, world: int, plan: dict[str, Any]) -> dict[str, Any] | None:
    """One rank of a lab run of ``world`` processes: every case of the plan in turn."""
    from torchpint.runtime.comm import GroupComm

    comm = GroupComm()
    out: dict[str, Any] = {}
    if world == 2:  # before and after the cases: a burst of the machine's load hits one
        out["ping_pong"] = [latencies(rank)]
    if "layer-parallel" in plan["cases"]:
        out["layer-parallel"] = [lp_case(comm, plan, s, i == 0) for i, s in enumerate(plan["lp"])]
    for case in ("adder", "heat"):
        if case in plan["cases"]:
            out[case] = mgrit_case(comm, plan, case)
    if world == 2:
        out["ping_pong"].append(latencies(rank))
    return out if rank == 0 else None


def spawn(p: int, plan: dict[str, Any]) -> dict[str, Any]:
    """The lab on ``p`` Gloo processes (one retry: a start of many processes on 2 cores
    sometimes loses a connection)."""
    from torchpint.testing import spawn_gloo

    for attempt in (1, 2):
        try:
            return spawn_gloo(worker, p, plan, timeout=600.0)[0]
        except Exception as err:  # noqa: BLE001
            if attempt == 2:
                raise
            log(f"P={p}: the start failed ({type(err).__name__}: {err}); once more")
    raise AssertionError("unreachable")


# -------------------------------------------------------------------- the model


def sleep_seconds(t: float, n: int = 40) -> float:
    """The median seconds ``time.sleep(t)`` really takes here (the steps' modelled cost)."""
    got = []
    for _ in range(n):
        s = time.perf_counter()
        time.sleep(t)
        got.append(time.perf_counter() - s)
    return statistics.median(got)


def memory_mb() -> float:
    """Available memory (MemAvailable), in MB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return math.inf


class Lab:
    """The modelled side of the lab: the measured sleeps (a step's compute), the
    layer-parallel structure, and the machine parameters measured by the runs."""

    def __init__(self, n: int, t: float, sleeps: list[float]) -> None:
        self.n, self.t = n, t  # the layers or steps, the base sleep
        self.sleeps = {round(s, 9): sleep_seconds(s) for s in sorted(set(sleeps))}
        self.starts = {"fwd_start": "warm", "bwd_start": "cold"}  # LayerParallel's defaults
        self.params: dict[str, Any] = {}

    def sleep(self, t: float) -> float:
        """The seconds a sleep of ``t`` really takes here."""
        return self.sleeps[round(t, 9)]

    def lp_costs(self, t_f: float) -> dict[str, float]:
        return {"forward": self.sleep(t_f), "backward": self.sleep(2 * t_f)}

    def machine(self, case: str) -> Any:
        """The machine measured here, with ``case``'s bookkeeping per step."""
        from torchpint.core.costmodel import Machine

        p = self.params
        return Machine(p["latency_s"], p["bandwidth_Bps"], p["overhead_s"][case], "measured")

    def lp(self, p: int, h: list[Any], t_f: float, machine: Any = None,
           n: int | None = None) -> Any:
        """The model of a layer-parallel training step (default machine: free)."""
        from torchpint.core.costmodel import Machine
        from torchpint.layerparallel import layer_parallel_time

        return layer_parallel_time(n or self.n, p, **self.lp_costs(t_f), levels=h[0],
                                   cfactor=h[1], relax=tuple(h[2]),
                                   machine=machine or Machine(), **self.starts)

    def mgrit(self, case: str, p: int, run: dict[str, Any], machine: Any = None) -> Any:
        """The model of an MGRIT case's solve (default machine: free)."""
        from torchpint.core.costmodel import Machine, mgrit_time

        base, _ = base_problem(case, self.n)
        return mgrit_time(self.n, p, costs=self.sleep(self.t), state=base.initial_state(),
                          iterations=run["iterations"], machine=machine or Machine(),
                          **run["options"])

    def match_structure(self, run: dict[str, Any], h: list[Any]) -> dict[str, Any]:
        """Whether the model's step counts and layer calls equal the real 1-process run's
        (the model replays LayerParallel's training step: fused final sweeps, the
        adjoint's steps of zero states skipped)."""
        real = {"forward_counts": run["counts"]["forward"],
                "adjoint_counts": run["counts"]["adjoint"], "calls": run["calls"]}
        d = self.lp(1, h, self.t).detail
        calls = {k: real["calls"].get(k, 0) for k in d["calls"]}
        same = d["forward_counts"] == real["forward_counts"] and calls == d["calls"] \
            and d["adjoint_counts"] == real["adjoint_counts"]
        return {**self.starts, "matched": same, "real": real, "model": d}

    def measure(self, runs: dict[int, dict[str, Any]], default: list[Any]) -> dict[str, Any]:
        """Latency and bandwidth from the 2-process ping-pong; each case's bookkeeping per
        step from its 1-process run: the wall time beyond the modelled sleeps, over the
        steps the model charges (with the sleeps: ``overhead_s``; warm zero-cost steps,
        which leave out the cost of waking from a sleep: ``zero_cost_overhead_s``)."""
        both = runs[2]["ping_pong"]  # the quieter of the two measurements
        pp = min(both, key=lambda m: m["small_8_float64"])
        small, large = 8 * 8, 131072 * 8
        t_s, t_l = pp["small_8_float64"], pp["large_131072_float64"]
        # no measurable size effect (the 1 MiB message as fast as the small one): no
        # bandwidth term (the latency, a process woken by its message, dominates)
        bw = (large - small) / (t_l - t_s) if t_l > t_s else math.inf
        out = self.params = {"ping_pong_one_way_s": both, "bandwidth_Bps": bw,
                             "latency_s": max(0.0, t_s - small / bw), "overhead_s": {},
                             "zero_cost_overhead_s": {}}
        one = runs[1]
        for case in [c for c in ("layer-parallel", "adder", "heat") if c in one]:
            r = one[case][0] if case == "layer-parallel" else one[case]
            if case == "layer-parallel":
                units = sum(map(sum, r["counts"].values()))
                free = self.lp(1, default, self.t).seconds
            else:
                units, free = sum(r["counts"]), self.mgrit(case, 1, r).seconds
            out["overhead_s"][case] = max(0.0, statistics.median(r["times_s"]) - free) / units
            out["zero_cost_overhead_s"][case] = r["zero_cost_s"] / units
        return out


def choose(lab: Lab, p: int) -> tuple[dict[str, Any], list[Any]]:
    """The chooser's hierarchy for the lab's layer-parallel case on ``p`` ranks (the
    machine measured here), as a report and as a lab hierarchy."""
    from torchpint.layerparallel import choose_layer_parallel

    c = choose_layer_parallel(lab.n, p, **lab.lp_costs(lab.t),
                              machine=lab.machine("layer-parallel"), **lab.starts)
    log(f"chooser for N={lab.n}, P={p}: {c.best} ({c.seconds:.3f} s modelled)")
    pick = [c.best.levels, c.best.cfactor, list(c.best.relax)]
    report = {"procs": p, "n": lab.n, "pick": str(c.best), "pick_h": pick,
              "pick_model_s": c.seconds,
              "rule": "coarsest step m^(L-1) h <= the default's 16 h and dividing N; FCF on "
                      "every relaxing coarse level, F or FCF on the fine one; 2 forward / 1 "
                      "adjoint iterations",
              "candidates": [{"hierarchy": str(h), "model_s": s} for h, s in c.table]}
    return report, pick


def predict_large(lab: Lab, n: int, ranks: tuple[int, ...]) -> list[dict[str, Any]]:
    """The model's layer-parallel step for ``n`` layers on ``ranks`` GPUs (the lab's step
    costs and bookkeeping) with the latency measured here (Gloo on loopback), published
    NCCL latencies, and free messages; the default hierarchy and the chooser's pick."""
    from torchpint.core.costmodel import Machine
    from torchpint.layerparallel import choose_layer_parallel

    o = lab.params["overhead_s"]["layer-parallel"]
    machines = {"gloo-loopback (measured here)": lab.machine("layer-parallel"),
                **{f"{k} (published)": Machine(v[0], math.inf, o, k) for k, v in NCCL.items()},
                "critical path (free messages and bookkeeping)": Machine()}
    costs = lab.lp_costs(lab.t)
    serial = n * (costs["forward"] + costs["backward"])
    out = []

    def add(p: int, name: str, m: Any, what: str, t: float) -> None:
        out.append({"n": n, "gpus": p, "latency": name, "latency_s": m.latency, "model": what,
                    "predicted_s": t, "serial_compute_s": serial, "speedup": serial / t})
        log(f"N={n} P={p} {name} {what}: {t:.3f} s ({serial / t:.2f}x)")

    for p in ranks:
        for name, m in machines.items():
            add(p, name, m, "levels=3 cfactor=4 relax=F,FCF",
                lab.lp(p, [3, 4, ["F", "FCF"]], lab.t, m, n).seconds)
        name = "nccl-intra-node (published)"
        m = machines[name]
        c = choose_layer_parallel(n, p, **costs, machine=m, **lab.starts)
        add(p, name, m, f"chooser's pick: {c.best}", c.seconds)
    return out


def accuracy(n: int, hierarchies: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Real compute, one process: conv_resnet (4 channels, ``n`` layers) on a batch of 16
    random 16x16 images, the first batch's output and parameter gradient against exact
    backprop (``net.serial()``), per hierarchy and T = 1, 4. The chooser's rule assumes
    equal accuracy; this checks it where the lab cannot (its steps compute nothing)."""
    import torch.nn.functional as F

    from torchpint.layerparallel import conv_resnet

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)
    out = []
    for name, (levels, cfactor, relax) in hierarchies.items():
        for T in (1.0, 4.0):
            torch.manual_seed(0)
            net = conv_resnet(n, 4, 1, 10, 16, T=T, levels=levels, cfactor=cfactor,
                              relax=tuple(relax), fwd_iterations=2, bwd_iterations=1)
            res = []
            for model in (net, net.serial()):  # the serial network shares the layers
                for p in model.parameters():
                    p.grad = None
                o = model(x)
                F.cross_entropy(o, y).backward()
                res.append((o.detach(), torch.cat([p.grad.reshape(-1)
                                                   for p in model.parameters()])))
            (o, gr), (o_ref, g_ref) = res
            out.append({"hierarchy": name, "T": T,
                        "output_rel_error": float((o - o_ref).norm() / o_ref.norm()),
                        "gradient_rel_error": float((gr - g_ref).norm() / g_ref.norm())})
            log(f"accuracy {name} T={T}: {out[-1]}")
    return out


# -------------------------------------------------------------------- the report


def points(lab: Lab, runs: dict[int, dict[str, Any]], plan: dict[str, Any]
           ) -> list[dict[str, Any]]:
    """Every measured point with the model's prediction and the critical path."""
    rows = []
    lp_serial = statistics.median(runs[1]["layer-parallel"][0]["serial_s"]) \
        if "layer-parallel" in plan["cases"] else None
    for p, run in sorted(runs.items()):
        for case in plan["cases"]:
            m = lab.machine(case)
            items = run[case] if case == "layer-parallel" else [run[case]]
            for r in items:
                if case == "layer-parallel":
                    model, crit = lab.lp(p, r["h"], r["t_f"], m), lab.lp(p, r["h"], r["t_f"])
                    label = f"levels={r['h'][0]} cfactor={r['h'][1]} relax={','.join(r['h'][2])}"
                    ok = model.detail["forward_counts"] == r["counts"]["forward"] and \
                        model.detail["adjoint_counts"] == r["counts"]["adjoint"]
                    role, cost = r["role"], r["t_f"]
                    serial = lp_serial if cost == lab.t else None
                else:
                    model, crit = lab.mgrit(case, p, r, m), lab.mgrit(case, p, r)
                    label = ", ".join(f"{k}={v}" for k, v in r["options"].items())
                    label += f", iterations={r['iterations']}"
                    ok, role, cost = model.step_counts == r["counts"], "default", lab.t
                    serial = statistics.median(runs[1][case]["serial_s"])
                meas = statistics.median(r["times_s"])
                rows.append({
                    "case": case, "procs": p, "role": role, "cost_ms": 1e3 * cost,
                    "hierarchy": label, "measured_s": meas, "repeats_s": r["times_s"],
                    "model_s": model.seconds, "critical_path_s": crit.seconds,
                    "serial_s": serial, "speedup": serial and serial / meas,
                    "model_speedup": serial and serial / model.seconds,
                    "critical_path_speedup": serial and serial / crit.seconds,
                    "model_error": model.seconds / meas - 1.0,
                    "over_critical_path": meas / crit.seconds - 1.0,
                    "counts_match_model": ok, "messages_model": model.messages,
                    "nap_s": r["nap_s"], "calibration_point": p == 1 and role == "default",
                })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The printed table: one line per point."""
    def x(v: float | None) -> str:
        return f"{v:>7.2f}x" if v else f"{'-':>8}"

    head = (f"{'case':15} {'P':>3} {'sleep':>6} {'measured':>9} {'model':>9} {'err':>7} "
            f"{'crit.path':>9} {'meas/crit':>9} {'speedup':>8} {'model':>8} {'crit':>8}"
            "  role: hierarchy")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['case']:15} {r['procs']:>3} {r['cost_ms']:>4.0f}ms {r['measured_s']:>8.3f}s "
            f"{r['model_s']:>8.3f}s {100 * r['model_error']:>+6.1f}% "
            f"{r['critical_path_s']:>8.3f}s {1 + r['over_critical_path']:>9.2f} "
            f"{x(r['speedup'])} {x(r['model_speedup'])} {x(r['critical_path_speedup'])}"
            f"  {r['role']}: {r['hierarchy']}")
    return "\n".join(lines)


def defaults(rows: list[dict[str, Any]], case: str) -> list[dict[str, Any]]:
    """A case's points of the default settings (measured at every P)."""
    return [r for r in rows if r["case"] == case and r["role"] == "default"]


def plot(path: str, rows: list[dict[str, Any]], cases: list[str]) -> None:
    """Time per step or solve against P for each case (measured, model, critical path,
    serial), and the speedups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for ax, case in zip(axes.flat, cases, strict=False):
        rs = defaults(rows, case)
        ps = [r["procs"] for r in rs]
        ax.plot(ps, [r["measured_s"] for r in rs], "o-", label="measured (Gloo processes)")
        ax.plot(ps, [r["model_s"] for r in rs], "s--", label="cost model")
        ax.plot(ps, [r["critical_path_s"] for r in rs], ":", label="critical path")
        ax.axhline(rs[0]["serial_s"], color="grey", lw=1, label="serial, same sleeps")
        what = "training step" if case == "layer-parallel" else "solve"
        ax.set(xscale="log", yscale="log", xlabel="processes P", ylabel="seconds",
               title=f"{case}: one {what} ({rs[0]['cost_ms']:g} ms sleeps)")
        ax.set_xticks(ps, [str(p) for p in ps])
        ax.legend(fontsize=7)
    ax = axes.flat[3]
    for case in cases:
        rs = defaults(rows, case)
        line = ax.plot([r["procs"] for r in rs], [r["speedup"] for r in rs], "o-", label=case)
        ax.plot([r["procs"] for r in rs], [r["critical_path_speedup"] for r in rs], ":",
                color=line[0].get_color())
    ax.axhline(1, color="grey", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="processes P", ylabel="speedup over serial",
           title="speedup (solid: measured, dotted: critical path)")
    ps = sorted({r["procs"] for r in rows})
    ax.set_xticks(ps, [str(p) for p in ps])
    ax.legend(fontsize=7)
    fig.suptitle("Scaling lab. " + SIMULATED, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def targets(rows: list[dict[str, Any]], check_p: int) -> dict[str, Any]:
    """The project's targets, as measured (reported, not enforced)."""
    worst = max((r for r in rows if not r["calibration_point"]),
                key=lambda r: abs(r["model_error"]), default=rows[0])
    out: dict[str, Any] = {"model_within_15pct_of_every_point": {
        "worst_error": worst["model_error"],
        "at": f"{worst['case']} P={worst['procs']} {worst['cost_ms']:g} ms {worst['role']}",
        "met": all(abs(r["model_error"]) <= 0.15 for r in rows)}}
    for r in defaults(rows, "layer-parallel"):
        if r["procs"] == check_p:
            out[f"layer_parallel_P{check_p}_speedup_ge_3.5"] = {
                "speedup": r["speedup"], "critical_path_speedup": r["critical_path_speedup"],
                "met": r["speedup"] >= 3.5}
            out[f"layer_parallel_P{check_p}_within_15pct_of_critical_path"] = {
                "over_critical_path": r["over_critical_path"],
                "met": r["over_critical_path"] <= 0.15}
    return out


# -------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32],
                   help="process counts (1 and 2 always run: serial, bookkeeping, latency; "
                        "a count the free memory cannot hold is skipped)")
    p.add_argument("--steps", type=int, default=128, help="N, layers / time steps (128)")
    p.add_argument("--cost-ms", type=float, default=4.0,
                   help="a step's sleep: a layer's forward (its backward sleeps twice it), "
                        "an MGRIT step (4 ms)")
    p.add_argument("--reps", type=int, default=3,
                   help="timed repeats at P=2 (3); P=1, the longest runs, one fewer; P>=4, "
                        "short and noisier, two more")
    p.add_argument("--cases", nargs="+", default=["layer-parallel", "adder", "heat"],
                   choices=["layer-parallel", "adder", "heat"])
    p.add_argument("--check-ranks", type=int, default=16,
                   help="where the chooser's pick and 2x, 4x sleeps are measured (16)")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--plot", default="", help="draw the figure here (PNG)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run in seconds: ranks 1 2, N = 16, 1 ms, 1 repeat; no extra "
                        "runs at --check-ranks, no N = 1024 predictions")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    if args.quick:
        args.ranks, args.steps, args.cost_ms, args.reps = [1, 2], 16, 1.0, 1
    n, t = args.steps, args.cost_ms / 1e3
    ranks = sorted(set(args.ranks) | {1, 2})
    check_p = args.check_ranks if args.check_ranks in ranks else max(ranks)
    lp_on = "layer-parallel" in args.cases
    print(SIMULATED)
    log(f"N={n}, sleeps {args.cost_ms} ms (layer backward {2 * args.cost_ms} ms), ranks {ranks}")
    scales = [1] if args.quick else [1, 2, 4]
    lab = Lab(n, t, [k * t for k in scales] + [2 * k * t for k in scales])
    iterations = {c: real_iterations(c, n) for c in ("adder", "heat") if c in args.cases}
    log(f"sleeps really take {lab.sleeps}; real iterations at N={n}: {iterations}")
    default = [3, 4, ["F", "FCF"]]
    plan = {"n": n, "cost": t, "cases": args.cases, "iterations": iterations,
            "lp": [{"h": default, "t_f": t, "role": "default"}]}
    runs: dict[int, dict[str, Any]] = {}
    skipped, chooser, structure = [], None, None
    for p in ranks:
        need = p * MB_PER_PROCESS
        if need > 0.8 * memory_mb():
            log(f"P={p} skipped: needs about {need} MB, {memory_mb():.0f} MB available")
            skipped.append(p)
            continue
        lp = list(plan["lp"])
        if p == check_p and lp_on and lab.params and not args.quick:
            chooser, pick = choose(lab, p)
            lp += [{"h": pick, "t_f": t, "role": "chooser's pick"}] if pick != default else []
            lp += [{"h": default, "t_f": k * t, "role": f"sleeps x{k}"} for k in scales[1:]]
        log(f"P={p}: spawning {p} Gloo processes")
        ts = time.perf_counter()
        reps = max(1, args.reps - 1) if p == 1 else args.reps + 2 * (p >= 4)
        runs[p] = spawn(p, {**plan, "lp": lp, "reps": reps})
        log(f"P={p}: done in {time.perf_counter() - ts:.1f} s")
        if p == 1 and lp_on:
            structure = lab.match_structure(runs[1]["layer-parallel"][0], default)
            log(f"layer-parallel: the model's step counts and layer calls equal the real "
                f"run's: {structure['matched']}")
        if p == 2:
            params = lab.measure(runs, default)
            log(f"latency {params['latency_s'] * 1e6:.1f} us, bandwidth "
                f"{params['bandwidth_Bps'] / 1e9:.2f} GB/s, bookkeeping per step "
                f"{ {k: round(v * 1e6, 1) for k, v in params['overhead_s'].items()} } us "
                f"(warm zero-cost steps: "
                f"{ {k: round(v * 1e6, 1) for k, v in params['zero_cost_overhead_s'].items()} })")
    if chooser is None and lp_on:  # check_p <= 2, or quick: the pick is not measured
        chooser, _ = choose(lab, check_p)
    rows = points(lab, runs, plan)
    print(table(rows))
    if chooser is not None:
        measured = [r for r in rows if r["case"] == "layer-parallel" and r["procs"] == check_p
                    and r["cost_ms"] == 1e3 * t]
        chooser["measured_s"] = {f"{r['role']}: {r['hierarchy']}": r["measured_s"]
                                 for r in measured}
        print(f"chooser (N={n}, P={check_p}): {chooser['pick']}; measured: "
              + ", ".join(f"{h}: {s:.3f} s" for h, s in chooser["measured_s"].items()))
    if chooser is not None and not args.quick:
        chooser["accuracy"] = accuracy(n, {"default " + str(default): default,
                                           "pick " + chooser["pick"]: chooser["pick_h"]})
    goals = targets(rows, check_p)
    for k, v in goals.items():
        print(f"target {k}: {v}")
    large = [] if args.quick or not lp_on else predict_large(lab, 1024, (64, 256))
    for r in large:
        print(f"N={r['n']} on {r['gpus']} GPUs, {r['latency']}, {r['model']}: "
              f"{r['predicted_s']:.3f} s ({r['speedup']:.2f}x over {r['serial_compute_s']:.2f} s)")
    wall = time.perf_counter() - t0
    print(f"lab wall time {wall:.0f} s")
    write_json(args.json, {
        "what": SIMULATED, "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(), "wall_s": wall,
        "settings": {"steps": n, "cost_ms": args.cost_ms, "backward_ms": 2 * args.cost_ms,
                     "reps": {"P=1": max(1, args.reps - 1), "P=2": args.reps,
                              "P>=4": args.reps + 2}, "ranks": ranks, "skipped_ranks": skipped,
                     "cases": args.cases, "iterations": iterations, "check_ranks": check_p,
                     "layer_parallel": "levels=3 cfactor=4 relax=F,FCF fwd_iterations=2 "
                                       "bwd_iterations=1, state (2, 4)"},
        "parameters": {**lab.params, "sleep_s": {str(k): v for k, v in lab.sleeps.items()},
                       "memory_mb_per_process_assumed": MB_PER_PROCESS},
        "layer_parallel_structure": structure, "points": rows, "targets": goals,
        "chooser": chooser, "nccl_sources": {k: v[1] for k, v in NCCL.items()},
        "predictions": large,
    }, strict=True)
    if args.plot:
        plot(args.plot, rows, args.cases)


if __name__ == "__main__":
    main()
