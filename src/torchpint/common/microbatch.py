"""Batch norm as data-parallel ranks or pipeline micro-batches see it, in one process.

DDP with the batch split in equal shares, and a pipeline with M micro-batches, compute
the original network's gradient except that every batch norm normalizes each share by its
own statistics. :class:`MicroBatchBN` reproduces that in one process (to train what they
train, or to check them against it): the model runs on the slices of each training batch
in turn and the outputs are concatenated, so the mean loss over the batch has their
gradient.
"""

from __future__ import annotations

import torch
from torch import nn

STATS = ("first", "all")


class MicroBatchBN(nn.Module):
    """``model`` run on ``parts`` equal slices of each training batch, outputs
    concatenated: batch norm sees each slice alone, as a DDP rank sees its share or a
    pipeline stage its micro-batch.

    ``stats``: ``"first"`` keeps the running statistics of the first slice only (DDP
    broadcasts rank 0's buffers), ``"all"`` updates them from every slice in turn (a
    pipeline stage). Evaluation, and ``parts=1``, run the whole batch.
    """

    def __init__(self, model: nn.Module, parts: int, stats: str = "all") -> None:
        super().__init__()
        if parts < 1:
            raise ValueError(f"parts must be at least 1, got {parts}")
        if stats not in STATS:
            raise ValueError(f"stats must be one of {STATS}, got {stats!r}")
        self.model, self.parts, self.stats = model, parts, stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.parts == 1:
            return self.model(x)
        if x.shape[0] % self.parts:
            raise ValueError(f"batch {x.shape[0]} does not split into {self.parts} parts")
        slices = x.chunk(self.parts)
        outs = [self.model(slices[0])]
        # "first": the later slices normalize by their own statistics as usual, but update
        # throw-away copies of the buffers (autograd may hold the buffers: not in place)
        kept = _swap_in_copies(self.model) if self.stats == "first" else []
        try:
            outs += [self.model(xi) for xi in slices[1:]]
        finally:
            for m, name, b in kept:
                setattr(m, name, b)
        return torch.cat(outs)


def _swap_in_copies(model: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """Replace every buffer of ``model`` by a copy; returns the originals to put back."""
    kept = []
    for m in model.modules():
        for name, b in m.named_buffers(recurse=False):
            kept.append((m, name, b))
            setattr(m, name, b.clone())
    return kept
