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

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchpint.common.modules import flat_state, load_flat_state
from torchpint.common.process_grid import ProcessGrid, ReplicaAverage
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
        self.batch_norm = check_batch_norm(batch_norm)
        # the grid's shard, sum and data communicator, with this network's timeout
        self.grid = grid if timeout == grid.timeout else replace(grid, timeout=timeout)
        self.data = self.grid.data_comm
        self.world = GroupComm(None, timeout)
        self.average = ReplicaAverage(self.data)  # wraps the output (LayerParallel.forward)

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
