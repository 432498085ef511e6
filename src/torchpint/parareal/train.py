"""Kept for old imports: the training loop lives in :mod:`torchpint.trainer`, beneath every
application. ``TrainConfig`` and ``TrainResult`` are deprecated spellings of
:class:`~torchpint.trainer.FitConfig` and :class:`~torchpint.trainer.FitResult`."""

from __future__ import annotations

import warnings
from typing import Any

from torchpint.runtime.comm import world_rank
from torchpint.trainer import (
    SCHEDULES,
    EpochStats,
    FitConfig,
    FitResult,
    evaluate,
    fit,
    load_checkpoint,
    lr_factor,
    make_optimizer,
    make_scheduler,
)

_RENAMED = {"TrainConfig": FitConfig, "TrainResult": FitResult}


def is_main_process() -> bool:
    """Rank 0 of the world, or the only process."""
    return world_rank() == 0


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"torchpint.parareal.train.{name} is deprecated; use "
                      f"torchpint.trainer.{new.__name__}", DeprecationWarning, stacklevel=2)
        return new
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SCHEDULES", "EpochStats", "FitConfig", "FitResult", "evaluate", "fit",
           "is_main_process", "load_checkpoint", "lr_factor", "make_optimizer",
           "make_scheduler"]
