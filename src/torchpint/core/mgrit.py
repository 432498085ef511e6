"""MGRIT in FAS form (and parareal, its two-level F-relaxation case), serial or distributed.

Conventions are XBraid's and PyMGRIT's: an iteration on level l relaxes (F-relaxation
first on coarse levels and at the very first fine iteration, then (C, F) ``cf_iter``
times), restricts by injection with the FAS right-hand side, recurses, corrects the
C-points and F-relaxes; an F-cycle adds one V-cycle (without its first F-relaxation)
on every level > 0. The reported residual after each iteration is the 2-norm over the
fine C-points i >= 1 of Phi(u_{i-1}) - u_i.

One code path serves both modes: the serial solver is the distributed one on a single
rank, so both apply the same operations to every point, and the distributed iterates
equal the serial ones. A rank owns a contiguous slab of fine points and, on every level,
the points whose fine index lies in it; it keeps one ghost row (the point just before
its slab) that neighbours refresh.

The solver is split by job, as XBraid's drive.c / relax.c / residual.c /
communication.c are: this module validates the settings and drives the solve loop
(:class:`MGRIT`, :class:`Parareal`); :mod:`~torchpint.core.cycle` holds the level
buffers and the cycle (relaxation, restriction, correction, nested iteration);
:mod:`~torchpint.core.schedule` the receive schedule; :mod:`~torchpint.core.residual`
the residual and the divergence checks; :mod:`~torchpint.core.resume` checkpoints,
their fingerprint, resuming and re-slabbing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from torchpint.core.cycle import Cycle
from torchpint.core.grid import Grid, Partition, is_integer, require_int
from torchpint.core.history import MGRITResult
from torchpint.core.problem import Problem, checked_step, level_states
from torchpint.core.residual import DivergenceMonitor, fine_residual, gather_residuals
from torchpint.core.resume import Progress, SlabCheckpoint, solver_fingerprint
from torchpint.core.schedule import ReceiveSchedule
from torchpint.runtime import signals
from torchpint.runtime.checkpoint import atomic_save
from torchpint.runtime.comm import make_comm

CYCLES = ("V", "F")
RELAXATIONS = ("F", "FCF")
DEFAULT_TOL, DEFAULT_MAX_ITER = 1e-10, 100


def relaxation_per_level(relax: str | Sequence[str], levels: int) -> list[str]:
    """``relax`` as one relaxation per relaxing level (all but the coarsest of
    ``levels``): a name applies to all; a sequence gives one each."""
    names = [relax] * (levels - 1) if isinstance(relax, str) else list(relax)
    bad = [r for r in names if r not in RELAXATIONS]
    if bad or (isinstance(relax, str) and relax not in RELAXATIONS):
        raise ValueError(
            f"relax must be one of {RELAXATIONS} or a sequence of them, got {relax!r}"
        )
    if len(names) != levels - 1:
        raise ValueError(
            f"relax gives {len(names)} relaxations for {levels} levels: give one per level "
            f"but the coarsest ({levels - 1}), or one name for all"
        )
    return names


def stopping_rule(
    tol: float | None, max_iter: int | None, iterations: int | None
) -> tuple[float | None, int]:
    """``(tol, max_iter)`` of a solve: to a tolerance (defaults 1e-10 and 100), or, with
    ``iterations=k``, exactly k iterations and no tolerance (``None``). Raises
    ``ValueError`` for a bad value, or for ``iterations`` given with ``tol``/``max_iter``."""
    if iterations is not None:
        given = [f"{n}={v!r}" for n, v in (("tol", tol), ("max_iter", max_iter)) if v is not None]
        if given:
            raise ValueError(
                f"iterations={iterations!r} runs a fixed number of iterations with no "
                f"convergence test, but {' and '.join(given)} "
                f"{'was' if len(given) == 1 else 'were'} given too: pass iterations alone, "
                "or tol and max_iter without iterations"
            )
        return None, require_int("iterations", iterations, 1)
    tol = DEFAULT_TOL if tol is None else tol
    max_iter = DEFAULT_MAX_ITER if max_iter is None else max_iter
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    return float(tol), require_int("max_iter", max_iter, 1)


class MGRIT:
    """Multigrid reduction in time with full approximation storage (FAS).

    Args:
        problem: the time-stepping problem (its ``step`` may differ per level).
        cfactor, levels, min_coarse, max_coarse: the grid hierarchy (see :class:`Grid`).
        cycle: ``"V"`` or ``"F"``.
        relax: ``"F"`` (F-relaxation) or ``"FCF"`` (F then (C, F) ``cf_iter`` times), or
            one of them per relaxing level (all but the coarsest), e.g. ``("F", "FCF")``
            for F on the fine level and FCF on the coarse ones (TorchBraid's default).
        cf_iter: number of CF sweeps with ``relax="FCF"`` (>= 1).
        nested: build the initial guess by nested iteration from the coarsest level;
            otherwise u_0 is given and every other point is zero.
        tol: absolute tolerance on the residual 2-norm (default 1e-10).
        max_iter: maximum number of iterations (default 100).
        iterations: run exactly this many iterations, with no convergence test (a
            parareal network's or layer-parallel training's fixed k). Not with ``tol``
            or ``max_iter`` (``ValueError``). The result's ``converged`` is then
            ``None`` (not tested) and its ``fixed_iterations`` is k. Non-finite values
            still raise :class:`DivergenceError`, and so does a state beyond
            ``divergence_factor``; the growing-residual test is off.
        group: ``None`` (serial), ``"world"``, a ``torch.distributed`` process group, or a
            :class:`~torchpint.runtime.comm.Comm` (e.g. one with the ranks reversed).
        slabs: fine points per rank (default: as even as possible).
        timeout: seconds to wait for a peer rank before raising.
        callback: called as ``callback(iteration, residual)`` after each iteration.
        skip: XBraid's skip: the first iteration of a solve does no work on the way
            down; the coarse levels start from the fine C-values and the coarsest solve's
            values replace them, FMG-style (so a warm start's values are discarded).
        progress: show a tqdm bar over iterations (rank 0).
        divergence_factor: stop when the residual exceeds this times its smallest value,
            or a state exceeds this times max(1, max |u_0|) (``math.inf``: never).

    The constructor validates and allocates; it does not run the problem's steps. The
    first :meth:`solve` checks one step per level (a tensor like its input, the input
    unchanged) before iterating, and raises naming the step that breaks the contract.
    """

    def __init__(
        self,
        problem: Problem,
        *,
        cfactor: int | Sequence[int] = 2,
        levels: int | None = None,
        min_coarse: int = 2,
        max_coarse: int = 1,
        cycle: str = "V",
        relax: str | Sequence[str] = "FCF",
        cf_iter: int = 1,
        nested: bool = False,
        tol: float | None = None,
        max_iter: int | None = None,
        iterations: int | None = None,
        group: Any = None,
        slabs: Sequence[int] | None = None,
        timeout: float = 300.0,
        callback: Callable[[int, float], None] | None = None,
        progress: bool = False,
        divergence_factor: float = 1e4,
        skip: bool = False,
    ) -> None:
        t0 = time.perf_counter()
        if cycle not in CYCLES:
            raise ValueError(f"cycle must be one of {CYCLES}, got {cycle!r}")
        require_int("cf_iter", cf_iter, 1)
        self.tol, self.max_iter = stopping_rule(tol, max_iter, iterations)
        self.fixed_iterations = None if iterations is None else self.max_iter
        if not divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1, got {divergence_factor!r}")
        self.problem = problem
        self.grid = Grid(problem.nt, cfactor, levels, min_coarse, max_coarse)
        problem.bind(self.grid)
        L = self.grid.num_levels
        per_level = relaxation_per_level(relax, L)
        self.relax = relax if isinstance(relax, str) else tuple(per_level)
        self.cycle, self.cf_iter, self.nested = cycle, int(cf_iter), nested
        self.skip = bool(skip)
        self.callback, self.progress = callback, progress
        self.divergence_factor = float(divergence_factor)
        self.comm = make_comm(group, timeout)
        self.partition = Partition.of(self.grid, self.comm.rank, self.comm.size, slabs)
        self.slab = self.partition.slab

        u0 = problem.initial_state()
        if not isinstance(u0, torch.Tensor):
            raise TypeError(f"initial_state() must return a torch.Tensor, got {type(u0).__name__}")
        self._u0 = u0.detach()
        self._steps_checked = False  # the first solve checks the step contract
        ncf = [0 if r == "F" else self.cf_iter for r in per_level] + [0]
        self._monitor = DivergenceMonitor(self.divergence_factor, L)
        self._schedule = ReceiveSchedule(self.comm)
        self._cycler = Cycle(problem, self.grid, self.partition, self.comm, self._schedule,
                             ncf, self._monitor, self._u0)
        self._ckpt = SlabCheckpoint(self.comm, self.slab, self.grid.nt, self._cycler.U[0])
        self._reset(self._u0)
        self._setup_time = time.perf_counter() - t0

    # -- history ------------------------------------------------------------------------
    @property
    def residuals(self) -> list[float]:
        """The residual 2-norm after each iteration of the current (or last) solve."""
        return list(self._residuals)

    @property
    def iteration_times(self) -> list[float]:
        """Seconds of each iteration of the current (or last) solve."""
        return list(self._iter_times)

    @property
    def iteration(self) -> int:
        """Iterations done in the current (or last) solve."""
        return self._iteration

    def _reset(self, u0: torch.Tensor, keep_fine: bool = False) -> None:
        """Start a new solve from ``u0``: zero iterate (``keep_fine``: the fine iterate
        stays, a warm start) with u_0 at point 0, empty history."""
        self._u0 = u0
        self._cycler.reset(u0, keep_fine)
        self._monitor.reset(u0)
        self._fingerprint: dict[str, Any] | None = None
        self._iteration = 0
        self._residuals: list[float] = []
        self._iter_times: list[float] = []

    def _restore(self, progress: Progress) -> None:
        """Continue the history a checkpoint recorded (its iterate is loaded already)."""
        self._iteration = progress.iteration
        self._residuals, self._iter_times = progress.residuals, progress.iter_times
        counts = progress.step_counts
        self._cycler.step_counts = [0] * self.grid.num_levels if counts is None else counts
        self._cycler.cache_valid = False

    # -- validation ---------------------------------------------------------------------
    def _check_steps(self, u0: torch.Tensor) -> None:
        """Try one step per level on ``u0``: the first this rank takes (a rank may only be
        able to take its own steps, e.g. with a slab of a network's layers), from ``u0``
        carried to the level (its states may differ in shape: spatial coarsening)."""
        states = level_states(self.problem, u0, self.grid.num_levels)
        for l in range(self.grid.num_levels):
            own = self.partition.owned(l)
            if not own or own.stop < 2:
                continue
            checked_step(self.problem, states[l], max(own.start, 1) - 1, l)

    # -- checkpoints ----------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint of the current solve must match to be resumed.

        The problem's :meth:`~Problem.fingerprint`, a digest of u_0 and the solver
        settings that shape the iterates (cycle, relaxation, levels and cfactors). Not
        ``tol``, ``max_iter`` or ``iterations`` (resuming with a larger budget or a
        tighter tolerance is legitimate), nor the ranks or slabs (a checkpoint is
        re-slabbed over other ranks).
        """
        if self._fingerprint is None:
            self._fingerprint = solver_fingerprint(self.problem, self._u0, {
                "cycle": self.cycle, "relax": self.relax, "cf_iter": self.cf_iter,
                "nested": self.nested, "n": list(self.grid.n), "m": list(self.grid.m),
                **({"skip": True} if self.skip else {}),  # (older checkpoints had none)
            })
        return self._fingerprint

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs: the fine iterate (coarse levels are rebuilt each iteration),
        the history and the fingerprint. Tensors and plain types only, so it loads with
        ``torch.load(weights_only=True)``."""
        progress = Progress(self._iteration, self._residuals, self._iter_times,
                            self._cycler.step_counts)
        return self._ckpt.state_dict(self.fingerprint(), progress, list(self.grid.n))

    def load_state_dict(self, state: dict[str, Any], path: str | Path = "the state") -> None:
        """Continue from ``state``, written by this rank's layout (same slab and ranks).

        Raises :class:`CheckpointMismatchError` when it is from another run (fingerprint)
        and :class:`CheckpointError` when it is from another layout; ``solve(checkpoint=,
        resume=True)`` re-slabs such a checkpoint instead.
        """
        self._restore(self._ckpt.load_state_dict(state, self.fingerprint(), path))

    # -- the solve ----------------------------------------------------------------------
    @property
    def fine(self) -> torch.Tensor:
        """This rank's fine iterate (its ghost point's row, then its points'): what
        ``solve(warm_start=True)`` starts from; copy into it to set a warm start."""
        return self._cycler.U[0]

    def release_fine(self) -> None:
        """Leave the fine iterate's buffer to whoever holds views of it (a result of
        ``copy=False``): the solver goes on in a copy of it (so a warm start still starts
        from it), and the next solve no longer overwrites those views."""
        fine = self._cycler.U[0].clone()
        self._cycler.U[0] = self._ckpt.fine = fine

    def solve(
        self,
        u0: torch.Tensor | None = None,
        *,
        initial: torch.Tensor | None = None,
        warm_start: bool = False,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 1,
        resume: bool = False,
        copy: bool = True,
    ) -> MGRITResult:
        """Iterate until the residual is below ``tol`` or ``max_iter`` iterations (with
        ``iterations=k``: exactly k iterations, counting those of a resumed checkpoint).

        Every call is a new solve on the same grid, reusing the solver's buffers:
        ``u0`` replaces the problem's initial state (same shape, dtype and device);
        ``initial`` is an initial guess at all ``nt + 1`` fine points (each rank takes its
        slab; point 0 becomes the initial state); ``warm_start=True`` starts from the
        previous solve's solution instead (a warm restart). With ``checkpoint`` the fine
        iterate is saved every ``checkpoint_every`` iterations and at the end of a solve
        that converged or ran its fixed iterations (one file on one rank, else
        ``checkpoint.rank<r>`` per rank); ``resume=True`` continues from it when it
        exists, so finished iterations are not lost, and starts afresh when it does not.

        A checkpoint is resumed only by the same run (:meth:`fingerprint`: problem, u_0,
        solver settings; else :class:`CheckpointMismatchError`), on any number of ranks
        (the slabs are re-cut). An unreadable or incomplete checkpoint is a
        :class:`CheckpointError` naming the file.

        ``copy=False`` returns views of the solver's buffers in the result's ``u`` and
        ``ghost`` (no copy of every state; they change with the next solve).

        The first solve checks one step per level on the initial state (see the class).
        """
        t_solve = time.perf_counter()
        if initial is not None and warm_start:
            raise ValueError("give an initial guess or warm_start=True, not both")
        start = self._initial_value(u0)
        if not self._steps_checked:
            self._check_steps(start)
            self._steps_checked = True
        self._reset(start, keep_fine=warm_start)
        resumed = False
        if checkpoint is not None and resume:
            progress = self._ckpt.resume(checkpoint, self.fingerprint())
            if progress is not None:
                self._restore(progress)
                resumed = True
        if not resumed and not warm_start:
            if initial is not None:
                self._set_initial(initial)
            elif self.nested:
                self._cycler.nested_iteration()
        return self._iterate(checkpoint, checkpoint_every, copy, t_solve)

    def _iterate(
        self, checkpoint: str | Path | None, every: int, copy: bool, t_solve: float
    ) -> MGRITResult:
        """The solve loop: iterations until converged or the budget is spent, each one
        reported (history, divergence checks, progress bar, callback, checkpoint)."""
        fixed = self.fixed_iterations is not None
        bar = None
        if self.progress and self.comm.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_iter, initial=self._iteration, desc="MGRIT", unit="it")
        tol = -math.inf if self.tol is None else self.tol
        converged = not fixed and bool(self._residuals) and self._residuals[-1] <= tol
        try:
            with signals.boundaries() as outer:
                # a fixed solve that nobody watches per iteration (no size limit, callback,
                # bar, checkpoint or signal poll) agrees on its residuals once, at its
                # end: no collective holds the ranks in step between iterations
                if (fixed and self._monitor.factor == math.inf and self.callback is None
                        and bar is None and checkpoint is None
                        and not signals.polled(outer)):
                    self._iterate_deferred()
                while not converged and self._iteration < self.max_iter:
                    t_it = time.perf_counter()
                    self._one_iteration(fixed)
                    res, peaks = fine_residual(self._cycler, self._monitor, self.comm)
                    self._cycler.final = False
                    self._residuals.append(res)
                    self._iter_times.append(time.perf_counter() - t_it)
                    self._monitor.check(self._iteration, res, peaks, self._residuals,
                                        self.problem.divergence_hint, growth=not fixed)
                    converged = not fixed and res <= tol
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(residual=f"{res:.3e}")
                    if self.callback is not None:
                        self.callback(self._iteration, res)
                    done = converged or (fixed and self._iteration == self.max_iter)
                    sig = signals.poll(self.comm) if outer else 0  # SIGINT/SIGTERM, any rank
                    due = done or sig or self._iteration % max(1, every) == 0
                    if checkpoint is not None and due:
                        atomic_save(self.state_dict(), self._ckpt.path(checkpoint))
                    if sig:  # every rank stops here, its checkpoint written
                        signals.clear()
                        raise signals.Interrupted(
                            sig, f"MGRIT iteration {self._iteration}",
                            None if checkpoint is None else str(checkpoint))
        finally:
            if bar is not None:
                bar.close()
        return self._result(None if fixed else converged, time.perf_counter() - t_solve, copy)

    def _one_iteration(self, fixed: bool) -> None:
        """One MGRIT cycle from the fine level (the first of a solve F-relaxes first and
        may skip; the last of a fixed solve is its final sweep)."""
        first = self._iteration == 0
        final = fixed and self._iteration + 1 == self.max_iter
        self._schedule.begin(first, self._u0)
        self._cycler.cycle(0, self.cycle, first, first and self.skip, final)
        self._schedule.end()
        self._iteration += 1

    def _iterate_deferred(self) -> None:
        """The rest of a fixed solve's iterations with each rank's residual kept locally,
        agreed on in one collective at the end (:func:`gather_residuals`); a diverged
        iteration is then raised as the per-iteration check would have."""
        start, records = self._iteration, []
        while self._iteration < self.max_iter:
            t_it = time.perf_counter()
            self._one_iteration(True)
            records.append(fine_residual(self._cycler, self._monitor, self.comm,
                                         gather=False))
            self._cycler.final = False
            self._iter_times.append(time.perf_counter() - t_it)
        for k, (res, peaks) in enumerate(
                gather_residuals(self._cycler, self._monitor, self.comm, records), start + 1):
            self._residuals.append(res)
            self._monitor.check(k, res, peaks, self._residuals, self.problem.divergence_hint,
                                growth=False)

    def _initial_value(self, u0: torch.Tensor | None) -> torch.Tensor:
        """The initial state of this solve: ``u0`` (checked against the buffers) or the
        problem's, read again so a problem may change it between solves."""
        u = self.problem.initial_state() if u0 is None else u0
        ref = self._cycler.U[0]
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"the initial state must be a torch.Tensor, got {type(u).__name__}")
        if u.shape != ref.shape[1:] or u.dtype != ref.dtype or u.device != ref.device:
            raise ValueError(
                f"the initial state has shape {tuple(u.shape)}, dtype {u.dtype}, device "
                f"{u.device}; this solver's state is shape {tuple(ref.shape[1:])}, dtype "
                f"{ref.dtype}, device {ref.device}. Build a new solver for another state."
            )
        return u.detach()

    def _set_initial(self, initial: torch.Tensor) -> None:
        """Take this rank's slab (and ghost) of an initial guess at all fine points."""
        want = (self.grid.nt + 1, *self._u0.shape)
        if tuple(initial.shape) != want:
            raise ValueError(
                f"initial guess has shape {tuple(initial.shape)}; expected {want} "
                "(all fine points, t_0 and t_N included)"
            )
        own, U = self.partition.owned(0), self._cycler.U[0]
        U[1:] = initial[own.start : own.stop].to(U)
        if own.start > 0:
            U[0] = initial[own.start - 1].to(U)
        if own.start == 0:
            U[1] = self._u0

    def _result(self, converged: bool | None, solve_time: float, copy: bool) -> MGRITResult:
        U0 = self._cycler.U[0]
        last = self.comm.size - 1  # slabs are contiguous and non-empty: it owns t_N
        final = U0[-1] if self.comm.rank == last else torch.zeros_like(self._u0)
        final = self.comm.broadcast(final, last, "the final state")
        return MGRITResult(
            u=U0[1:].clone() if copy else U0[1:],
            points=self.partition.owned(0),
            ghost=None if self.partition.prev[0] is None else U0[0].clone() if copy else U0[0],
            final=final.clone(),
            residuals=list(self._residuals),
            converged=converged,
            grid=self.grid,
            timings={
                "setup": self._setup_time,
                "solve": solve_time,
                "iterations": list(self._iter_times),
                "step": self._cycler.step_time,
            },
            step_counts=list(self._cycler.step_counts),
            fixed_iterations=self.fixed_iterations,
        )


class Parareal(MGRIT):
    """Parareal: two-level MGRIT with F-relaxation over ``chunks`` time chunks.

    Level 0 of ``problem`` is the fine propagator (one fine step), level 1 the coarse
    propagator over a whole chunk (``m = nt / chunks`` fine steps). Each iteration costs
    one fine sweep per chunk, done by all chunks at once, plus one sequential coarse sweep.
    Other keyword arguments are :class:`MGRIT`'s (``iterations=k``: exactly k).
    """

    def __init__(self, problem: Problem, chunks: int, **kwargs: Any) -> None:
        if not is_integer(chunks) or chunks < 2 or problem.nt % chunks:
            raise ValueError(
                f"chunks must be an integer >= 2 that divides the {problem.nt} time steps, "
                f"got {chunks!r}"
            )
        if problem.nt // chunks < 2:
            raise ValueError(
                f"{chunks} chunks of {problem.nt} steps leave one step per chunk; parareal "
                "needs at least 2 fine steps per chunk"
            )
        for key in ("cfactor", "levels", "relax", "cycle"):
            if key in kwargs:
                raise TypeError(f"Parareal fixes {key}; use MGRIT for other settings")
        super().__init__(
            problem, cfactor=problem.nt // chunks, levels=2, relax="F", cycle="V", **kwargs
        )
        self.chunks = int(chunks)
