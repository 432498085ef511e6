"""A 2-D grid of ranks for parareal x data parallelism: D replicas of an N-chunk network.

Rank ``r = d * N + j`` runs chunk j of replica d. The N ranks of a replica (consecutive,
so one node's GPUs under torchrun) exchange chunk states every parareal iteration; the D
ranks that hold chunk j meet once per step to average their gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True, eq=False)
class ProcessGrid:
    """This rank's place in the grid and its two process groups.

    ``chunk_group``: the N ranks of replica ``replica`` (the parareal executor's group);
    ``data_group``: the D ranks that run chunk ``chunk`` (gradients averaged among them).
    """

    chunks: int
    replicas: int
    chunk: int
    replica: int
    chunk_group: Any
    data_group: Any

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
        device = _collective_device(self.data_group)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, group=self.data_group)
        return t.tolist()


def _collective_device(group: Any) -> torch.device:
    """Where a small tensor must live for a collective on ``group`` (NCCL: the GPU)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def process_grid(chunks: int, replicas: int = 1, *, timeout: float = 300.0) -> ProcessGrid:
    """Split the world into ``replicas`` data-parallel replicas of ``chunks`` ranks each.

    Every rank must call it (it creates ``chunks + replicas`` process groups, collectively);
    the world size must be ``chunks * replicas``. ``timeout``: seconds before a collective
    on the new groups fails (a peer that died), as for the world's group.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "process_grid needs torch.distributed initialised (dist.init_process_group, "
            "e.g. under torchrun)"
        )
    for name, value in (("chunks", chunks), ("replicas", replicas)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    world, rank = dist.get_world_size(), dist.get_rank()
    if world != chunks * replicas:
        raise ValueError(
            f"a grid of {replicas} replica(s) x {chunks} chunk(s) needs {chunks * replicas} "
            f"ranks, the world has {world}: launch {chunks * replicas} processes "
            f"(torchrun --nproc-per-node {chunks * replicas}) or change the grid"
        )
    wait = timedelta(seconds=timeout)
    chunk_groups = [  # every rank creates every group, in the same order
        dist.new_group([d * chunks + j for j in range(chunks)], timeout=wait)
        for d in range(replicas)
    ]
    data_groups = [
        dist.new_group([d * chunks + j for d in range(replicas)], timeout=wait)
        for j in range(chunks)
    ]
    d, j = divmod(rank, chunks)
    return ProcessGrid(chunks, replicas, j, d, chunk_groups[d], data_groups[j])
