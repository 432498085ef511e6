"""A 2-D grid of ranks for parareal x data parallelism: D replicas of an N-chunk network.

Rank ``r = d * N + j`` runs chunk j of replica d. The N ranks of a replica (consecutive,
so one node's GPUs under torchrun) exchange chunk states every parareal iteration; the D
ranks that hold chunk j meet once per step to average their gradients. Every message goes
through the floor's communicator (:mod:`torchpint.runtime.comm`), with the grid's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.distributed as dist

from torchpint.runtime.comm import GroupComm, new_group, world_rank, world_size


@dataclass(frozen=True, eq=False)
class ProcessGrid:
    """This rank's place in the grid and its two process groups.

    ``chunk_group``: the N ranks of replica ``replica`` (the parareal executor's group);
    ``data_group``: the D ranks that run chunk ``chunk`` (gradients averaged among them);
    ``timeout``: seconds a collective on either waits for a peer before it fails.
    """

    chunks: int
    replicas: int
    chunk: int
    replica: int
    chunk_group: Any
    data_group: Any
    timeout: float = 300.0

    @cached_property
    def data_comm(self) -> GroupComm:
        """The communicator over ``data_group`` (this chunk's D replicas)."""
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


def process_grid(chunks: int, replicas: int = 1, *, timeout: float = 300.0) -> ProcessGrid:
    """Split the world into ``replicas`` data-parallel replicas of ``chunks`` ranks each.

    Every rank must call it (it creates ``chunks + replicas`` process groups, collectively);
    the world size must be ``chunks * replicas``. ``timeout``: seconds before a collective
    on the new groups fails (a peer that died or hung), as for the world's group.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "process_grid needs torch.distributed initialised (dist.init_process_group, "
            "e.g. under torchrun)"
        )
    for name, value in (("chunks", chunks), ("replicas", replicas)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    world, rank = world_size(), world_rank()
    if world != chunks * replicas:
        raise ValueError(
            f"a grid of {replicas} replica(s) x {chunks} chunk(s) needs {chunks * replicas} "
            f"ranks, the world has {world}: launch {chunks * replicas} processes "
            f"(torchrun --nproc-per-node {chunks * replicas}) or change the grid"
        )
    chunk_groups = [  # every rank creates every group, in the same order
        new_group([d * chunks + j for j in range(chunks)], timeout) for d in range(replicas)
    ]
    data_groups = [
        new_group([d * chunks + j for d in range(replicas)], timeout) for j in range(chunks)
    ]
    d, j = divmod(rank, chunks)
    return ProcessGrid(chunks, replicas, j, d, chunk_groups[d], data_groups[j], float(timeout))
