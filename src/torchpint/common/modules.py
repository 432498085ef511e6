"""Module-mode helpers shared by the splitting, coarse-network and cost code."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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
