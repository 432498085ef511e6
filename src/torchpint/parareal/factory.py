"""``parareal_network``: cut a model into P, N fine chunks and Q, add coarse networks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torchpint.common.modules import train_mode
from torchpint.parareal.coarse import CoarseBuilder, build_coarse
from torchpint.parareal.costs import block_costs
from torchpint.parareal.executors import Executor, make_executor
from torchpint.parareal.network import PararealNetwork
from torchpint.parareal.split import (
    Decomposition,
    balanced_cuts,
    check_cuts,
    decompose,
    infer_example_input,
)
from torchpint.parareal.tuning import tune_cuts

BALANCE = ("time", "flops", "blocks", "tune")


def parareal_network(
    model: nn.Module,
    chunks: int,
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
    timeout: float | None = None,
) -> PararealNetwork:
    """Turn ``model`` into a parareal network with ``chunks`` fine chunks.

    Args:
        model: a torchpint model, a torchvision-style ResNet/VGG or an ``nn.Sequential``.
            Its modules are shared with the result, not copied.
        chunks: the number of chunks N.
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
        timeout: seconds the ``distributed`` executor waits for a peer rank before it
            raises ``RankTimeoutError`` (``PeerClosedError`` when the peer's connection
            closed); default: the ``ProcessGrid``'s, else the process group's own, else 300.

    The network's ``tuning`` attribute lists ``(cut_points, seconds)`` of every candidate
    that ``balance="tune"`` timed (empty otherwise).
    """
    if int(chunks) != chunks or chunks < 1:
        raise ValueError(f"chunks must be a positive integer, got {chunks!r}")
    chunks = int(chunks)
    if balance not in BALANCE:
        raise ValueError(f"balance must be one of {', '.join(BALANCE)}; got {balance!r}")
    ex = make_executor(executor, devices=devices, group=group, timeout=timeout)
    d = decompose(model, pre=pre, post=post)
    m = len(d.blocks)
    if example_input is None:
        example_input = infer_example_input(model)
    x = example_input.detach()
    tuning: list[tuple[list[int], float]] = []
    if cut_points is not None:
        cuts = check_cuts(cut_points, m, chunks)
    else:
        if chunks > m:
            check_cuts([], m, chunks)  # raises the "too many chunks" error before measuring
        how = "time" if balance == "tune" else balance
        costs, _, _ = block_costs(d, x, how) if chunks > 1 else ([1.0] * m, 0, 0)
        cuts = balanced_cuts(costs, chunks)
        if balance == "tune" and chunks > 1:
            if ex.spans_processes or not (coarse is None or isinstance(coarse, str)):
                raise ValueError(
                    "balance='tune' times candidate splits in this process, so it needs the "
                    "default coarse builder (coarse=None or a kind) and an executor that "
                    "runs in one process ('serial', 'threads' or 'devices'); use "
                    "balance='time' or cut_points=..."
                )

            def candidate(c: list[int]) -> PararealNetwork:
                net = build_network(d, c, coarse, iterations, x).train()
                net.set_executor(ex.clone())
                return net

            with torch.random.fork_rng(devices=[]):  # candidates do not consume the RNG
                mods = [d.pre, *d.blocks, d.post]
                cuts, tuning = tune_cuts(candidate, mods, m, x, cuts)
        if balance == "time":  # measured times differ between processes: agree on one
            cuts = ex.agree_cuts(cuts)
    net = build_network(d, cuts, coarse, iterations, x)
    net.train(model.training)
    net.tuning = tuning
    net.set_executor(ex)
    return net


def build_network(
    d: Decomposition, cuts: list[int], coarse: Any, iterations: int, x: torch.Tensor
) -> PararealNetwork:
    """The parareal network of decomposition ``d`` cut at ``cuts``, with coarse networks
    built by ``coarse`` on the chunk inputs and outputs of the sample batch ``x``."""
    bounds = [0, *cuts, len(d.blocks)]
    ranges = [(bounds[j], bounds[j + 1]) for j in range(len(bounds) - 1)]
    fine = [d.blocks[a] if b - a == 1 else nn.Sequential(*d.blocks[a:b]) for a, b in ranges]
    with train_mode([d.pre, *fine], False), torch.no_grad():
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
