"""Parareal neural networks (Lee, Lee & Park, IEEE TNNLS 2022): ALGORITHMS.md section 3.

``f = Q o F_N o ... o F_1 o P`` becomes, with k parareal iterations (0-based chunks here)::

    u = P(x);  lam_0 = u;  lam_{j+1} = g_j = C_j(lam_j)        # coarse sweep
    repeat k times (iteration i = 0..k-1):
        f_j = F_j(lam_j) for all j >= i, at the same time     # the parallel work
        y_0..y_i = lam_0..lam_i;  y_{i+1} = f_i
        y_{j+1} = C_j(y_j) + f_j - g_j,  g_j <- C_j(y_j)       # coarse correction, j > i
        lam = y
    output = Q(lam_N)

Points ``0..i+1`` are exact after iteration i (parareal's finite termination), so the
correction is skipped there (``C_i(y_i) - g_i`` would be an exact zero) and chunks whose
input no longer changes are not recomputed. With k >= N the output is the original
network's; with C_j = F_j (the same modules) it is already after one iteration.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from torchpint.parareal.coarse import CoarseBuilder, build_coarse
from torchpint.parareal.executors import Executor, make_executor
from torchpint.parareal.split import (
    _Training,
    balanced_cuts,
    block_costs,
    check_cuts,
    decompose,
    flops,
    infer_example_input,
    measure_time,
)


def _on(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device of ``m``'s first parameter (modules may sit on several devices)."""
    p = next(m.parameters(), None)
    return x if p is None else x.to(p.device)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class PararealNetwork(nn.Module):
    """P, fine chunks F_j, coarse networks C_j and Q wired as k parareal iterations.

    Trains like any module. The fine chunks are the original model's modules (shared, not
    copied). ``set_executor`` chooses where the fine chunks run.
    """

    def __init__(
        self,
        pre: nn.Module,
        fine: Sequence[nn.Module],
        coarse: Sequence[nn.Module],
        post: nn.Module,
        iterations: int = 1,
        *,
        block_ranges: Sequence[tuple[int, int]] | None = None,
        example_input: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if len(fine) != len(coarse) or not fine:
            raise ValueError(
                f"need one coarse network per fine chunk, got {len(fine)} fine and "
                f"{len(coarse)} coarse"
            )
        if int(iterations) != iterations or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        self.pre = pre
        self.fine = nn.ModuleList(fine)
        self.coarse = nn.ModuleList(coarse)
        self.post = post
        self.iterations = int(iterations)
        n = len(fine)
        self.block_ranges = list(block_ranges) if block_ranges else [(j, j + 1) for j in range(n)]
        self._example = None if example_input is None else example_input.detach()
        self._costs: dict[str, Any] | None = None
        self.tuning: list[tuple[list[int], float]] = []  # set by parareal(balance="tune")
        self._executor: Executor = make_executor("serial")

    @property
    def parts(self) -> int:
        """The number of chunks N."""
        return len(self.fine)

    @property
    def executor(self) -> str:
        """The name of the current executor."""
        return self._executor.name

    def set_executor(self, name: str | Executor, devices: Any = None, group: Any = None) -> None:
        """Run the fine chunks with ``"serial"``, ``"threads"``, ``"devices"`` (one device
        per chunk; moves the modules) or ``"distributed"`` (rank j of ``group`` runs chunk j)."""
        ex = make_executor(name, devices=devices, group=group)
        ex.setup(self)
        self._executor = ex

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k = self.parts, min(self.iterations, self.parts)
        u = self.pre(x)
        lam = [u]
        if self._executor.overlaps_sweep and n > 1:
            f, g = self._executor.first_iteration(self, u)  # type: ignore[attr-defined]
        else:
            f, g = {}, {}
            for j in range(n):  # coarse sweep
                g[j] = self.coarse[j](lam[j])
                lam.append(g[j])
        for i in range(k):
            if i > 0 or not f:
                active = {j: lam[j] for j in range(i, n)}
                f.update(self._executor.run(self, active, {j: g[j] for j in active}))
            y = lam[: i + 1] + [f[i]]
            for j in range(i + 1, n):  # coarse correction, serial
                c = self.coarse[j](y[j])
                y.append(c + f[j] - g[j])
                g[j] = c
            lam = y
        return self.post(lam[n])

    def synchronize(self) -> None:
        """Make every replica identical under the distributed executor: each fine chunk's
        parameters and buffers come from the rank that trains it, P, C and Q from rank 0.
        A no-op for the other executors."""
        ex = self._executor
        if ex.name != "distributed":
            return
        group = ex.group  # type: ignore[attr-defined]

        def src(r: int) -> int:
            return dist.get_global_rank(group, r) if group is not None else r

        owners = [
            (src(j), list(c.parameters()) + list(c.buffers())) for j, c in enumerate(self.fine)
        ]
        shared = [
            t for m in (self.pre, self.coarse, self.post) for t in [*m.parameters(), *m.buffers()]
        ]
        owners.append((src(0), shared))
        with torch.no_grad():
            for owner, tensors in owners:  # one broadcast per owner and dtype
                by_dtype: dict[tuple, list[torch.Tensor]] = {}
                for t in tensors:
                    by_dtype.setdefault((t.dtype, t.device), []).append(t)
                for ts in by_dtype.values():
                    buf = torch.cat([t.detach().reshape(-1) for t in ts])
                    dist.broadcast(buf, src=owner, group=group)
                    off = 0
                    for t in ts:
                        t.copy_(buf[off : off + t.numel()].view_as(t))
                        off += t.numel()

    def _measure(self, x: torch.Tensor) -> dict[str, Any]:
        """Time (forward + backward) and FLOPs of P, every F_j, C_j and Q on ``x``."""
        with _Training([self], False), torch.no_grad():
            u = self.pre(_on(self.pre, x))
            inputs = []
            for f in self.fine:
                u = _on(f, u)
                inputs.append(u)
                u = f(u)
        u = _on(self.post, u)
        inputs_c = [_on(c, xi) for c, xi in zip(self.coarse, inputs, strict=True)]
        x = _on(self.pre, x)
        res: dict[str, Any] = {
            "pre_time": measure_time(self.pre, x),
            "pre_flops": flops(self.pre, x)[0],
            "post_time": measure_time(self.post, u),
            "post_flops": flops(self.post, u)[0],
            "fine_time": [measure_time(f, xi) for f, xi in zip(self.fine, inputs, strict=True)],
            "fine_flops": [flops(f, xi)[0] for f, xi in zip(self.fine, inputs, strict=True)],
            "coarse_time": [
                measure_time(c, xi) for c, xi in zip(self.coarse, inputs_c, strict=True)
            ],
            "coarse_flops": [flops(c, xi)[0] for c, xi in zip(self.coarse, inputs_c, strict=True)],
        }
        return res

    def cost_report(
        self, example_input: torch.Tensor | None = None, remeasure: bool = False
    ) -> dict[str, Any]:
        """Measured cost of every chunk and its coarse network, parameter counts, and the
        ideal speedup over the original network.

        Cost is the time of one forward + backward on the sample batch (seconds, best of 3).
        Ideal speedup (Amdahl): serial ``P + sum F_j + Q`` over parareal ``P + sum C_j +
        sum_{i<k} (max_{j>=i} F_j + sum_{j>i} C_j) + Q``, i.e. the fine chunks in parallel
        and the coarse sweeps serial. With an executor that overlaps the sweep with the
        chunks (``threads``), iteration 0 costs ``max_j (sum_{l<j} C_l + F_j + C_j[j>0])``
        instead of ``sum C_j + max F_j`` (``"schedule": "overlapped"``). The same ratio from
        FLOPs is given too.
        """
        x = example_input if example_input is not None else self._example
        if x is None:
            raise ValueError("cost_report needs example_input=<a sample batch>")
        if self._costs is None or remeasure or example_input is not None:
            self._costs = self._measure(x)
        c = self._costs
        n, k = self.parts, min(self.iterations, self.parts)

        pipelined = n > 1 and self._executor.overlaps_sweep

        def ideal(unit: str) -> tuple[float, float]:
            fine, coarse = c[f"fine_{unit}"], c[f"coarse_{unit}"]
            serial = c[f"pre_{unit}"] + sum(fine) + c[f"post_{unit}"]
            par = c[f"pre_{unit}"] + c[f"post_{unit}"]
            if pipelined:  # chunk j starts when the sweep reaches it, and also runs C_j
                par += max(sum(coarse[:j]) + fine[j] + (coarse[j] if j else 0) for j in range(n))
            else:
                par += sum(coarse) + max(fine)
            par += sum(coarse[1:])
            for i in range(1, k):
                par += max(fine[i:]) + sum(coarse[i + 1 :])
            return serial, par

        s_t, p_t = ideal("time")
        s_f, p_f = ideal("flops")
        chunks = []
        for j in range(n):
            chunks.append(
                {
                    "blocks": list(self.block_ranges[j]),
                    "fine_time_s": c["fine_time"][j],
                    "coarse_time_s": c["coarse_time"][j],
                    "relative_time": c["coarse_time"][j] / max(c["fine_time"][j], 1e-12),
                    "fine_flops": c["fine_flops"][j],
                    "coarse_flops": c["coarse_flops"][j],
                    "relative_flops": c["coarse_flops"][j] / max(c["fine_flops"][j], 1e-12),
                    "fine_params": _n_params(self.fine[j]),
                    "coarse_params": _n_params(self.coarse[j]),
                }
            )
        fine_p = sum(ch["fine_params"] for ch in chunks)
        coarse_p = sum(ch["coarse_params"] for ch in chunks)
        return {
            "parts": n,
            "iterations": self.iterations,
            "schedule": "overlapped" if pipelined else "sweep first",
            "batch_shape": list(x.shape),
            "chunks": chunks,
            "pre_time_s": c["pre_time"],
            "post_time_s": c["post_time"],
            "fine_params": fine_p,
            "coarse_params": coarse_p,
            "coarse_param_overhead": coarse_p / max(_n_params(self) - coarse_p, 1),
            "params": _n_params(self),
            "serial_time_s": s_t,
            "parareal_time_s": p_t,
            "ideal_speedup": s_t / p_t,
            "ideal_speedup_flops": s_f / p_f,
        }


def parareal(
    model: nn.Module,
    parts: int,
    *,
    iterations: int = 1,
    cut_points: Sequence[int] | None = None,
    balance: str = "time",
    coarse: Sequence[nn.Module] | CoarseBuilder | str | None = None,
    pre: nn.Module | int | None = None,
    post: nn.Module | int | None = None,
    example_input: torch.Tensor | None = None,
    executor: str | Executor = "serial",
    devices: Any = None,
    group: Any = None,
) -> PararealNetwork:
    """Turn ``model`` into a parareal network with ``parts`` fine chunks.

    Args:
        model: a torchpint model, a torchvision-style ResNet/VGG or an ``nn.Sequential``.
            Its modules are shared with the result, not copied.
        parts: the number of chunks N.
        iterations: parareal iterations k (1 = the paper's network; k >= N = exact).
        cut_points: block indices where chunks 2..N start; default: balanced by ``balance``.
        balance: ``"time"`` (measured forward + backward of each block alone), ``"flops"``,
            ``"blocks"``, or ``"tune"``: start from ``"time"`` and move each cut point
            while the measured forward + backward of the whole parareal network on
            ``executor`` gets faster (chunks slow each other down unequally when they run
            at the same time; costs a few dozen passes on ``example_input``).
        coarse: ``None`` / ``"auto"`` / ``"pool"`` / ``"conv"`` / ``"preact"`` (default
            builder), one module per chunk, or ``builder(j, fine_chunk, example_in, example_out)``.
        pre, post: P / Q as a module, or the number of leading / trailing blocks to use.
        example_input: a sample batch for shapes and costs; guessed from the first layer
            (``(2, C, 32, 32)`` for convs) when omitted.
        executor, devices, group: see ``PararealNetwork.set_executor``.

    The network's ``tuning`` attribute lists ``(cut_points, seconds)`` of every candidate
    that ``balance="tune"`` timed (empty otherwise).
    """
    if int(parts) != parts or parts < 1:
        raise ValueError(f"parts must be a positive integer, got {parts!r}")
    parts = int(parts)
    if balance not in _BALANCE:
        raise ValueError(f"balance must be one of {', '.join(_BALANCE)}; got {balance!r}")
    d = decompose(model, pre=pre, post=post)
    m = len(d.blocks)
    if example_input is None:
        example_input = infer_example_input(model)
    x = example_input.detach()
    tuning: list[tuple[list[int], float]] = []
    if cut_points is not None:
        cuts = check_cuts(cut_points, m, parts)
    else:
        if parts > m:
            check_cuts([], m, parts)  # raises the "too many parts" error
        how = "time" if balance == "tune" else balance
        costs, _, _ = block_costs(d, x, how) if parts > 1 else ([1.0] * m, 0, 0)
        cuts = balanced_cuts(costs, parts)
        if balance == "tune" and parts > 1:
            if executor == "distributed" or not (coarse is None or isinstance(coarse, str)):
                raise ValueError(
                    "balance='tune' times candidate splits in this process, so it needs the "
                    "default coarse builder (or a builder function) and a 'serial', "
                    "'threads' or 'devices' executor; use balance='time' or cut_points=..."
                )
            with torch.random.fork_rng(devices=[]):  # candidates do not consume the RNG
                cuts, tuning = _tune(d, x, cuts, coarse, iterations, executor, devices)
        if balance == "time" and executor == "distributed" and dist.is_initialized():
            # measured times differ between ranks: take rank 0's cut points
            t = torch.tensor(cuts + [0], dtype=torch.long)
            if dist.get_backend(group) == "nccl":
                t = t.cuda()
            src = dist.get_global_rank(group, 0) if group is not None else 0
            dist.broadcast(t, src=src, group=group)
            cuts = t.tolist()[:-1]
    net = _build(d, cuts, coarse, iterations, x)
    net.train(model.training)
    net.tuning = tuning
    if executor != "serial":
        net.set_executor(executor, devices=devices, group=group)
    return net


_BALANCE = ("time", "flops", "blocks", "tune")


def _build(
    d: Any, cuts: list[int], coarse: Any, iterations: int, x: torch.Tensor
) -> PararealNetwork:
    """The parareal network of decomposition ``d`` cut at ``cuts`` (coarse nets built here)."""
    bounds = [0, *cuts, len(d.blocks)]
    ranges = [(bounds[j], bounds[j + 1]) for j in range(len(bounds) - 1)]
    fine = [d.blocks[a] if b - a == 1 else nn.Sequential(*d.blocks[a:b]) for a, b in ranges]
    with _Training([d.pre, *fine], False), torch.no_grad():
        u = d.pre(x)
        ins, outs = [], []
        for f in fine:
            ins.append(u)
            u = f(u)
            outs.append(u)
    cs = build_coarse(coarse, fine, ins, outs)
    return PararealNetwork(
        d.pre, fine, cs, d.post, iterations, block_ranges=ranges, example_input=x
    )


def _pass_time(net: PararealNetwork, x: torch.Tensor) -> float:
    """Seconds of one forward + backward of ``net`` on ``x``; gradients are returned, not
    accumulated, so ``.grad`` stays untouched."""
    params = [p for p in net.parameters() if p.requires_grad]
    x = _on(net.pre, x)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = net(x)
    if out.requires_grad and params:
        torch.autograd.grad(out.sum(), params, allow_unused=True)
    sync()
    return time.perf_counter() - t0


def _tune(
    d: Any,
    x: torch.Tensor,
    cuts: list[int],
    coarse: Any,
    iterations: int,
    executor: Any,
    devices: Any,
    radius: int = 2,
    rounds: int = 5,
) -> tuple[list[int], list[tuple[list[int], float]]]:
    """Coordinate search over the cut points: time the parareal pass (train mode, on
    ``executor``) with one cut moved by ``-radius..radius`` blocks, interleaved over
    ``rounds`` rounds after a warm-up so that drifting machine load hits every candidate
    alike, and keep the fastest median unless it wins by less than 2% (noise). A cut that
    lands on the window's edge gets a new window around it, and a moved cut reopens its
    neighbours (their room changed); at most ``3 * len(cuts) + 1`` windows in all.
    Returns the cuts and every ``(candidate, median seconds)``, the last timing of each.
    The model's buffers (BN statistics) are restored after."""
    mods = [d.pre, *d.blocks, d.post]
    saved = [(b, b.detach().clone()) for m in mods for b in m.buffers()]
    trials: dict[tuple[int, ...], float] = {}
    best = list(cuts)
    open_ = list(range(len(best)))  # cuts whose window is still to be timed
    try:
        for _ in range(3 * len(best) + 1):
            if not open_:
                break
            i = open_.pop(0)
            lo = best[i - 1] if i else 0
            hi = best[i + 1] if i + 1 < len(best) else len(d.blocks)
            cands = [
                [*best[:i], c, *best[i + 1 :]]
                for c in range(max(lo + 1, best[i] - radius), min(hi, best[i] + radius + 1))
            ]
            nets = []
            for c in cands:
                net = _build(d, c, coarse, iterations, x).train()
                if executor != "serial":
                    net.set_executor(executor, devices=devices)
                _pass_time(net, x)  # warm-up
                nets.append(net)
            times: list[list[float]] = [[] for _ in cands]
            for r in range(rounds):  # rotate the order every round
                for k in [(r + q) % len(cands) for q in range(len(cands))]:
                    times[k].append(_pass_time(nets[k], x))
            med = [statistics.median(t) for t in times]
            for c, t in zip(cands, med, strict=True):
                trials[tuple(c)] = t
            fastest = min(range(len(cands)), key=med.__getitem__)
            if med[fastest] >= 0.98 * trials[tuple(best)]:
                continue
            moved = abs(cands[fastest][i] - best[i])
            best = cands[fastest]
            again = [j for j in (i - 1, i + 1) if 0 <= j < len(best)]
            if moved == radius:
                again.append(i)
            open_ += [j for j in again if j not in open_]
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
    return best, [(list(k), t) for k, t in trials.items()]
