"""A 2-D grid of ranks: D data-parallel replicas of a model spread over S stages.

Rank ``r = d * S + j`` holds stage j of replica d: a parareal network's chunk j, a
layer-parallel network's slab j of layers. The S ranks of a replica (consecutive, so one
node's GPUs under torchrun) exchange states every iteration over ``stage_group``; the D
ranks that hold stage j meet once per step, over ``data_group``, to average their
gradients. Every message goes through the floor's communicator
(:mod:`torchpint.runtime.comm`), with the grid's timeout. Parareal and layer-parallel
training both stand on it, so it lives beneath them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.distributed as dist

from torchpint.runtime.comm import Comm, GroupComm, new_group, world_rank, world_size


@dataclass(frozen=True, eq=False)
class ProcessGrid:
    """This rank's place in the grid and its two process groups.

    ``stage_group``: the S ranks of replica ``replica`` (one whole model between them);
    ``data_group``: the D ranks that hold stage ``stage`` (gradients averaged among them);
    ``timeout``: seconds a collective on either waits for a peer before it fails.
    Parareal's words for the stages, ``chunks``, ``chunk`` and ``chunk_group``, name
    the same fields.
    """

    stages: int
    replicas: int
    stage: int
    replica: int
    stage_group: Any
    data_group: Any
    timeout: float = 300.0

    @property
    def chunks(self) -> int:
        """:attr:`stages`, in parareal's word."""
        return self.stages

    @property
    def chunk(self) -> int:
        """:attr:`stage`, in parareal's word."""
        return self.stage

    @property
    def chunk_group(self) -> Any:
        """:attr:`stage_group`, in parareal's word."""
        return self.stage_group

    @cached_property
    def data_comm(self) -> GroupComm:
        """The communicator over ``data_group`` (this stage's D replicas)."""
        return GroupComm(self.data_group, self.timeout)

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This replica's rows of a global batch: part ``replica`` of D near-equal parts
        along dim 0 (``torch.tensor_split``), so every replica sees the same batches."""
        rows = len(tensors[0])
        if rows < self.replicas:
            raise ValueError(
                f"a batch of {rows} rows cannot be split among {self.replicas} data-parallel "
                f"replicas; use a batch size of at least {self.replicas}"
            )
        return tuple(torch.tensor_split(t, self.replicas)[self.replica] for t in tensors)

    def sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the replicas (e.g. loss sums and counts for the log)."""
        if self.replicas == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        return self.data_comm.all_reduce(t, "sum", "the replicas' loss sums").tolist()


@torch.no_grad()
def average_by_rows(comm: Comm, params: Iterable[torch.Tensor], rows: int) -> None:
    """Every gradient of ``params`` := ``sum_d rows_d grad_d / sum_d rows_d`` over the
    replicas of ``comm`` (``rows``: this replica's share of the batch), so the replicas
    step as one model on the whole batch: one all-reduce per dtype and device, the rows
    riding along. Every replica passes the same parameters in the same order."""
    by_kind: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            by_kind.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for (dtype, device), ps in by_kind.items():
        n = torch.tensor([float(rows)], dtype=dtype, device=device)
        buf = torch.cat([*(p.grad.reshape(-1) * rows for p in ps), n])
        comm.all_reduce_(buf, "sum", "the replicas' gradients")
        buf = buf[:-1] / buf[-1]
        off = 0
        for p in ps:
            p.grad.copy_(buf[off : off + p.numel()].view_as(p.grad))
            off += p.numel()


class ReplicaAverage:
    """The replicas' row-weighted gradient average (:func:`average_by_rows` over ``comm``),
    taken once when a backward ends: :meth:`wrap` puts the model's output behind an
    identity node whose backward, the first of every backward through the output, queues
    it. Parareal's executor and layer-parallel replicas both stand on it."""

    def __init__(self, comm: Comm) -> None:
        self.comm = comm
        self._queued = False  # an average waits for the end of the running backward

    def wrap(self, y: torch.Tensor, params: Callable[[], Iterable[torch.Tensor]], rows: int
             ) -> torch.Tensor:
        """``y``, behind the node when there are several replicas and a graph to go back
        through (else ``y`` itself). ``params()`` names the averaged parameters when the
        backward ends; ``rows``: this replica's share of the batch."""
        if self.comm.size == 1 or not (torch.is_grad_enabled() and y.requires_grad):
            return y
        self._queued = False  # a backward that failed midway left it set
        return _AverageAtTheEnd.apply(self, params, rows, y)

    def queue(self, params: Callable[[], Iterable[torch.Tensor]], rows: int) -> None:
        """Average when the running backward ends (once, however many outputs it goes
        through)."""
        if self._queued:
            return
        self._queued = True

        def average() -> None:
            self._queued = False
            average_by_rows(self.comm, params(), rows)

        torch.autograd.Variable._execution_engine.queue_callback(average)


class _AverageAtTheEnd(torch.autograd.Function):
    """Identity on the output; its backward queues the replicas' average."""

    @staticmethod
    def forward(ctx: Any, avg: ReplicaAverage, params: Callable[[], Iterable[torch.Tensor]],
                rows: int, y: torch.Tensor) -> torch.Tensor:
        ctx.avg, ctx.params, ctx.rows = avg, params, rows
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None, torch.Tensor]:
        ctx.avg.queue(ctx.params, ctx.rows)
        return None, None, None, grad


def process_grid(stages: int, replicas: int = 1, *, timeout: float = 300.0) -> ProcessGrid:
    """Split the world into ``replicas`` data-parallel replicas of ``stages`` ranks each.

    Every rank must call it (it creates ``stages + replicas`` process groups, collectively);
    the world size must be ``stages * replicas``. ``timeout``: seconds before a collective
    on the new groups fails (a peer that died or hung), as for the world's group.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "process_grid needs torch.distributed initialised (dist.init_process_group, "
            "e.g. under torchrun)"
        )
    for name, value in (("stages", stages), ("replicas", replicas)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    world, rank = world_size(), world_rank()
    if world != stages * replicas:
        raise ValueError(
            f"a grid of {replicas} replica(s) x {stages} stage(s) needs {stages * replicas} "
            f"ranks, the world has {world}: launch {stages * replicas} processes "
            f"(torchrun --nproc-per-node {stages * replicas}) or change the grid"
        )
    stage_groups = [  # every rank creates every group, in the same order
        new_group([d * stages + j for j in range(stages)], timeout) for d in range(replicas)
    ]
    data_groups = [
        new_group([d * stages + j for d in range(replicas)], timeout) for j in range(stages)
    ]
    d, j = divmod(rank, stages)
    return ProcessGrid(stages, replicas, j, d, stage_groups[d], data_groups[j], float(timeout))
