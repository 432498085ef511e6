"""The contract between a time-dependent problem and the solvers.

A problem is a sequence of propagators on a time grid: ``u_{i+1} = step(u_i, i, level)``.
The state is one torch tensor (any shape, dtype or device). Levels may use different
propagators (a coarse level stands in for several fine steps), and states of different
shapes (spatial coarsening: a problem's :meth:`Problem.restrict` and
:meth:`Problem.interpolate` map between a level and the next). The solvers call
:meth:`Problem.bind` with the :class:`~torchpint.core.grid.Grid` before solving, so a
problem can look up the times of any level with :meth:`t` and :meth:`dt`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from torchpint.core.grid import is_integer

if TYPE_CHECKING:
    from torchpint.core.grid import Grid


class Problem(ABC):
    """A time-stepping problem ``u_{i+1} = Phi^level_i(u_i)`` on ``nt`` steps.

    Subclasses give :meth:`initial_state` and :meth:`step`. ``step`` must be a pure
    function of ``(u, i, level)``: it must not modify ``u`` in place and must return a
    tensor of the same shape, dtype and device (the solvers check this once per level at
    their first solve, :func:`serial_solve` at its first step, and
    :func:`torchpint.testing.check_problem` all of a problem's rules).

    Args:
        nt: number of time steps on the finest level (points ``t_0 .. t_nt``).
        t_start, t_stop: the time interval; point ``i`` of level 0 is at
            ``t_start + i (t_stop - t_start) / nt``.

    ``divergence_hint`` is the likely cause the solver names when it diverges on this
    problem (empty: none known). :meth:`fingerprint` identifies the problem in checkpoints;
    subclasses with parameters extend it.
    """

    divergence_hint: str = ""

    def __init__(self, nt: int, t_start: float = 0.0, t_stop: float = 1.0) -> None:
        if not is_integer(nt) or nt < 1:
            raise ValueError(f"nt must be a positive integer number of time steps, got {nt!r}")
        if not (math.isfinite(t_start) and math.isfinite(t_stop)):
            raise ValueError(f"t_start and t_stop must be finite, got {t_start!r} and {t_stop!r}")
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

    def final_step(self, u: torch.Tensor, i: int) -> torch.Tensor:
        """Fine step ``i`` of a fixed-iteration solve's final sweep (XBraid's "done"
        flag): the last iteration's fine F-relaxation and residual take every fine step
        exactly once through here, at the solution's states. The base is :meth:`step`; a
        problem may do there what would otherwise take a separate pass (layer-parallel
        training records each layer's graph, its adjoint the parameter gradients)."""
        return self.step(u, i, 0)

    def final_step_into(self, u: torch.Tensor, i: int, out: torch.Tensor) -> None:
        """:meth:`final_step`'s result written into ``out``, as :meth:`step_into` is
        :meth:`step`'s (used for a problem that overrides :meth:`step_into`)."""
        out.copy_(self.final_step(u, i))

    def step_into(self, u: torch.Tensor, i: int, level: int, out: torch.Tensor) -> None:
        """:meth:`step`'s result written into ``out`` (a state like ``u``, never ``u``
        itself). The base copies it there. A problem may override this to write in place
        and save the solvers a copy per step (layer-parallel training does); it must
        write exactly what :meth:`step` returns (the solvers check this once per level)."""
        out.copy_(self.step(u, i, level))

    def restrict(self, u: torch.Tensor, level: int) -> torch.Tensor:
        """State ``u`` of ``level`` in level ``level + 1``'s space (spatial coarsening):
        where the FAS cycle carries a state, or a residual, down to the next level. The
        base is the identity (every level the same shape), and a problem that keeps it
        is solved exactly as before this hook existed (the solvers then copy rows in one
        operation and overwrite C-values in the correction). A problem that overrides it
        overrides :meth:`interpolate` too; it must not modify ``u``, and must map states
        of one shape to states of one shape."""
        return u

    def interpolate(self, e: torch.Tensor, level: int) -> torch.Tensor:
        """Correction ``e`` of level ``level + 1`` in level ``level``'s space: the FAS
        correction ``u += interpolate(u_c - restrict(u))`` at level ``level``'s C-points
        (XBraid's spatial refine). The base is the identity; see :meth:`restrict`."""
        return e

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this problem, as a JSON-able dict (checked when resuming).

        The base gives the class (module-qualified) and the time grid; a subclass adds
        every parameter its steps depend on (``{**super().fingerprint(), "lam": ...}``).
        The initial state is not needed here: the solver fingerprints u_0 itself. The
        device is left out on purpose: a run may resume on another device.
        """
        cls = type(self)
        return {"class": f"{cls.__module__}.{cls.__qualname__}", "nt": self.nt,
                "t_start": self.t_start, "t_stop": self.t_stop}

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
    Its :meth:`fingerprint` can only name the callables (module and qualified name), not
    what they compute: two different lambdas, or a closure over other parameters, look
    alike there, so a checkpoint cannot tell them apart.
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

    def fingerprint(self) -> dict[str, Any]:
        """The base fingerprint and the callables' names (their code is not compared)."""
        return {**super().fingerprint(), "steps": [callable_name(f) for f in self._steps]}


def callable_name(f: Any) -> str:
    """``module.qualname`` of a function or callable object (for fingerprints)."""
    target = f if hasattr(f, "__qualname__") else type(f)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


def check_step_output(out: Any, u: torch.Tensor, i: int, level: int) -> None:
    """Raise unless ``out`` (what ``step(u, i, level)`` returned) is a state like ``u``.

    A shape, dtype and device comparison, no values: cheap enough for every step.
    """
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"problem.step(u, {i}, level={level}) returned {type(out).__name__}, "
            "not a torch.Tensor"
        )
    if out.shape != u.shape or out.dtype != u.dtype or out.device != u.device:
        raise ValueError(
            f"problem.step(u, {i}, level={level}) (step {i} of level {level}) returned shape "
            f"{tuple(out.shape)}, dtype {out.dtype}, device {out.device}; the state is shape "
            f"{tuple(u.shape)}, dtype {u.dtype}, device {u.device}. A step must return a "
            "state like its input at every index."
        )


