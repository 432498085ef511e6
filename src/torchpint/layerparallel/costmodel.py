"""Layer-parallel training's step on the core's virtual clock (:mod:`torchpint.core.costmodel`).

:func:`layer_parallel_time` replays what :class:`~torchpint.layerparallel.LayerParallel`
does for one training step, with the real layout (:mod:`.layout`) and the real MGRIT
solves, each step costing virtual time instead of computing: the edge weights, the
forward solve (its final sweep records each layer: a forward each), the output's
broadcast from the last rank, and the adjoint on the ranks numbered backwards (every
step a backward, the final sweep's with the parameter gradients; a step of a zero state
costs nothing). :func:`choose_layer_parallel` picks the hierarchy by it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from torchpint.core.costmodel import (
    Choice,
    Hierarchy,
    Machine,
    Prediction,
    VirtualComm,
    VirtualNetwork,
    VirtualProblem,
    choose_hierarchy,
    simulate,
)
from torchpint.core.mgrit import MGRIT
from torchpint.layerparallel.layout import Layout


class AdjointVirtualProblem(VirtualProblem):
    """The adjoint as ``LayerParallel`` runs it: any step of a nonzero state is a backward
    through a recorded fine graph (coarse ones too, for residual layers), and one of a zero
    state is skipped (the adjoint is linear), so a cold start's first iteration costs
    little. A step scales its state by a factor per level: zero stays zero, and nothing
    cancels that would not in a real solve."""

    def __init__(self, nt: int, comm: VirtualComm, backward: float, levels: int) -> None:
        super().__init__(nt, comm, [backward], torch.ones(1, dtype=torch.float64))
        self.zero_steps = [0] * levels

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        if not u.any():
            self.zero_steps[level] += 1
            self.comm.advance(self.comm.net.machine.overhead)
            return u.clone()
        super().step(u, i, level)
        return u * (0.9 if level == 0 else 0.7)


def layer_parallel_time(
    n: int, procs: int, *, forward: float = 1.0, backward: float | None = None,
    levels: int = 3, cfactor: int = 4, relax: str | Sequence[str] | None = None,
    fwd_iterations: int = 2, bwd_iterations: int = 1, fwd_start: str = "warm",
    bwd_start: str = "cold", machine: Machine | None = None, timeout: float = 120.0,
) -> Prediction:
    """Modelled seconds of a layer-parallel training step (forward + ``loss.backward()``)
    of ``n`` residual layers on ``procs`` ranks, a layer's forward ``forward`` seconds, its
    backward ``backward`` (default twice that), the messages and bookkeeping ``machine``'s
    (default free: the critical path); the other settings are ``LayerParallel``'s.
    The second of two steps is timed (a warm start then has a last solution). ``detail``:
    each solve's step counts (the adjoint's without its zero steps) and the layer calls,
    summed over the ranks."""
    backward = 2.0 * forward if backward is None else float(backward)
    relax = ("F", *["FCF"] * (levels - 2))[: levels - 1] if relax is None else relax
    spacing = tuple(cfactor ** l for l in range(levels))
    options = dict(cfactor=cfactor, levels=levels, relax=relax, divergence_factor=math.inf,
                   timeout=timeout)

    def rank_fn(net: VirtualNetwork, rank: int) -> dict[str, Any]:
        layout = Layout.of(n, rank, procs, spacing)
        comm, rcomm = VirtualComm(net, rank), VirtualComm(net, rank, reverse=True)
        fwd = VirtualProblem(n, comm, [forward])
        adj = AdjointVirtualProblem(n, rcomm, backward, levels)
        many = procs > 1
        fsolver = MGRIT(fwd, iterations=fwd_iterations, group=comm, skip=fwd_start == "skip",
                        slabs=layout.forward_slabs() if many else None, **options)
        asolver = MGRIT(adj, iterations=bwd_iterations, group=rcomm, skip=bwd_start == "skip",
                        slabs=layout.adjoint_slabs() if many else None, **options)
        weights = torch.zeros(1)

        def train_step() -> dict[str, Any]:
            for r, k in layout.edges():
                if layout.owner(k) == rank:
                    comm.send(weights, r, 11, f"the weights of layer {k}")
            for r, k in layout.edges():
                if r == rank:
                    comm.recv_into(weights, layout.owner(k), 11, f"the weights of layer {k}")
            f = fsolver.solve(warm_start=fwd_start == "warm")
            if many:
                comm.broadcast(fwd.state, procs - 1, "the network's output")
            adj.zero_steps = [0] * levels
            a = asolver.solve(warm_start=bwd_start == "warm")
            done = [c - z for c, z in zip(a.step_counts, adj.zero_steps, strict=True)]
            return {"forward": f.step_counts, "adjoint": done}

        train_step()
        net.restart(rank)
        return train_step()

    net, out = simulate(procs, machine or Machine(), rank_fn, timeout)
    fc = [sum(o["forward"][l] for o in out) for l in range(levels)]
    ac = [sum(o["adjoint"][l] for o in out) for l in range(levels)]
    detail = {"forward_counts": fc, "adjoint_counts": ac,
              "calls": {"forward_no_grad": sum(fc) - n, "forward_grad": n,
                        "backward": sum(ac)}}
    both = [a + b for a, b in zip(fc, ac, strict=True)]
    return Prediction(max(net.clocks), list(net.clocks), both, net.messages, detail)


def choose_layer_parallel(n: int, procs: int, *, candidates: Sequence[Hierarchy] | None = None,
                          accept: Callable[[Hierarchy], bool] | None = None,
                          **settings: Any) -> Choice:
    """The hierarchy (levels, cfactor, relaxation) with the least modelled training step
    for ``n`` layers on ``procs`` ranks, among those that keep the default's accuracy:
    by a rule (:func:`~torchpint.core.costmodel.candidate_hierarchies`), and with
    ``accept`` by a measurement too (:func:`~torchpint.layerparallel.equal_accuracy`: the
    first-batch gradient error no larger than the default's). ``settings`` go to
    :func:`layer_parallel_time` (``forward``, ``backward``, ``machine``, iterations,
    starts)."""
    def evaluate(h: Hierarchy) -> float:
        return layer_parallel_time(n, procs, levels=h.levels, cfactor=h.cfactor,
                                   relax=h.relax, **settings).seconds

    return choose_hierarchy(n, procs, evaluate, candidates=candidates, accept=accept)
