"""The training recipe of :func:`~torchpint.trainer.fit`: one validated dataclass, and the
optimizer and per-step learning-rate schedule it makes."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

SCHEDULES = ("cosine", "step")


def is_finite(value: object) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class FitConfig:
    """The training recipe. ``milestones`` are fractions of all steps (step schedule)."""

    epochs: int = 5
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, numbers.Integral):
            raise ValueError(f"epochs must be an integer, got {self.epochs!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            value = getattr(self, name)
            if not is_finite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if any(not (is_finite(m) and 0 < m < 1) for m in self.milestones):
            raise ValueError(f"milestones are fractions of training in (0, 1): {self.milestones}")


def make_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay over all trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, cfg: FitConfig) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total`` (per-step schedule)."""
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    return cfg.gamma ** sum(step >= round(m * total) for m in cfg.milestones)


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: FitConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule as a ``LambdaLR`` (its state goes into checkpoints)."""
    total = cfg.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg))
