"""What :func:`~torchpint.trainer.fit` returns: the per-epoch history and step times."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EpochStats:
    """What one epoch did. Accuracies in percent."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    epoch_time_s: float
    step_time_s: float


@dataclass
class FitResult:
    """A training run: per-epoch history and the wall time of every step."""

    label: str
    history: list[EpochStats] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    params: int = 0
    resumed_from: int = 0

    @property
    def test_accuracy(self) -> float:
        return self.history[-1].test_accuracy if self.history else float("nan")

    @property
    def step_time_s(self) -> float:
        """Median step time, the first step of every epoch (warm-up) left out."""
        return statistics.median(self.step_times) if self.step_times else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_accuracy": self.test_accuracy,
            "step_time_s": self.step_time_s,
            "params": self.params,
            "epochs": len(self.history),
            "resumed_from_epoch": self.resumed_from,
            "train_time_s": sum(h.epoch_time_s for h in self.history),
            "history": [asdict(h) for h in self.history],
        }