STEP_RULES = ("tensor", "shape", "dtype", "device", "pure", "into")
"""The rules of :meth:`Problem.step` that :func:`step_faults` checks, in its order."""


def step_faults(
    problem: Problem, u: torch.Tensor, i: int, level: int
) -> tuple[Any, dict[str, str]]:
    """Take ``problem.step`` on a copy of ``u``: its output and what it broke, by rule.

    The keys are those of :data:`STEP_RULES` that failed (none: the step kept the
    contract here), the values the messages; a problem that overrides
    :meth:`Problem.step_into` has it compared with the step, bit for bit. The one
    implementation of the step checks of :func:`checked_step` (the solvers',
    :func:`serial_solve`'s) and of
    :func:`torchpint.testing.check_problem`. It compares values, so it runs once per
    level, not at every step.
    """
    arg = u.clone()
    out = problem.step(arg, i, level)
    where = f"problem.step(u, {i}, level={level})"
    faults: dict[str, str] = {}
    if not isinstance(out, torch.Tensor):
        faults["tensor"] = f"{where} returned {type(out).__name__}, not a torch.Tensor"
    elif out.shape != u.shape or out.dtype != u.dtype or out.device != u.device:
        like = (
            f"{where} returned shape {tuple(out.shape)}, dtype {out.dtype}, device "
            f"{out.device}; the state is shape {tuple(u.shape)}, dtype {u.dtype}, device "
            f"{u.device}. A step must return a state like its input."
        )
        for rule in ("shape", "dtype", "device"):
            if getattr(out, rule) != getattr(u, rule):
                faults[rule] = like
    if not torch.equal(arg, u):
        faults["pure"] = f"{where} modified its input in place; return a new tensor"
    if writes_in_place(problem) and not faults:
        into = torch.full_like(u, math.nan)
        problem.step_into(arg, i, level, into)
        if not torch.equal(arg, u):
            faults["pure"] = (f"problem.step_into(u, {i}, level={level}, out) modified its "
                              "input in place; write only into out")
        elif not torch.equal(into, out):
            faults["into"] = (f"problem.step_into(u, {i}, level={level}, out) wrote "
                              f"something other than what {where} returns; it must write "
                              "exactly that")
    return out, faults


def writes_in_place(problem: Problem) -> bool:
    """Whether ``problem`` overrides :meth:`Problem.step_into` (the solvers then let it
    write its steps into their buffers)."""
    return type(problem).step_into is not Problem.step_into


def has_transfers(problem: Problem) -> bool:
    """Whether ``problem`` overrides :meth:`Problem.restrict` or
    :meth:`Problem.interpolate` (its levels may hold states of different shapes)."""
    cls = type(problem)
    return cls.restrict is not Problem.restrict or cls.interpolate is not Problem.interpolate


def level_states(problem: Problem, u: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``u`` (a state of level 0) carried to every one of ``levels`` levels by
    :meth:`Problem.restrict`: what a level's initial state and buffers look like. The same
    tensor on every level for a problem without transfers."""
    if not has_transfers(problem):
        return [u] * levels
    out = [u]
    for l in range(levels - 1):
        out.append(problem.restrict(out[-1], l))
    return out


def checked_step(problem: Problem, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
    """``problem.step(u, i, level)``, taken on a copy of ``u`` and checked: a tensor like
    ``u`` (else ``TypeError`` / ``ValueError``), ``u`` left unchanged (else ``ValueError``
    "modified its input in place"). A step that writes into its input would corrupt the
    solvers' stored states, so they and :func:`serial_solve` refuse it up front."""
    out, faults = step_faults(problem, u, i, level)
    if "tensor" in faults:
        raise TypeError(faults["tensor"])
    for rule in STEP_RULES[1:]:
        if rule in faults:
            raise ValueError(faults[rule])
    return out


def serial_solve(problem: Problem, level: int = 0) -> torch.Tensor:
    """Sequential time stepping on ``level``: the exact solution of A(u) = g there.

    Returns a tensor of shape ``(n + 1, *state.shape)``. Level > 0 needs a bound grid,
    and starts from the initial state carried there (:func:`level_states`). The first
    step is checked like the solvers check it (:func:`checked_step`: a step that changes
    its input in place is refused); every step's output must be a state like its input.
    """
    n = problem.nt if level == 0 else problem.grid.n_steps(level)
    u0 = level_states(problem, problem.initial_state(), level + 1)[level]
    out = torch.empty((n + 1, *u0.shape), dtype=u0.dtype, device=u0.device)
    out[0] = u0
    for i in range(n):
        if i == 0:
            new = checked_step(problem, out[0], 0, level)
        else:
            new = problem.step(out[i], i, level)
            check_step_output(new, out[i], i, level)
        out[i + 1] = new
    return out
