"""Parareal neural networks (Lee, Lee & Park, IEEE TNNLS 2022): the module.

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

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torchpint.parareal.costs import cost_report, measure_stages
from torchpint.parareal.executors import Executor, Stages, make_executor
from torchpint.runtime.comm import Comm
from torchpint.trainer import RankAware


class PararealNetwork(nn.Module, RankAware):
    """P, fine chunks F_j, coarse networks C_j and Q wired as k parareal iterations.

    Trains like any module. The fine chunks are the original model's modules (shared, not
    copied). ``set_executor`` chooses where the fine chunks run; ``parareal_network``
    builds one from a model.
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
        self.tuning: list[tuple[list[int], float]] = []  # set by balance="tune"
        self._executor: Executor = make_executor("serial")

    @property
    def num_chunks(self) -> int:
        """The number of chunks N."""
        return len(self.fine)

    @property
    def cut_points(self) -> list[int]:
        """The block indices where chunks 2..N start."""
        return [b for _, b in self.block_ranges[:-1]]

    @property
    def executor(self) -> Executor:
        """The executor that runs the fine chunks (its ``name`` says which kind)."""
        return self._executor

    @property
    def grid(self) -> Any:
        """The executor's ``ProcessGrid`` when data-parallel replicas of this network
        train together (each on its share of every batch: ``grid.shard``), else None."""
        return self.executor.grid

    @property
    def stages(self) -> Stages:
        """P, the chunks, the coarse networks and Q, as the executor receives them."""
        return Stages(
            self.pre, tuple(self.fine), tuple(self.coarse), self.post, tuple(self.block_ranges)
        )

    def set_executor(
        self, name_or_instance: str | Executor, devices: Any = None, group: Any = None
    ) -> None:
        """Run the fine chunks with ``"serial"``, ``"threads"``, ``"devices"`` (one device
        per chunk; moves the modules), ``"distributed"`` (rank j of ``group`` runs chunk j;
        ``group`` may be a ``ProcessGrid`` of data-parallel replicas) or an ``Executor``.
        A refused executor leaves the current one in place."""
        ex = make_executor(name_or_instance, devices=devices, group=group)
        ex.bind(self.stages)
        self._executor = ex

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages, ex = self.stages, self.executor
        n, k = self.num_chunks, min(self.iterations, self.num_chunks)
        lam = [self.pre(x)]
        f, g = ex.first_iteration(stages, lam[0])
        for i in range(k):
            if i > 0:
                active = {j: lam[j] for j in range(i, n)}
                f.update(ex.run(stages, active, {j: g[j] for j in active}))
            y = lam[: i + 1] + [f[i]]
            for j in range(i + 1, n):  # coarse correction, serial
                c = stages.coarse[j](y[j])
                y.append(c + f[j] - g[j])
                g[j] = c
            lam = y
        return ex.output(stages, self.post(lam[n]))

    # -- how fit sees it (trainer.RankAware) ------------------------------------------
    def fit_comm(self) -> Comm:
        """Every rank that trains this network: the executor's ranks (on a process grid,
        every replica's), or one process."""
        return self.executor.comm

    def input_device(self) -> torch.device | None:
        """P's device: a batch enters there."""
        p = next(self.pre.parameters(), None)
        return None if p is None else p.device

    def shard_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This replica's rows of the batch on a process grid; the whole batch otherwise."""
        if self.grid is None:
            return x, y
        x, y = self.grid.shard(x, y)
        return x, y

    def sum_over_replicas(self, values: list[float]) -> list[float]:
        return values if self.grid is None else list(self.grid.sum(values))

    def synchronize(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make the replicas identical where the chunks run in several processes (the
        ``distributed`` executor): each fine chunk's parameters and buffers from the rank
        that trains it, P, C and Q from rank 0, and, given ``optimizer``, the momentum
        buffers of each chunk's parameters from its owner. A no-op in one process."""
        self.executor.synchronize(self.stages, optimizer)

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
        FLOPs is given too. The costs are measured once and kept, unless ``example_input``
        or ``remeasure`` asks again.
        """
        x = example_input if example_input is not None else self._example
        if x is None:
            raise ValueError("cost_report needs example_input=<a sample batch>")
        if self._costs is None or remeasure or example_input is not None:
            self._costs = measure_stages(self.stages, x)
        overlapped = self.executor.overlaps_sweep
        return cost_report(self.stages, self._costs, self.iterations, overlapped, list(x.shape))
