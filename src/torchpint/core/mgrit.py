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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from torchpint.core.checkpoint import atomic_save
from torchpint.core.distributed import make_comm
from torchpint.core.grid import Grid, Partition
from torchpint.core.history import DivergenceError, MGRITResult
from torchpint.core.problem import Problem

_TAG_F, _TAG_V, _TAG_SOLVE = 1, 2, 3
CYCLES = ("V", "F")
RELAXATIONS = ("F", "FCF")


class MGRIT:
    """Multigrid reduction in time with full approximation storage (FAS).

    Args:
        problem: the time-stepping problem (its ``step`` may differ per level).
        cfactor, levels, min_coarse, max_coarse: the grid hierarchy (see :class:`Grid`).
        cycle: ``"V"`` or ``"F"``.
        relax: ``"F"`` (F-relaxation) or ``"FCF"`` (F then (C, F) ``cf_iter`` times).
        cf_iter: number of CF sweeps with ``relax="FCF"`` (>= 1).
        nested: build the initial guess by nested iteration from the coarsest level;
            otherwise u_0 is given and every other point is zero.
        tol: absolute tolerance on the residual 2-norm.
        max_iter: maximum number of iterations.
        group: ``None`` (serial), ``"world"`` or a ``torch.distributed`` process group.
        slabs: fine points per rank (default: as even as possible).
        timeout: seconds to wait for a peer rank before raising.
        callback: called as ``callback(iteration, residual)`` after each iteration.
        progress: show a tqdm bar over iterations (rank 0).
        divergence_factor: stop when the residual exceeds this times its smallest value,
            or a state exceeds this times max(1, max |u_0|) (``math.inf``: never).
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
        relax: str = "FCF",
        cf_iter: int = 1,
        nested: bool = False,
        tol: float = 1e-10,
        max_iter: int = 100,
        group: Any = None,
        slabs: Sequence[int] | None = None,
        timeout: float = 300.0,
        callback: Callable[[int, float], None] | None = None,
        progress: bool = False,
        divergence_factor: float = 1e4,
    ) -> None:
        t0 = time.perf_counter()
        if cycle not in CYCLES:
            raise ValueError(f"cycle must be one of {CYCLES}, got {cycle!r}")
        if relax not in RELAXATIONS:
            raise ValueError(f"relax must be one of {RELAXATIONS}, got {relax!r}")
        if int(cf_iter) != cf_iter or cf_iter < 1:
            raise ValueError(f"cf_iter must be an integer >= 1, got {cf_iter!r}")
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
            raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
        if int(max_iter) != max_iter or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if not divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1, got {divergence_factor!r}")
        self.problem = problem
        self.grid = Grid(problem.nt, cfactor, levels, min_coarse, max_coarse)
        problem.bind(self.grid)
        self.cycle, self.relax, self.cf_iter = cycle, relax, int(cf_iter)
        self.nested, self.tol, self.max_iter = nested, float(tol), int(max_iter)
        self.callback, self.progress = callback, progress
        self.divergence_factor = float(divergence_factor)
        self.comm = make_comm(group, timeout)
        self._ncf = 0 if relax == "F" else self.cf_iter
        self.partition = Partition.of(self.grid, self.comm.rank, self.comm.size, slabs)
        part = self.partition
        self.slab = part.slab
        self._first, self._count = part.first, part.count
        self._prev, self._next = part.prev, part.next

        u0 = problem.initial_state()
        if not isinstance(u0, torch.Tensor):
            raise TypeError(f"initial_state() must return a torch.Tensor, got {type(u0).__name__}")
        self._u0 = u0.detach()
        self._check_steps()
        L = self.grid.num_levels
        shape, kw = tuple(u0.shape), {"dtype": u0.dtype, "device": u0.device}
        # Row 0 is the ghost (the point before the first owned one); row j is point first+j-1.
        self._U = [torch.zeros((self._count[l] + 1, *shape), **kw) for l in range(L)]
        self._G = [None] + [torch.zeros((self._count[l] + 1, *shape), **kw) for l in range(1, L)]
        self._V = [None] + [torch.zeros((self._count[l] + 1, *shape), **kw) for l in range(1, L)]
        # Phi(u_{i-1}) at the fine C-points, from the residual, reused by the next iteration.
        n_c = len(self._c_points(0))
        self._phi_cache = torch.zeros((n_c, *shape), **kw) if L > 1 else None
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

    def _reset(self, u0: torch.Tensor) -> None:
        """Start a new solve from ``u0``: zero iterate with u_0 at point 0, empty history."""
        self._u0 = u0
        for l, U in enumerate(self._U):
            U.zero_()
            if self._count[l] and self._first[l] == 0:
                U[1] = u0
        self._cache_valid = False
        self._step_counts = [0] * self.grid.num_levels
        self._step_time = 0.0
        self._iteration = 0
        # first level seen non-finite / too large in this iteration (for error messages)
        self._bad_level: int | None = None
        self._huge_level: int | None = None
        self._scale = max(1.0, float(u0.abs().max()) if u0.numel() else 1.0)
        self._residuals: list[float] = []
        self._iter_times: list[float] = []

    # -- validation ---------------------------------------------------------------------
    def _check_steps(self) -> None:
        u0 = self._u0
        for l in range(self.grid.num_levels):
            arg = u0.clone()
            out = self.problem.step(arg, 0, l)
            where = f"problem.step(u, 0, level={l})"
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"{where} returned {type(out).__name__}, not a torch.Tensor")
            if out.shape != u0.shape or out.dtype != u0.dtype or out.device != u0.device:
                raise ValueError(
                    f"{where} returned shape {tuple(out.shape)}, dtype {out.dtype}, device "
                    f"{out.device}; the state is shape {tuple(u0.shape)}, dtype {u0.dtype}, "
                    f"device {u0.device}. A step must return a state like its input."
                )
            if not torch.equal(arg, u0):
                raise ValueError(f"{where} modified its input in place; return a new tensor")

    # -- indexing helpers ---------------------------------------------------------------
    def _row(self, l: int, i: int) -> int:
        return i - self._first[l] + 1

    def _owned(self, l: int) -> range:
        return self.partition.owned(l)

    def _c_points(self, l: int) -> range:
        """Owned C-points of level l (coarse points of level l + 1)."""
        if l == self.grid.num_levels - 1:
            return range(0)
        m, own = self.grid.m[l], self._owned(l)
        return range(-(-own.start // m) * m, own.stop, m)

    def _phi(self, l: int, u: torch.Tensor, i: int) -> torch.Tensor:
        t = time.perf_counter()
        out = self.problem.step(u, i, l)
        self._step_time += time.perf_counter() - t
        self._step_counts[l] += 1
        return out

    def _sweep(self, l: int, start: int, stop: int) -> None:
        """u_i = g_i + Phi(u_{i-1}) for i in [start, stop] (inclusive), in order."""
        U, G = self._U[l], self._G[l]
        for i in range(start, stop + 1):
            r = self._row(l, i)
            new = self._phi(l, U[r - 1], i - 1)
            U[r] = new if G is None else new + G[r]

    # -- relaxation ---------------------------------------------------------------------
    def _f_relax(self, l: int) -> None:
        """Step from each C-point through its F-points; refresh the ghost row.

        Every rank sends its last point to the next rank exactly once (as soon as it is
        final) and receives its ghost exactly once (before it needs it).
        """
        if l == 0:
            self._cache_valid = False
        own, m = self._owned(l), self.grid.m[l]
        if not own:
            return
        first, last = own.start, own.stop - 1
        segments: list[tuple[int, int]] = []
        i = first
        while i <= last:
            if i % m == 0:
                i += 1
                continue
            s = i
            while i <= last and i % m != 0:
                i += 1
            segments.append((s, i - 1))
        head = segments[0] if segments and segments[0][0] == first else None
        body = segments[1:] if head else segments
        prev, nxt = self._prev[l], self._next[l]
        sends: list[Any] = []
        U = self._U[l]
        if nxt is not None and last % m == 0:
            sends.append(self.comm.isend(U[-1], nxt, _TAG_F))
        for s, e in reversed(body):
            self._sweep(l, s, e)
            if e == last and nxt is not None:
                sends.append(self.comm.isend(U[-1], nxt, _TAG_F))
        if prev is not None:
            self.comm.recv_into(U[0], prev, _TAG_F, f"a boundary state on level {l}")
        if head is not None:
            self._sweep(l, *head)
            if head[1] == last and nxt is not None:
                sends.append(self.comm.isend(U[-1], nxt, _TAG_F))
        self.comm.wait_all(sends, f"a boundary state on level {l}")

    def _c_relax(self, l: int) -> None:
        U, G = self._U[l], self._G[l]
        for j, i in enumerate(self._c_points(l)):
            if i == 0:
                continue
            r = self._row(l, i)
            if l == 0 and self._cache_valid:
                U[r] = self._phi_cache[j]
            else:
                new = self._phi(l, U[r - 1], i - 1)
                U[r] = new if G is None else new + G[r]

    # -- coarse-grid correction ---------------------------------------------------------
    def _restrict(self, l: int) -> None:
        """Inject u to level l + 1 and form the FAS right-hand side there."""
        c, m = l + 1, self.grid.m[l]
        U, G, Uc, Gc, Vc = self._U[l], self._G[l], self._U[c], self._G[c], self._V[c]
        coarse = self._owned(c)
        for k in coarse:
            Vc[self._row(c, k)] = U[self._row(l, k * m)]
        sends = []
        if coarse and self._next[c] is not None:
            sends.append(self.comm.isend(Vc[-1], self._next[c], _TAG_V))
        if coarse and self._prev[c] is not None:
            self.comm.recv_into(Vc[0], self._prev[c], _TAG_V, f"a restricted state on level {c}")
        self.comm.wait_all(sends, f"a restricted state on level {c}")
        Uc.copy_(Vc)
        for j, k in enumerate(coarse):
            if k == 0:
                continue
            i, r, rc = k * m, self._row(l, k * m), self._row(c, k)
            if l == 0 and self._cache_valid:
                fine = self._phi_cache[j]
            else:
                fine = self._phi(l, U[r - 1], i - 1)
            res = fine - U[r] if G is None else G[r] - U[r] + fine
            Gc[rc] = res + Vc[rc] - self._phi(c, Vc[rc - 1], k - 1)

    def _correct(self, l: int) -> None:
        c, m = l + 1, self.grid.m[l]
        U, Uc, Vc = self._U[l], self._U[c], self._V[c]
        if l == 0:
            self._cache_valid = False
        for k in self._owned(c):
            U[self._row(l, k * m)] += Uc[self._row(c, k)] - Vc[self._row(c, k)]

    def _forward_solve(self, l: int) -> None:
        """Sequential time stepping on the coarsest level, pipelined over the ranks."""
        own = self._owned(l)
        if not own:
            return
        U = self._U[l]
        if self._prev[l] is not None:
            self.comm.recv_into(U[0], self._prev[l], _TAG_SOLVE, f"the coarse solve on level {l}")
        self._sweep(l, max(own.start, 1), own.stop - 1)
        self._watch(l)
        if self._next[l] is not None:
            work = self.comm.isend(U[-1], self._next[l], _TAG_SOLVE)
            self.comm.wait_all([work], f"the coarse solve on level {l}")

    def _cycle(self, l: int, cycle: str, first_f: bool) -> None:
        if l == self.grid.num_levels - 1:
            self._forward_solve(l)
            return
        if first_f and (l > 0 or self._iteration == 0):
            self._f_relax(l)
        for _ in range(self._ncf):
            self._c_relax(l)
            self._f_relax(l)
        self._watch(l)
        self._restrict(l)
        self._cycle(l + 1, cycle, True)
        self._correct(l)
        self._f_relax(l)
        if l > 0 and cycle == "F":
            self._cycle(l, "V", False)

    def _nested_iteration(self) -> None:
        """Initial guess: solve the coarsest level, then inject and V-cycle upwards."""
        L = self.grid.num_levels
        self._forward_solve(L - 1)
        for l in range(L - 2, -1, -1):
            c, m = l + 1, self.grid.m[l]
            for k in self._owned(c):
                self._U[l][self._row(l, k * m)] = self._U[c][self._row(c, k)]
            if l > 0:
                self._cycle(l, "V", True)

    # -- residual and health ------------------------------------------------------------
    def _watch(self, l: int) -> None:
        """Remember the first level whose values turn non-finite or too large."""
        if not self._count[l] or self._bad_level is not None:
            return
        peak = float(self._U[l][1:].abs().amax())
        if not math.isfinite(peak):
            self._bad_level = l
        elif peak > self.divergence_factor * self._scale and self._huge_level is None:
            self._huge_level = l

    def _residual(self) -> tuple[float, torch.Tensor]:
        """Fine residual norm and, per level, the largest |u| (all ranks agree on both).

        Two entries are appended to the peaks: the first level seen non-finite and the
        first seen too large during the cycle (as ``L - level``, 0 for none), so every
        rank raises the same error.
        """
        U, L = self._U[0], self.grid.num_levels
        sumsq = torch.zeros((), dtype=torch.float64, device=U.device)
        if L > 1:
            for j, i in enumerate(self._c_points(0)):
                if i == 0:
                    continue
                r = self._row(0, i)
                phi = self._phi(0, U[r - 1], i - 1)
                self._phi_cache[j] = phi
                sumsq += torch.linalg.vector_norm(phi - U[r]).double() ** 2
            self._cache_valid = True
        total = self.comm.all_reduce(sumsq.reshape(1), "sum", "the residual norm")
        peaks = torch.stack([
            torch.nan_to_num(self._U[l][1:].abs().amax().double(), nan=math.inf)
            if self._count[l] else torch.zeros((), dtype=torch.float64, device=U.device)
            for l in range(L)
        ] + [torch.tensor(0.0 if lev is None else L - lev, dtype=torch.float64, device=U.device)
             for lev in (self._bad_level, self._huge_level)])
        self._bad_level = self._huge_level = None
        peaks = self.comm.all_reduce(peaks, "max", "the state magnitude")
        return math.sqrt(float(total.item())), peaks.cpu()

    def _check_divergence(self, res: float, peaks: torch.Tensor) -> None:
        hint = self.problem.divergence_hint
        hint = f" Likely cause: {hint}" if hint else ""
        k, L, factor = self._iteration, self.grid.num_levels, self.divergence_factor
        levels = f"(level 0 is the fine grid; {L} levels)"
        first_bad, first_huge = int(peaks[-2]), int(peaks[-1])
        peaks = peaks[:-2]
        if not math.isfinite(res) or first_bad or not torch.isfinite(peaks).all():
            bad = L - first_bad if first_bad else min(
                (l for l in range(L) if not math.isfinite(float(peaks[l]))), default=None)
            where = f"first on level {bad} {levels}" if bad is not None else "in the residual"
            raise DivergenceError(
                f"MGRIT diverged at iteration {k}: the residual is {res}; non-finite values "
                f"appear {where}.{hint}"
            )
        huge = [l for l in range(L) if float(peaks[l]) > factor * self._scale]
        if huge or first_huge:
            first = L - first_huge if first_huge else huge[0]
            raise DivergenceError(
                f"MGRIT diverged at iteration {k}: the state exceeded {factor:g} x max(1, "
                f"|u_0|) first on level {first} {levels} and reached |u| = "
                f"{float(peaks.max()):.3e}; the residual is {res:.3e}.{hint}"
            )
        best = min(self._residuals[:-1], default=math.inf)
        if res > factor * best:
            raise DivergenceError(
                f"MGRIT diverged at iteration {k}: the residual grew from {best:.3e} to "
                f"{res:.3e} (more than {factor:g}x).{hint}"
            )

    # -- checkpoints ----------------------------------------------------------------------
    def _ckpt_path(self, path: str | Path) -> Path:
        p = Path(path)
        return p if self.comm.size == 1 else p.with_name(f"{p.name}.rank{self.comm.rank}")

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs: the fine iterate (coarse levels are rebuilt each iteration)."""
        return {
            "u": self._U[0].cpu(), "iteration": self._iteration,
            "residuals": list(self._residuals), "iter_times": list(self._iter_times),
            "step_counts": list(self._step_counts), "steps": list(self.grid.n),
            "slab": (self.slab.start, self.slab.stop), "world": self.comm.size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = {"steps": list(self.grid.n), "slab": (self.slab.start, self.slab.stop),
                "world": self.comm.size}
        theirs = {k: (tuple(state[k]) if k == "slab" else state[k]) for k in mine}
        if theirs != mine:
            raise ValueError(
                f"checkpoint does not match this solver: it has {theirs}, the solver has {mine}"
            )
        self._U[0].copy_(state["u"].to(self._U[0].device))
        self._iteration = int(state["iteration"])
        self._residuals = list(state["residuals"])
        self._iter_times = list(state["iter_times"])
        self._step_counts = list(state["step_counts"])
        self._cache_valid = False

    # -- the solve ----------------------------------------------------------------------
    def solve(
        self,
        u0: torch.Tensor | None = None,
        *,
        initial: torch.Tensor | None = None,
        warm_start: bool = False,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 1,
        resume: bool = False,
    ) -> MGRITResult:
        """Iterate until the residual is below ``tol`` or ``max_iter`` iterations.

        Every call is a new solve on the same grid, reusing the solver's buffers:
        ``u0`` replaces the problem's initial state (same shape, dtype and device);
        ``initial`` is an initial guess at all ``nt + 1`` fine points (each rank takes its
        slab; point 0 becomes the initial state); ``warm_start=True`` starts from the
        previous solve's solution instead (a warm restart). With ``checkpoint`` the fine
        iterate is saved every ``checkpoint_every`` iterations (one file per rank);
        ``resume=True`` continues from that file when it exists, so finished iterations
        are not lost.
        """
        t_solve = time.perf_counter()
        if initial is not None and warm_start:
            raise ValueError("give an initial guess or warm_start=True, not both")
        start = self._initial_value(u0)
        previous = self._U[0].clone() if warm_start else None
        self._reset(start)
        resumed = False
        if checkpoint is not None and resume and self._ckpt_path(checkpoint).exists():
            self.load_state_dict(torch.load(self._ckpt_path(checkpoint), weights_only=False))
            resumed = True
        if not resumed:
            if previous is not None:
                self._U[0].copy_(previous)
                if self._first[0] == 0:
                    self._U[0][1] = start
            elif initial is not None:
                self._set_initial(initial)
            elif self.nested:
                self._nested_iteration()
        bar = None
        if self.progress and self.comm.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_iter, initial=self._iteration, desc="MGRIT", unit="it")
        converged = bool(self._residuals) and self._residuals[-1] <= self.tol
        try:
            while not converged and self._iteration < self.max_iter:
                t_it = time.perf_counter()
                self._cycle(0, self.cycle, True)
                self._iteration += 1
                res, peaks = self._residual()
                self._residuals.append(res)
                self._iter_times.append(time.perf_counter() - t_it)
                self._check_divergence(res, peaks)
                converged = res <= self.tol
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(residual=f"{res:.3e}")
                if self.callback is not None:
                    self.callback(self._iteration, res)
                if checkpoint is not None and (
                    converged or self._iteration % max(1, checkpoint_every) == 0
                ):
                    atomic_save(self.state_dict(), self._ckpt_path(checkpoint))
        finally:
            if bar is not None:
                bar.close()
        return self._result(converged, time.perf_counter() - t_solve)

    def _initial_value(self, u0: torch.Tensor | None) -> torch.Tensor:
        """The initial state of this solve: ``u0`` (checked against the buffers) or the
        problem's, read again so a problem may change it between solves."""
        u = self.problem.initial_state() if u0 is None else u0
        ref = self._U[0]
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
        want = (self.grid.nt + 1, *self._u0.shape)
        if tuple(initial.shape) != want:
            raise ValueError(
                f"initial guess has shape {tuple(initial.shape)}; expected {want} "
                "(all fine points, t_0 and t_N included)"
            )
        own = self._owned(0)
        self._U[0][1:] = initial[own.start : own.stop].to(self._U[0])
        if own.start > 0:
            self._U[0][0] = initial[own.start - 1].to(self._U[0])
        if own.start == 0:
            self._U[0][1] = self._u0

    def _result(self, converged: bool, solve_time: float) -> MGRITResult:
        U0 = self._U[0]
        last = self.comm.size - 1  # slabs are contiguous and non-empty: it owns t_N
        final = U0[-1] if self.comm.rank == last else torch.zeros_like(self._u0)
        final = self.comm.broadcast(final, last, "the final state")
        return MGRITResult(
            u=U0[1:].clone(),
            points=self._owned(0),
            final=final.clone(),
            residuals=list(self._residuals),
            converged=converged,
            grid=self.grid,
            timings={
                "setup": self._setup_time,
                "solve": solve_time,
                "iterations": list(self._iter_times),
                "step": self._step_time,
            },
            step_counts=list(self._step_counts),
        )


class Parareal(MGRIT):
    """Parareal: two-level MGRIT with F-relaxation over ``chunks`` time chunks.

    Level 0 of ``problem`` is the fine propagator (one fine step), level 1 the coarse
    propagator over a whole chunk (``m = nt / chunks`` fine steps). Each iteration costs
    one fine sweep per chunk, done by all chunks at once, plus one sequential coarse sweep.
    """

    def __init__(self, problem: Problem, chunks: int, **kwargs: Any) -> None:
        if int(chunks) != chunks or chunks < 2 or problem.nt % chunks:
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
