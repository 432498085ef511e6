"""Module helpers: train/eval mode for a span (the splitting, coarse-network and cost
code), and a module's weights as one flat tensor (what a rank sends when another needs
them: layer-parallel's edge layers, the replicas' synchronisation)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def train_mode(modules: Sequence[nn.Module], mode: bool) -> Iterator[None]:
    """Put ``modules`` (and all their submodules) in train (``True``) or eval mode for
    the span of the ``with`` block, then restore every submodule's own flag."""
    saved = [(s, s.training) for m in modules for s in m.modules()]
    try:
        for m in modules:
            m.train(mode)
        yield
    finally:
        for s, flag in saved:
            s.training = flag


def state_tensors(module: nn.Module) -> list[torch.Tensor]:
    """``module``'s parameters and floating-point buffers (e.g. batch norm's running
    statistics), in a fixed order; integer buffers (counters, seeds) are left out."""
    return [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]


def flat_state(module: nn.Module) -> torch.Tensor:
    """:func:`state_tensors` as one flat tensor (detached copies; empty if none)."""
    tensors = state_tensors(module)
    if not tensors:
        return torch.zeros(0)
    return torch.cat([t.detach().reshape(-1) for t in tensors])


@torch.no_grad()
def load_flat_state(module: nn.Module, flat: torch.Tensor) -> None:
    """Copy ``flat`` (as :func:`flat_state` gives it) into ``module``'s tensors."""
    i = 0
    for t in state_tensors(module):
        t.copy_(flat[i:i + t.numel()].view_as(t))
        i += t.numel()
