"""How a model that spans several ranks takes part in :func:`~torchpint.trainer.fit`.

An ordinary ``nn.Module`` lives in one process and needs nothing. A model whose parts or
replicas live on several ranks (a parareal network on the ``distributed`` executor or a
process grid, a layer-parallel network with slabs on ranks) subclasses :class:`RankAware`
and says, in a few methods, what the loop must know: which ranks train it together, whether
each rank's state differs (then every rank writes its own checkpoint file) or the replicas
are made identical and rank 0 writes one, where a batch goes, and which share of a batch
each replica takes. The loop asks nothing else of it: no attribute probing. A
:class:`StepHook` is what the loop calls at every batch, for any model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from torchpint.runtime.comm import Comm


class RankAware(ABC):
    """A model spread over ranks, as the training loop sees it (mix into an ``nn.Module``).

    Every rank of :meth:`fit_comm` calls ``fit`` with the same data and settings.
    """

    @abstractmethod
    def fit_comm(self) -> Comm:
        """Every rank that trains this model together (a ``Comm()`` for one process): the
        loop agrees over it on stops, divergence and which checkpoint files exist."""

    def sharded_state(self) -> bool:
        """True when each rank's ``state_dict`` holds a different part: each rank then
        writes and reads its own file ``PATH.rank<r>``. False (the default): the replicas
        are made identical (:meth:`synchronize`) and rank 0 writes ``PATH``."""
        return False

    def input_device(self) -> torch.device | None:
        """The device a batch is moved to (None: the first parameter's)."""
        return None

    def shard_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of a batch (data-parallel replicas); the whole batch by default."""
        return x, y

    def sum_over_replicas(self, values: list[float]) -> list[float]:
        """``values`` summed over the data-parallel replicas (the whole batch's loss and
        accuracy from each replica's share); unchanged without replicas."""
        return values

    def synchronize(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make the replicas identical (weights, buffers, optimizer state) before a
        checkpoint or an evaluation; a no-op by default."""
        return None


class StepHook:
    """Something :func:`~torchpint.trainer.fit` calls at every batch (``hooks=[...]``), on
    every rank, after the backward and before the optimizer's step: it may read the
    gradients and change how the model computes the next ones (e.g.
    ``layerparallel.AdaptiveIterations``). Its :meth:`state_dict` goes into the training
    checkpoint, so a resumed run goes on as the uninterrupted one."""

    def after_backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       step: int) -> None:
        """Called with this rank's share of the batch; ``step`` counts the run's batches
        from 0."""

    def state_dict(self) -> dict[str, Any]:
        """Plain data and tensors only (checkpoints load with ``weights_only=True``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""


def fit_comm(model: nn.Module) -> Comm:
    """The ranks that train ``model`` together (one process unless it is :class:`RankAware`)."""
    return model.fit_comm() if isinstance(model, RankAware) else Comm()


def input_device(model: nn.Module) -> torch.device:
    """Where ``model`` wants its batches."""
    dev = model.input_device() if isinstance(model, RankAware) else None
    if dev is not None:
        return dev
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
