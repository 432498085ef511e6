"""``balance="tune"``: move the cut points while the timed parareal pass gets faster.

Chunks that run at the same time slow each other down unequally, so the split that
balances the costs of the blocks measured alone is not always the fastest one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from torchpint.parareal.costs import to_device_of

if TYPE_CHECKING:
    from torchpint.parareal.network import PararealNetwork


def pass_time(net: PararealNetwork, x: torch.Tensor) -> float:
    """Seconds of one forward + backward of ``net`` on ``x``; gradients are returned, not
    accumulated, so ``.grad`` stays untouched."""
    params = [p for p in net.parameters() if p.requires_grad]
    x = to_device_of(net.pre, x)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = net(x)
    if out.requires_grad and params:
        torch.autograd.grad(out.sum(), params, allow_unused=True)
    sync()
    return time.perf_counter() - t0


def tune_cuts(
    build: Callable[[list[int]], PararealNetwork],
    modules: Sequence[nn.Module],
    n_blocks: int,
    x: torch.Tensor,
    cuts: list[int],
    radius: int = 2,
    rounds: int = 5,
) -> tuple[list[int], list[tuple[list[int], float]]]:
    """Coordinate search over the cut points of ``n_blocks`` blocks, from ``cuts``.

    ``build(cuts)`` returns the candidate network (train mode, on the executor to time);
    ``modules`` hold every buffer the passes may change (P, the blocks, Q). Each window
    times the parareal pass with one cut moved by ``-radius..radius`` blocks, interleaved
    over ``rounds`` rounds after a warm-up so that drifting machine load hits every
    candidate alike, and keeps the fastest median unless it wins by less than 2% (noise). A
    cut that lands on the window's edge gets a new window around it, and a moved cut
    reopens its neighbours (their room changed); at most ``3 * len(cuts) + 1`` windows in
    all. Returns the cuts and every ``(candidate, median seconds)``, the last timing of
    each. The buffers of ``modules`` (BN statistics) are restored after.
    """
    saved = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    trials: dict[tuple[int, ...], float] = {}
    best = list(cuts)
    open_ = list(range(len(best)))  # cuts whose window is still to be timed
    try:
        for _ in range(3 * len(best) + 1):
            if not open_:
                break
            i = open_.pop(0)
            lo = best[i - 1] if i else 0
            hi = best[i + 1] if i + 1 < len(best) else n_blocks
            cands = [
                [*best[:i], c, *best[i + 1 :]]
                for c in range(max(lo + 1, best[i] - radius), min(hi, best[i] + radius + 1))
            ]
            nets = []
            for c in cands:
                net = build(c)
                pass_time(net, x)  # warm-up
                nets.append(net)
            times: list[list[float]] = [[] for _ in cands]
            for r in range(rounds):  # rotate the order every round
                for k in [(r + q) % len(cands) for q in range(len(cands))]:
                    times[k].append(pass_time(nets[k], x))
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
