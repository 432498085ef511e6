"""What a layer-parallel network reports about its last batch: one result object."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SolveReport:
    """What the last batch's solves did: the residual history of the forward and of the
    adjoint solve, their seconds (``forward_solve``, ``adjoint_solve`` and the part spent
    in the steps), and the steps per level of each."""

    fwd_residuals: list[float]
    bwd_residuals: list[float]
    timings: dict[str, float]
    step_counts: dict[str, list[int]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
