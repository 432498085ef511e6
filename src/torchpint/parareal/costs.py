"""What the pieces of a network cost: FLOPs and measured time of modules, blocks, chunks.

``block_costs`` weighs the blocks for ``balanced_cuts``; ``measure_stages`` and
``cost_report`` give a parareal network's per-chunk costs and its ideal speedup.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchpint.common.modules import train_mode

if TYPE_CHECKING:
    from torchpint.parareal.executors import Stages
    from torchpint.parareal.split import Decomposition


def flops(module: nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Estimated forward FLOPs of ``module`` on ``x`` (convs and linears exact, the rest
    one per output element), and its output. Runs in eval mode, without grad."""
    total = [0.0]

    def hook(m: nn.Module, inp: tuple, out: object) -> None:
        if not isinstance(out, torch.Tensor):
            return
        if isinstance(m, nn.modules.conv._ConvNd):
            k = 1
            for s in m.kernel_size:
                k *= s
            total[0] += 2.0 * out.numel() * (m.in_channels // m.groups) * k
        elif isinstance(m, nn.Linear):
            total[0] += 2.0 * out.numel() * m.in_features
        elif not list(m.children()):
            total[0] += float(out.numel())

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with train_mode([module], False), torch.no_grad():
            out = module(x)
    finally:
        for h in handles:
            h.remove()
    return max(total[0], float(out.numel())), out


def measure_time(module: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Seconds for one forward + backward of ``module`` on ``x`` (best of ``repeats``).

    Runs on a copy in train mode, so the module's BN statistics and grads are untouched.
    """
    m = copy.deepcopy(module).train()
    best = float("inf")
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for i in range(repeats + 1):
        xi = x.detach().requires_grad_(x.is_floating_point())
        sync()
        t0 = time.perf_counter()
        out = m(xi)
        if out.requires_grad:
            out.backward(torch.ones_like(out))
        sync()
        if i > 0:  # the first run is a warm-up
            best = min(best, time.perf_counter() - t0)
    return best


def block_costs(
    d: Decomposition, x: torch.Tensor, how: str = "time"
) -> tuple[list[float], float, float]:
    """Cost of every block, of P and of Q on the sample batch ``x``.

    ``how``: ``"time"`` (measured forward + backward seconds), ``"flops"`` (estimated
    forward FLOPs) or ``"blocks"`` (1 per block).
    """
    if how not in ("time", "flops", "blocks"):
        raise ValueError(f"cost must be 'time', 'flops' or 'blocks', got {how!r}")

    def cost(m: nn.Module, inp: torch.Tensor) -> tuple[float, torch.Tensor]:
        f, out = flops(m, inp)
        if how == "time":
            return measure_time(m, inp), out
        return (1.0 if how == "blocks" else f), out

    c_pre, u = cost(d.pre, x)
    costs = []
    for b in d.blocks:
        c, u = cost(b, u)
        costs.append(c)
    c_post, _ = cost(d.post, u)
    return costs, c_pre, c_post


def to_device_of(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device of ``m``'s first parameter (modules may sit on several devices)."""
    p = next(m.parameters(), None)
    return x if p is None else x.to(p.device)


def _n_params(*modules: nn.Module) -> int:
    """Parameters of ``modules``, each counted once (a coarse network may share a chunk's)."""
    unique = {id(p): p for m in modules for p in m.parameters()}
    return sum(p.numel() for p in unique.values())


def measure_stages(s: Stages, x: torch.Tensor) -> dict[str, Any]:
    """Time (forward + backward) and FLOPs of P, every F_j, C_j and Q on ``x``."""
    with train_mode([s.pre, *s.fine, s.post], False), torch.no_grad():
        u = s.pre(to_device_of(s.pre, x))
        inputs = []
        for f in s.fine:
            u = to_device_of(f, u)
            inputs.append(u)
            u = f(u)
    u = to_device_of(s.post, u)
    inputs_c = [to_device_of(c, xi) for c, xi in zip(s.coarse, inputs, strict=True)]
    x = to_device_of(s.pre, x)
    return {
        "pre_time": measure_time(s.pre, x),
        "pre_flops": flops(s.pre, x)[0],
        "post_time": measure_time(s.post, u),
        "post_flops": flops(s.post, u)[0],
        "fine_time": [measure_time(f, xi) for f, xi in zip(s.fine, inputs, strict=True)],
        "fine_flops": [flops(f, xi)[0] for f, xi in zip(s.fine, inputs, strict=True)],
        "coarse_time": [measure_time(c, xi) for c, xi in zip(s.coarse, inputs_c, strict=True)],
        "coarse_flops": [flops(c, xi)[0] for c, xi in zip(s.coarse, inputs_c, strict=True)],
    }


def cost_report(
    s: Stages, c: dict[str, Any], iterations: int, overlapped: bool, batch_shape: list[int]
) -> dict[str, Any]:
    """The report of ``PararealNetwork.cost_report`` from the measured costs ``c``
    (``measure_stages``); ``overlapped``: the executor overlaps iteration 0 with the sweep.

    Keys: ``"num_chunks"``, ``"chunks"`` (one dict per chunk: blocks, times, FLOPs and
    parameters of F_j and C_j), totals, and the ideal speedups by time and by FLOPs.
    """
    n = len(s.fine)
    k = min(iterations, n)
    pipelined = n > 1 and overlapped

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
                "blocks": list(s.block_ranges[j]),
                "fine_time_s": c["fine_time"][j],
                "coarse_time_s": c["coarse_time"][j],
                "relative_time": c["coarse_time"][j] / max(c["fine_time"][j], 1e-12),
                "fine_flops": c["fine_flops"][j],
                "coarse_flops": c["coarse_flops"][j],
                "relative_flops": c["coarse_flops"][j] / max(c["fine_flops"][j], 1e-12),
                "fine_params": _n_params(s.fine[j]),
                "coarse_params": _n_params(s.coarse[j]),
            }
        )
    fine_p = sum(ch["fine_params"] for ch in chunks)
    coarse_p = sum(ch["coarse_params"] for ch in chunks)
    total = _n_params(s.pre, *s.fine, *s.coarse, s.post)
    return {
        "num_chunks": n,
        "iterations": iterations,
        "schedule": "overlapped" if pipelined else "sweep first",
        "batch_shape": batch_shape,
        "chunks": chunks,
        "pre_time_s": c["pre_time"],
        "post_time_s": c["post_time"],
        "fine_params": fine_p,
        "coarse_params": coarse_p,
        "coarse_param_overhead": coarse_p / max(total - coarse_p, 1),
        "params": total,
        "serial_time_s": s_t,
        "parareal_time_s": p_t,
        "ideal_speedup": s_t / p_t,
        "ideal_speedup_flops": s_f / p_f,
    }
