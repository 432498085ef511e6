"""The settings of one training by MGRIT, in one validated dataclass.

:class:`TrainingConfig` holds what defines the time-stepping problem (learning-rate and
data rules, momentum, seed, precision) and how MGRIT solves it (solver variant, coarsening,
relaxation, tolerance). :func:`~torchpint.training.train_mgrit`,
:class:`~torchpint.training.TrainingProblem` and ``torchpint train-mgrit`` all take or
build one, so each setting is named and defaulted here only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from torchpint.training.rules import DATA_RULES, LR_RULES

SOLVERS = ("two-level", "V", "F")


def solver_options(solver: str, max_coarse: int = 10) -> dict[str, Any]:
    """MGRIT keyword arguments for ``"two-level"``, ``"V"`` (to <= max_coarse points) or ``"F"``."""
    if solver == "two-level":
        return {"levels": 2, "cycle": "V"}
    if solver in ("V", "F"):
        return {"levels": None, "max_coarse": max_coarse, "cycle": solver}
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")


def default_tol(steps: int) -> float:
    """The paper's stopping tolerance ``1e-9 sqrt(N)``."""
    return 1e-9 * math.sqrt(steps)


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that defines a training by MGRIT (the paper's defaults).

    Problem (what serial training would do):
        steps: N, the number of optimizer steps (time steps).
        lr: the fine learning rate alpha_0.
        lr_rule, lr_growth, lr_max: the coarse-level rates (see :func:`make_lr_rule`).
        data_rule, batch_size: the data of each step (see :class:`DataRule`).
        momentum, weight_decay: SGD with ``v <- mu v + g + wd w; w <- w - lr v``.
        seed: keys minibatch shuffling and dropout together with ``(level, i)``.
        dtype: the state's dtype; float64 so the residual can reach ``1e-9 sqrt(N)``.
        fast: the NumPy sigmoid-MLP engine (``None``: when the model fits it).
    Solver (how MGRIT finds it):
        solver: ``"two-level"``, ``"V"`` or ``"F"``; cfactor, relax, max_coarse: the
        hierarchy; tol (``None``: ``1e-9 sqrt(N)``), max_iter, nested: the iteration.
    """

    steps: int
    lr: float
    lr_rule: str | Callable[[int], float] = "geometric"
    lr_growth: float = 2.0
    lr_max: float = math.inf
    data_rule: str = "full"
    batch_size: int | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    dtype: torch.dtype = torch.float64
    fast: bool | None = None
    solver: str = "F"
    cfactor: int = 2
    relax: str = "FCF"
    max_coarse: int = 10
    tol: float | None = None
    max_iter: int = 50
    nested: bool = False

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if not callable(self.lr_rule) and self.lr_rule not in LR_RULES:
            raise ValueError(
                f"lr_rule must be one of {LR_RULES} or a callable, got {self.lr_rule!r}"
            )
        if self.data_rule not in DATA_RULES:
            raise ValueError(f"data rule must be one of {DATA_RULES}, got {self.data_rule!r}")

    @classmethod
    def build(cls, config: TrainingConfig | None = None, **settings: Any) -> TrainingConfig:
        """``config`` with ``settings`` replaced, or a new config from ``settings``;
        ``None`` values are left out (they mean "the default")."""
        settings = {k: v for k, v in settings.items() if v is not None}
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(
                f"unknown training setting(s) {unknown}; TrainingConfig has {sorted(names)}"
            )
        if config is None:
            missing = [k for k in ("steps", "lr") if k not in settings]
            if missing:
                raise TypeError(f"a training by MGRIT needs {' and '.join(missing)}")
            return cls(**settings)
        return replace(config, **settings)

    @property
    def tolerance(self) -> float:
        """The residual tolerance in force (``tol`` or the paper's ``1e-9 sqrt(N)``)."""
        return default_tol(self.steps) if self.tol is None else float(self.tol)

    def mgrit_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~torchpint.core.MGRIT` for this config."""
        return {
            "cfactor": self.cfactor, "relax": self.relax, "tol": self.tolerance,
            "max_iter": self.max_iter, "nested": self.nested,
            **solver_options(self.solver, self.max_coarse),
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (a callable rule reads ``"callable"``, an infinite cap None)."""
        d = asdict(self)
        d.update(
            lr_rule=self.lr_rule if isinstance(self.lr_rule, str) else "callable",
            lr_max=None if math.isinf(self.lr_max) else self.lr_max,
            dtype=str(self.dtype).removeprefix("torch."),
            tol=self.tolerance,
        )
        return d
