"""The executor contract: what a ``PararealNetwork`` asks of whatever runs its fine chunks.

Executors never see the network: every hook receives the ``Stages`` it works on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from torchpint.runtime.comm import Comm


@dataclass(frozen=True)
class Stages:
    """The pieces of a parareal network: P, the fine chunks F_j, the coarse networks C_j,
    Q, and the block range ``(first, end)`` of every chunk."""

    pre: nn.Module
    fine: Sequence[nn.Module]
    coarse: Sequence[nn.Module]
    post: nn.Module
    block_ranges: Sequence[tuple[int, int]]

    @property
    def num_chunks(self) -> int:
        return len(self.fine)


class Executor:
    """Runs the fine chunks ``{j: F_j(lambda_j)}`` of each parareal iteration.

    This base class runs them one after the other in this process; subclasses change where
    they run and override the hooks below. Class attributes: ``name`` (the key in
    ``EXECUTORS``), ``spans_processes`` (the chunks run in several processes, so everything
    that decides the network's shape must agree across them).
    """

    name: ClassVar[str] = "base"
    spans_processes: ClassVar[bool] = False
    overlaps_sweep: bool = False  # iteration 0 runs beside the coarse sweep, not after it
    grid: Any = None  # a ProcessGrid when data-parallel replicas train together
    _comm: Comm = Comm()  # one process: no peers (stateless, so shared)

    @classmethod
    def create(cls, devices: Any = None, group: Any = None,
               timeout: float | None = None) -> Executor:
        """An executor from ``make_executor``'s arguments (the base ignores them all)."""
        return cls()

    @property
    def comm(self) -> Comm:
        """The communicator every message between the processes that run the chunks goes
        through (a one-process ``Comm`` here: no peers)."""
        return self._comm

    def bind(self, stages: Stages) -> None:
        """Check the stages and place their modules; called when the network takes this
        executor. Raises ``ValueError`` when they do not fit it."""

    def run(
        self, stages: Stages, inputs: dict[int, torch.Tensor], like: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        """``{j: F_j(inputs[j])}``; ``like[j]`` has the shape and dtype of that output."""
        return {j: stages.fine[j](x) for j, x in inputs.items()}

    def first_iteration(
        self, stages: Stages, u: torch.Tensor
    ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Iteration 0 from ``u = P(x)``: the coarse sweep ``lam_{j+1} = g_j = C_j(lam_j)``,
        ``lam_0 = u``, then every chunk on its sweep value. Returns ``({j: F_j(lam_j)},
        {j: g_j})``; the network uses ``g_j`` for ``j >= 1``."""
        lam, g = [u], {}
        for j, c in enumerate(stages.coarse):
            g[j] = c(lam[j])
            lam.append(g[j])
        f = self.run(stages, {j: lam[j] for j in range(stages.num_chunks)}, g)
        return f, g

    def synchronize(self, stages: Stages, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make every process's replica of the stages (and of ``optimizer``'s state for
        them) identical. Nothing to do in one process."""

    def barrier(self) -> None:
        """Wait for every process that runs a chunk. Nothing to do in one process."""

    def output(self, stages: Stages, y: torch.Tensor) -> torch.Tensor:
        """The network's output ``y = Q(lam_N)`` as the caller gets it (data-parallel
        executors hook their gradient average here); ``y`` itself by default."""
        return y

    def agree_cuts(self, cuts: list[int]) -> list[int]:
        """The cut points every process uses, from this process's ``cuts``."""
        return cuts

    def clone(self) -> Executor:
        """A new executor with the same settings, for a copy of the network."""
        return self.create()

    def __deepcopy__(self, memo: dict) -> Executor:
        return self.clone()

    def __getstate__(self) -> dict:
        raise TypeError(f"the {self.name!r} executor cannot be pickled; set it again after")
