"""Layer-parallel x data parallelism: D replicas of a layer-parallel network on a
:class:`~torchpint.common.process_grid.ProcessGrid` of S slabs x D replicas.

Each replica is a whole layer-parallel network over its S ranks (the grid's stage
group), trained on its share of every batch (``grid.shard``: part d of
``torch.tensor_split`` of the rows). The D ranks that hold the same slab average their
parameter gradients (``open``'s and ``close``'s too) once per backward, when it ends,
weighted by their rows: for a loss that is a mean over the batch, the whole batch's
gradient. Batch norm is ``"sync"`` (the whole batch's statistics, through
:class:`~torchpint.common.syncbn.SyncBatchNorm` over the replicas: training equals one
process with the whole batch) or ``"local"`` (each replica's share, as DDP: no
messages, and slightly different statistics). Every message goes through the floor's
communicator, so a replica that died or hung is a typed ``PeerError`` on its peers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchpint.common.modules import flat_state, load_flat_state
from torchpint.common.process_grid import ProcessGrid, average_by_rows
from torchpint.common.seeds import mix_seed
from torchpint.common.syncbn import convert_sync_batchnorm
from torchpint.runtime.comm import GroupComm

if TYPE_CHECKING:
    from torchpint.layerparallel.module import LayerParallel

BATCH_NORMS = ("sync", "local")


class Replicas:
    """This rank's replicas: ``data``, the D ranks that hold its slab (gradients averaged,
    batch norm synced among them), and ``world``, every rank of the grid (the ranks that
    train the network together, as the training loop sees them)."""

    def __init__(self, grid: ProcessGrid, timeout: float, batch_norm: str = "sync") -> None:
        self.grid, self.batch_norm = grid, check_batch_norm(batch_norm)
        self.data = GroupComm(grid.data_group, timeout)
        self.world = GroupComm(None, timeout)
        self._queued = False  # an average waits for the end of the running backward

    @classmethod
    def of(cls, group: Any, timeout: float | None, batch_norm: str
           ) -> tuple[Any, float | None, Replicas | None]:
        """``(slab group, timeout, replicas)`` of ``LayerParallel(group=...)``: a grid
        gives its stage group, its timeout unless ``timeout`` says otherwise, and its
        replicas; any other group is used as it is, with no replicas."""
        check_batch_norm(batch_norm)
        if not isinstance(group, ProcessGrid):
            return group, timeout, None
        timeout = group.timeout if timeout is None else float(timeout)
        return group.stage_group, timeout, cls(group, timeout, batch_norm)

    def attach(self, net: LayerParallel) -> None:
        """Make ``net`` (just built on this rank) one replica: its batch norms synced over
        the replicas, in every module the rank runs (the edge layers too), as
        ``batch_norm`` says; its dropout masks keyed by a seed of this replica's own."""
        if self.batch_norm == "sync" and self.data.size > 1:
            if net.open is not None:
                net.open = convert_sync_batchnorm(net.open, self.data)
            convert_sync_batchnorm(net.steps, self.data)
            if net.close is not None:
                net.close = convert_sync_batchnorm(net.close, self.data)
            net._edges = {k: convert_sync_batchnorm(m, self.data) for k, m in net._edges.items()}
        if net.keyed_rng and self.grid.replica:
            net.rng_seed.fill_(mix_seed(int(net.rng_seed), self.grid.replica))

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This replica's rows of a batch (a ``ValueError`` for fewer rows than replicas)."""
        xs, ys = self.grid.shard(x, y)
        return xs, ys

    def sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the replicas (the whole batch's loss and counts)."""
        if self.data.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        return self.data.all_reduce(t, "sum", "the replicas' loss sums").tolist()

    def output(self, net: nn.Module, y: torch.Tensor, rows: int) -> torch.Tensor:
        """``y`` behind a node whose backward averages ``net``'s gradients over the
        replicas when the backward ends (with several replicas, and a graph to go back
        through; else ``y`` itself)."""
        if self.data.size == 1 or not (torch.is_grad_enabled() and y.requires_grad):
            return y
        self._queued = False  # a backward that failed midway left it set
        return _AverageOverReplicas.apply(self, net, y, rows)

    def queue_average(self, net: nn.Module, rows: int) -> None:
        """Average ``net``'s gradients when the running backward ends (once, however
        many outputs it goes through)."""
        if self._queued:
            return
        self._queued = True

        def average() -> None:
            self._queued = False
            average_by_rows(self.data, net.parameters(), rows)

        torch.autograd.Variable._execution_engine.queue_callback(average)

    @torch.no_grad()
    def synchronize(self, net: nn.Module) -> None:
        """``net``'s parameters and floating-point buffers (batch norm's running
        statistics, which local batch norm lets drift apart) := replica 0's. The weights
        and optimizer states already agree: every replica applies the same averaged
        gradient. The dropout seeds, integer buffers, stay each replica's own."""
        if self.data.size == 1:
            return
        flat = flat_state(net)
        if flat.numel():
            self.data.broadcast_(flat, 0, "replica 0's weights")
            load_flat_state(net, flat)


def check_batch_norm(batch_norm: str) -> str:
    """``batch_norm`` if it names a kind of batch norm over replicas, else a ValueError."""
    if batch_norm not in BATCH_NORMS:
        raise ValueError(f"replica_bn must be one of {BATCH_NORMS}, got {batch_norm!r}")
    return batch_norm


class _AverageOverReplicas(torch.autograd.Function):
    """Identity on the network's output; its backward (the first node of every backward
    through the output) queues the replicas' gradient average for the end of the pass."""

    @staticmethod
    def forward(ctx: Any, replicas: Replicas, net: nn.Module, y: torch.Tensor, rows: int):
        ctx.replicas, ctx.net, ctx.rows = replicas, net, rows
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        ctx.replicas.queue_average(ctx.net, ctx.rows)
        return None, None, grad, None
