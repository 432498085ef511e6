"""What a solve returns (solution, residual history, timings) and the parallel cost model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from torchpint.core.grid import Grid


class DivergenceError(RuntimeError):
    """The solve produced NaN/inf or a residual that keeps growing."""


@dataclass
class MGRITResult:
    """The outcome of :meth:`MGRIT.solve`.

    ``u`` holds the points this rank owns (all points when serial), ``points`` their
    fine indices, ``ghost`` the point just before them (``None`` on the rank that owns
    point 0), ``final`` the state at the last point on every rank. ``residuals[k]``
    is the residual 2-norm after iteration ``k + 1``.

    ``converged`` says whether the residual met the tolerance; it is ``None`` when no
    convergence test ran: a solve of a fixed number of iterations (``MGRIT(...,
    iterations=k)``), whose ``fixed_iterations`` is that k (``None`` otherwise).
    """

    u: torch.Tensor
    points: range
    final: torch.Tensor
    residuals: list[float]
    converged: bool | None
    grid: Grid
    timings: dict[str, Any] = field(default_factory=dict)
    step_counts: list[int] = field(default_factory=list)
    ghost: torch.Tensor | None = None
    fixed_iterations: int | None = None

    @property
    def iterations(self) -> int:
        """Iterations done (a resumed solve counts those before the checkpoint too)."""
        return len(self.residuals)

    @property
    def conv_factors(self) -> list[float]:
        """``r_k / r_{k-1}`` for k >= 2 (NaN where the previous residual is 0)."""
        r = self.residuals
        return [r[k] / r[k - 1] if r[k - 1] > 0 else math.nan for k in range(1, len(r))]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no tensors)."""
        return {
            "iterations": self.iterations,
            "converged": self.converged,
            "fixed_iterations": self.fixed_iterations,
            "residuals": list(self.residuals),
            "conv_factors": [None if math.isnan(c) else c for c in self.conv_factors],
            "levels": self.grid.num_levels,
            "steps_per_level": list(self.grid.n),
            "cfactors": list(self.grid.m),
            "step_counts": list(self.step_counts),
            "timings": self.timings,
        }


def _per_proc(count: int, procs: int) -> int:
    return -(-count // procs) if count > 0 else 0


def _level_costs(grid: Grid, costs: Sequence[float] | None) -> list[float]:
    """One step's cost per level (1 everywhere by default; the last value repeats)."""
    c = list(costs) if costs is not None else [1.0] * grid.num_levels
    return c + [c[-1]] * (grid.num_levels - len(c))


def _f_relax_cost(grid: Grid, l: int, procs: int, c: Sequence[float]) -> float:
    """Critical path of one F-relaxation on level l: (m - 1) steps per owned interval."""
    return _per_proc(grid.n[l] // grid.m[l], procs) * (grid.m[l] - 1) * c[l]


def iteration_cost(
    grid: Grid,
    procs: int,
    *,
    relax: str = "FCF",
    cf_iter: int = 1,
    cycle: str = "V",
    costs: Sequence[float] | None = None,
) -> float:
    """Critical-path cost of one MGRIT iteration on ``procs`` processors.

    Counts the sequential step applications a processor must do when the coarse
    intervals of every level are spread evenly over the processors (communication is
    free); ``costs[l]`` is the cost of one step on level ``l`` (default 1 everywhere).
    It follows the solver's schedule: relaxation, FAS restriction, the coarsest
    sequential solve, correction + F-relaxation, F-cycle extras, and the residual.
    """
    L = grid.num_levels
    c = _level_costs(grid, costs)
    ncf = 0 if relax == "F" else cf_iter

    def f_relax(l: int) -> float:
        return _f_relax_cost(grid, l, procs, c)

    def c_relax(l: int) -> float:
        return _per_proc(grid.n[l] // grid.m[l], procs) * c[l]

    def restrict(l: int) -> float:
        return _per_proc(grid.n[l] // grid.m[l], procs) * (c[l] + c[l + 1])

    def cycle_cost(l: int, kind: str, first_f: bool, top: bool) -> float:
        if l == L - 1:
            return grid.n[l] * c[l]
        cost = f_relax(l) if first_f and not top else 0.0
        cost += ncf * (c_relax(l) + f_relax(l)) + restrict(l)
        cost += cycle_cost(l + 1, kind, True, False) + f_relax(l)
        if l > 0 and kind == "F":
            cost += cycle_cost(l, "V", False, False)
        return cost

    residual = c_relax(0) if L > 1 else 0.0
    return cycle_cost(0, cycle, True, True) + residual


def potential_speedup(
    grid: Grid,
    iterations: int,
    procs: int,
    *,
    relax: str = "FCF",
    cf_iter: int = 1,
    cycle: str = "V",
    costs: Sequence[float] | None = None,
) -> float:
    """Serial time stepping cost over the MGRIT critical path (the papers' cost model).

    ``speedup = N c_0 / (iterations x iteration_cost)``; the first iteration's extra
    F-relaxation is included.
    """
    c = _level_costs(grid, costs)
    per_iter = iteration_cost(grid, procs, relax=relax, cf_iter=cf_iter, cycle=cycle, costs=costs)
    first_f = _f_relax_cost(grid, 0, procs, c) if grid.num_levels > 1 else 0.0
    return grid.n[0] * c[0] / (iterations * per_iter + first_f)
