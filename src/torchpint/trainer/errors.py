"""The error of a training run that turned non-finite."""

from __future__ import annotations

from torchpint.core.history import DivergenceError
from torchpint.trainer.config import FitConfig


def divergence(cfg: FitConfig, label: str, where: str, checkpoint: str | None,
               saved: int | None, cause: str | None = None) -> DivergenceError:
    """Where it turned non-finite, the likely cause (by default a learning rate too
    large), and which checkpoint is kept."""
    if cause is None:
        cause = (
            f"the learning rate lr={cfg.lr:g} is likely too large for this model (lower it), "
            "or the model's weights or the data hold non-finite values"
        )
    if checkpoint and saved:
        kept = f"The last good checkpoint, {checkpoint} after epoch {saved}, is kept."
    elif checkpoint:
        kept = f"No good epoch completed, so nothing was written to {checkpoint}."
    else:
        kept = ""
    return DivergenceError(f"[{label}] training diverged: {where}; {cause}. {kept}".rstrip())
