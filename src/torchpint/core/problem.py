"""The contract between a time-dependent problem and the solvers.

A problem is a sequence of propagators on a time grid: ``u_{i+1} = step(u_i, i, level)``.
The state is one torch tensor (any shape, dtype or device). Levels may use different
propagators (a coarse level stands in for several fine steps). The solvers call
:meth:`Problem.bind` with the :class:`~torchpint.core.grid.Grid` before solving, so a
problem can look up the times of any level with :meth:`t` and :meth:`dt`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torchpint.core.grid import Grid


class Problem(ABC):
    """A time-stepping problem ``u_{i+1} = Phi^level_i(u_i)`` on ``nt`` steps.

    Subclasses give :meth:`initial_state` and :meth:`step`. ``step`` must be a pure
    function of ``(u, i, level)``: it must not modify ``u`` in place and must return a
    tensor of the same shape, dtype and device (the solver checks this once per level).

    Args:
        nt: number of time steps on the finest level (points ``t_0 .. t_nt``).
        t_start, t_stop: the time interval; point ``i`` of level 0 is at
            ``t_start + i (t_stop - t_start) / nt``.

    ``divergence_hint`` is the likely cause the solver names when it diverges on this
    problem (empty: none known).
    """

    divergence_hint: str = ""

    def __init__(self, nt: int, t_start: float = 0.0, t_stop: float = 1.0) -> None:
        if int(nt) != nt or nt < 1:
            raise ValueError(f"nt must be a positive integer number of time steps, got {nt!r}")
        if not t_stop > t_start:
            raise ValueError(f"t_stop ({t_stop}) must be larger than t_start ({t_start})")
        self.nt = int(nt)
        self.t_start = float(t_start)
        self.t_stop = float(t_stop)
        self._grid: Grid | None = None

    # -- what a problem gives ---------------------------------------------------------
    @abstractmethod
    def initial_state(self) -> torch.Tensor:
        """The state at ``t_0`` (the solver never changes it)."""

    @abstractmethod
    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        """Propagate ``u`` from point ``i`` to point ``i + 1`` of ``level``."""

    # -- what the solver gives back ---------------------------------------------------
    def bind(self, grid: Grid) -> None:
        """Attach the multilevel grid; called by the solvers before they step."""
        if grid.nt != self.nt:
            raise ValueError(f"grid has {grid.nt} steps but the problem has {self.nt}")
        self._grid = grid

    @property
    def grid(self) -> Grid:
        if self._grid is None:
            raise RuntimeError("problem is not bound to a grid yet: call problem.bind(grid)")
        return self._grid

    def fine_index(self, i: int, level: int) -> int:
        """Index on level 0 of point ``i`` of ``level`` (``i`` itself without a grid)."""
        return i if self._grid is None else self._grid.fine_index(i, level)

    def t(self, i: int, level: int = 0) -> float:
        """Time of point ``i`` of ``level``."""
        return self.t_start + self.fine_index(i, level) * (self.t_stop - self.t_start) / self.nt

    def dt(self, i: int, level: int = 0) -> float:
        """Length of step ``i`` of ``level`` (from point ``i`` to ``i + 1``)."""
        return self.t(i + 1, level) - self.t(i, level)


class FunctionProblem(Problem):
    """A problem from plain functions: ``steps[level](u, i) -> u`` (parareal's F and G).

    ``steps`` holds one callable per level; the last one is reused on deeper levels.
    """

    def __init__(
        self,
        u0: torch.Tensor,
        steps: Sequence[Callable[[torch.Tensor, int], torch.Tensor]],
        nt: int,
        t_start: float = 0.0,
        t_stop: float = 1.0,
    ) -> None:
        super().__init__(nt, t_start, t_stop)
        if not steps:
            raise ValueError("steps needs at least one callable (the fine propagator)")
        self._u0 = u0
        self._steps = list(steps)

    def initial_state(self) -> torch.Tensor:
        return self._u0

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        return self._steps[min(level, len(self._steps) - 1)](u, i)


def serial_solve(problem: Problem, level: int = 0) -> torch.Tensor:
    """Sequential time stepping on ``level``: the exact solution of A(u) = g there.

    Returns a tensor of shape ``(n + 1, *state.shape)``. Level > 0 needs a bound grid.
    """
    n = problem.nt if level == 0 else problem.grid.n_steps(level)
    u0 = problem.initial_state()
    out = torch.empty((n + 1, *u0.shape), dtype=u0.dtype, device=u0.device)
    out[0] = u0
    for i in range(n):
        out[i + 1] = problem.step(out[i], i, level)
    return out
