"""One training loop for every application, below all of them.

:func:`fit` trains any ``nn.Module`` classifier, and a model spread over ranks through
the small :class:`RankAware` protocol (no attribute probing, no application's class).
It checkpoints in the floor's dialect, stops at the next batch on SIGINT/SIGTERM with a
checkpoint that resumes bit for bit, and reports a :class:`FitResult`.
"""

from torchpint.trainer.config import SCHEDULES, FitConfig, lr_factor, make_optimizer, make_scheduler
from torchpint.trainer.loop import batch_loss, evaluate, fit
from torchpint.trainer.protocol import RankAware, StepHook
from torchpint.trainer.result import EpochStats, FitResult
from torchpint.trainer.state import read as load_checkpoint

__all__ = [
    "SCHEDULES",
    "EpochStats",
    "FitConfig",
    "FitResult",
    "RankAware",
    "StepHook",
    "batch_loss",
    "evaluate",
    "fit",
    "load_checkpoint",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
]
