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

from torchpint.core.checkpoint import (
    RESUME_HINT,
    CheckpointError,
    atomic_save,
    check_fingerprint,
    load_checkpoint,
    plain,
    rank_file,
    rank_files,
    tensor_digest,
)
from torchpint.core.distributed import make_comm
from torchpint.core.grid import Grid, Partition, is_integer, require_int
from torchpint.core.history import DivergenceError, MGRITResult
from torchpint.core.problem import Problem, check_step_output

_TAG_F, _TAG_V, _TAG_SOLVE = 1, 2, 3
_RESUME_SET_HINT = "delete the files to start afresh, or run without resume"
CYCLES = ("V", "F")
RELAXATIONS = ("F", "FCF")


def _peak(t: torch.Tensor) -> torch.Tensor:
    """``max |t|`` (NaN if any is), without allocating ``|t|``: one pass of aminmax."""
    lo, hi = torch.aminmax(t)
    return torch.maximum(-lo, hi)


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
        tol: absolute tolerance on the residual 2-norm.
        max_iter: maximum number of iterations.
        group: ``None`` (serial), ``"world"``, a ``torch.distributed`` process group, or a
            :class:`~torchpint.core.distributed.Comm` (e.g. one with the ranks reversed).
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
        relax: str | Sequence[str] = "FCF",
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
        require_int("cf_iter", cf_iter, 1)
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
            raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
        require_int("max_iter", max_iter, 1)
        if not divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1, got {divergence_factor!r}")
        self.problem = problem
        self.grid = Grid(problem.nt, cfactor, levels, min_coarse, max_coarse)
        problem.bind(self.grid)
        per_level = relaxation_per_level(relax, self.grid.num_levels)
        self.relax = relax if isinstance(relax, str) else tuple(per_level)
        self.cycle, self.cf_iter = cycle, int(cf_iter)
        self.nested, self.tol, self.max_iter = nested, float(tol), int(max_iter)
        self.callback, self.progress = callback, progress
        self.divergence_factor = float(divergence_factor)
        self.comm = make_comm(group, timeout)
        self._ncf = [0 if r == "F" else self.cf_iter for r in per_level] + [0]
        # receives posted early, by the order recorded per kind of iteration (first, later)
        self._patterns: dict[bool, list[tuple[int, int, str]]] = {}
        self._posted: dict[tuple[int, int], list[tuple[Any, torch.Tensor]]] = {}
        self._recording: list[tuple[int, int, str]] | None = None
        self._boxes: list[torch.Tensor] = []
        self._kind = True
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

    def _reset(self, u0: torch.Tensor, keep_fine: bool = False) -> None:
        """Start a new solve from ``u0``: zero iterate (``keep_fine``: the fine iterate
        stays, a warm start) with u_0 at point 0, empty history."""
        self._u0 = u0
        for l, U in enumerate(self._U):
            if not (keep_fine and l == 0):
                U.zero_()
            if self._count[l] and self._first[l] == 0:
                U[1] = u0
        self._cache_valid = False
        self._fingerprint: dict[str, Any] | None = None
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
        """Try one step per level on u_0: the first this rank takes (a rank may only be
        able to take its own steps, e.g. with a slab of a network's layers)."""
        u0 = self._u0
        for l in range(self.grid.num_levels):
            own = self._owned(l)
            if not own or own.stop < 2:
                continue
            i = max(own.start, 1) - 1
            arg = u0.clone()
            out = self.problem.step(arg, i, l)
            where = f"problem.step(u, {i}, level={l})"
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
        if (not isinstance(out, torch.Tensor) or out.shape != u.shape or out.dtype != u.dtype
                or out.device != u.device):
            check_step_output(out, u, i, l)  # raises, naming the level, index and shapes
        return out

    def _sweep(self, l: int, start: int, stop: int) -> None:
        """u_i = g_i + Phi(u_{i-1}) for i in [start, stop] (inclusive), in order."""
        U, G = self._U[l], self._G[l]
        for i in range(start, stop + 1):
            r = self._row(l, i)
            new = self._phi(l, U[r - 1], i - 1)
            if G is None:
                U[r] = new
            else:
                torch.add(new, G[r], out=U[r])

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
        U, what = self._U[l], f"a boundary state on level {l}"
        if nxt is not None and last % m == 0:
            self.comm.send(U[-1], nxt, _TAG_F, what)
        for s, e in reversed(body):
            self._sweep(l, s, e)
            if e == last and nxt is not None:
                self.comm.send(U[-1], nxt, _TAG_F, what)
        if prev is not None:
            self._recv(U[0], prev, _TAG_F, what)
        if head is not None:
            self._sweep(l, *head)
            if head[1] == last and nxt is not None:
                self.comm.send(U[-1], nxt, _TAG_F, what)

    # -- messages ---------------------------------------------------------------------------
    def _recv(self, buf: torch.Tensor, src: int, tag: int, what: str) -> None:
        """Receive into ``buf``: from a receive posted at the start of the iteration when
        there is one (a message then lands while this rank works, instead of waiting for
        a handshake with a busy sender), else directly. The order of an iteration's
        receives is recorded, so the next iteration of the same kind posts them early."""
        posted = self._posted.get((src, tag))
        if posted:
            handle, box = posted.pop(0)
            self.comm.wait(handle)
            buf.copy_(box)
        else:
            self.comm.recv_into(buf, src, tag, what)
        if self._recording is not None:
            self._recording.append((src, tag, what))

    def _post_receives(self) -> None:
        """Post this iteration's receives, in the order the last iteration of its kind
        (the first of a solve, or a later one) made them; record them if not known."""
        if self.comm.size == 1:
            return
        self._kind = kind = self._iteration == 0
        pattern = self._patterns.get(kind)
        self._recording = None if pattern is not None else []
        self._posted = {}
        for j, (src, tag, what) in enumerate(pattern or ()):
            if j == len(self._boxes):  # one buffer per posted receive, kept for reuse
                self._boxes.append(torch.empty_like(self._u0))
            box = self._boxes[j]
            handle = self.comm.irecv(box, src, tag, what)
            self._posted.setdefault((src, tag), []).append((handle, box))

    def _end_receives(self) -> None:
        if self._recording is not None:
            self._patterns[self._kind] = self._recording
        self._recording = None

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
        coarse, what = self._owned(c), f"a restricted state on level {c}"
        for k in coarse:
            Vc[self._row(c, k)] = U[self._row(l, k * m)]
        if coarse and self._next[c] is not None:
            self.comm.send(Vc[-1], self._next[c], _TAG_V, what)
        if coarse and self._prev[c] is not None:
            self._recv(Vc[0], self._prev[c], _TAG_V, what)
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
            self._recv(U[0], self._prev[l], _TAG_SOLVE, f"the coarse solve on level {l}")
        self._sweep(l, max(own.start, 1), own.stop - 1)
        self._watch(l)
        if self._next[l] is not None:
            self.comm.send(U[-1], self._next[l], _TAG_SOLVE, f"the coarse solve on level {l}")

    def _cycle(self, l: int, cycle: str, first_f: bool) -> None:
        if l == self.grid.num_levels - 1:
            self._forward_solve(l)
            return
        if first_f and (l > 0 or self._iteration == 0):
            self._f_relax(l)
        for _ in range(self._ncf[l]):
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
        """Remember the first level whose values turn non-finite or too large (with
        ``divergence_factor=inf`` the check once per iteration in :meth:`_residual` does)."""
        if not self._count[l] or self._bad_level is not None or self.divergence_factor == math.inf:
            return
        peak = float(_peak(self._U[l][1:]))
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
        peaks = torch.stack([
            torch.nan_to_num(_peak(self._U[l][1:]).double(), nan=math.inf)
            if self._count[l] else torch.zeros((), dtype=torch.float64, device=U.device)
            for l in range(L)
        ] + [torch.tensor(0.0 if lev is None else L - lev, dtype=torch.float64, device=U.device)
             for lev in (self._bad_level, self._huge_level)])
        self._bad_level = self._huge_level = None
        # one collective: the squared norms add up, the peaks take the largest
        ranks = self.comm.all_gather(torch.cat([sumsq.reshape(1), peaks]),
                                     "the residual norm and the state magnitude")
        self.comm.flush()  # the peers got this iteration's messages before they joined
        total, peaks = ranks[:, 0].sum(), ranks[:, 1:].amax(dim=0)
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
        return rank_file(path, self.comm.rank, self.comm.size)

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint of the current solve must match to be resumed.

        The problem's :meth:`~Problem.fingerprint`, a digest of u_0 and the solver
        settings that shape the iterates (cycle, relaxation, levels and cfactors). Not
        ``tol`` or ``max_iter`` (resuming with a larger budget or a tighter tolerance is
        legitimate), nor the ranks or slabs (a checkpoint is re-slabbed over other ranks).
        """
        if self._fingerprint is None:
            self._fingerprint = plain({
                "problem": self.problem.fingerprint(),
                "u0": tensor_digest(self._u0),
                "solver": {"cycle": self.cycle, "relax": self.relax, "cf_iter": self.cf_iter,
                           "nested": self.nested, "n": list(self.grid.n),
                           "m": list(self.grid.m)},
            })
        return self._fingerprint

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs: the fine iterate (coarse levels are rebuilt each iteration),
        the history and the fingerprint. Tensors and plain types only, so it loads with
        ``torch.load(weights_only=True)``."""
        return {
            "format": 2, "fingerprint": self.fingerprint(),
            "u": self._U[0].cpu(), "iteration": self._iteration,
            "residuals": list(self._residuals), "iter_times": list(self._iter_times),
            "step_counts": list(self._step_counts), "steps": list(self.grid.n),
            "slab": (self.slab.start, self.slab.stop), "world": self.comm.size,
            "rank": self.comm.rank,
        }

    def load_state_dict(self, state: dict[str, Any], path: str | Path = "the state") -> None:
        """Continue from ``state``, written by this rank's layout (same slab and ranks).

        Raises :class:`CheckpointMismatchError` when it is from another run (fingerprint)
        and :class:`CheckpointError` when it is from another layout; ``solve(checkpoint=,
        resume=True)`` re-slabs such a checkpoint instead.
        """
        check_fingerprint(state.get("fingerprint"), self.fingerprint(), path)
        mine = {"slab": (self.slab.start, self.slab.stop), "world": self.comm.size}
        theirs = {"slab": tuple(state.get("slab", ())), "world": state.get("world")}
        if theirs != mine:
            raise CheckpointError(
                f"checkpoint does not match this solver's layout: {path} has {theirs}, this "
                f"rank has {mine}; MGRIT.solve(checkpoint=..., resume=True) re-slabs it"
            )
        self._check_rows(state, path, self.slab.stop - self.slab.start + 1)
        self._U[0].copy_(state["u"].to(self._U[0].device))
        self._iteration = int(state["iteration"])
        self._residuals = [float(r) for r in state["residuals"]]
        self._iter_times = [float(t) for t in state["iter_times"]]
        self._step_counts = [int(c) for c in state["step_counts"]]
        self._cache_valid = False

    def _check_rows(self, state: dict[str, Any], path: str | Path, rows: int) -> None:
        u = state.get("u")
        want = (rows, *self._u0.shape)
        if not isinstance(u, torch.Tensor) or tuple(u.shape) != want or u.dtype != self._u0.dtype:
            got = (tuple(u.shape), u.dtype) if isinstance(u, torch.Tensor) else type(u).__name__
            raise CheckpointError(
                f"checkpoint {path} holds an iterate of {got}, expected shape {want}, dtype "
                f"{self._u0.dtype}; {RESUME_HINT}"
            )

    def _checkpoint_source(self, path: Path) -> tuple[int, dict[int, Path], dict[Path, Any]]:
        """The newest checkpoint set under ``path``: the ranks that wrote it, the files of
        it that exist by rank, and the states already read (to read no file twice).

        One rank writes ``path``, P ranks ``path.rank0 .. path.rank<P-1>`` (P is read from
        ``path.rank0``, or the lowest rank file there is). World 0: no file at all.
        """
        ranks = rank_files(path)
        single = path if path.is_file() else None
        if single is None and not ranks:
            return 0, {}, {}
        if single is not None and ranks:  # both layouts: the most recently written wins
            newest = max(f.stat().st_mtime for f in ranks.values())
            if single.stat().st_mtime >= newest:
                ranks = {}
            else:
                single = None
        if single is not None:
            return 1, {0: single}, {}
        lowest = ranks[min(ranks)]
        state = load_checkpoint(lowest)
        world = state.get("world")
        if not is_integer(world) or world < 2:
            raise CheckpointError(
                f"checkpoint {lowest} does not say how many ranks wrote it (world={world!r}); "
                f"{RESUME_HINT}"
            )
        world = int(world)
        return world, {r: f for r, f in ranks.items() if r < world}, {lowest: state}

    def _load_checkpoint(self, path: Path) -> tuple[bool, int]:
        """Load the checkpoint at ``path`` into this rank's slab: (resumed, its world)."""
        world, files, read = self._checkpoint_source(path)
        if not world:
            return False, 0
        own = files.get(self.comm.rank)
        if world == self.comm.size and own is not None:
            state = read.pop(own, None) or load_checkpoint(own)
            if tuple(state.get("slab", ())) == (self.slab.start, self.slab.stop):
                self.load_state_dict(state, own)
                return True, world
            read[own] = state
        self._load_reslabbed(path, world, files, read)
        return True, world

    def _load_reslabbed(
        self, path: Path, world: int, files: dict[int, Path], read: dict[Path, Any]
    ) -> None:
        """Assemble this rank's slab (and ghost) from the slabs ``world`` ranks wrote."""
        missing = [str(rank_file(path, r, world)) for r in range(world) if r not in files]
        if missing:
            raise CheckpointError(
                f"checkpoint {path} is incomplete: it was written by {world} ranks, but "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing. "
                "Restore the missing files, or delete the others to start afresh (or run "
                "without resume)"
            )
        lo, hi, nt = self.slab.start, self.slab.stop, self.grid.nt
        U = self._U[0]
        U.zero_()
        covered, head = 0, None
        for r in range(world):
            f = files[r]
            state = read.pop(f, None) or load_checkpoint(f)
            check_fingerprint(state.get("fingerprint"), self.fingerprint(), f)
            slab = tuple(state.get("slab", ()))
            if state.get("world") != world or len(slab) != 2 or slab[0] != covered:
                raise CheckpointError(
                    f"checkpoint {f} does not continue the slabs of {path} (rank {r} of "
                    f"{world}: slab {slab}, world {state.get('world')}, expected a slab from "
                    f"point {covered}): the files are from different runs; {_RESUME_SET_HINT}"
                )
            a, b = int(slab[0]), int(slab[1])
            self._check_rows(state, f, b - a + 1)
            if head is None:
                head = {k: state[k] for k in ("iteration", "residuals", "iter_times")}
                head["file"] = f
            elif int(state["iteration"]) != int(head["iteration"]):
                raise CheckpointError(
                    f"the files of checkpoint {path} are from different iterations ("
                    f"{head['file']}: {head['iteration']}, {f}: {state['iteration']}): the "
                    f"run stopped while writing them; {_RESUME_SET_HINT}"
                )
            # rows 1.. of a file are points a .. b-1; this rank needs lo-1 (ghost) .. hi-1
            first, last = max(a, lo - 1, 0), min(b, hi)
            if first < last:
                U[first - lo + 1 : last - lo + 1] = state["u"][first - a + 1 : last - a + 1].to(U)
            covered = b
            del state
        if covered != nt + 1 or head is None:
            raise CheckpointError(
                f"checkpoint {path} covers points 0 .. {covered - 1}, not the {nt + 1} fine "
                f"points of this problem; {RESUME_HINT}"
            )
        self._iteration = int(head["iteration"])
        self._residuals = [float(x) for x in head["residuals"]]
        self._iter_times = [float(x) for x in head["iter_times"]]
        self._step_counts = [0] * self.grid.num_levels  # per-rank counts restart on a re-slab
        self._cache_valid = False

    def _resume(self, path: str | Path) -> bool:
        """Resume from the checkpoint at ``path`` if there is one; all ranks agree or raise.

        Every rank takes part in one all-reduce even when its own load failed, so a bad
        file is an error on every rank, never a peer left waiting.
        """
        err: Exception | None = None
        resumed, world = False, 0
        try:
            resumed, world = self._load_checkpoint(Path(path))
        except CheckpointError as e:
            err = e
        except Exception as e:  # a malformed state: name the file, keep the cause
            err = CheckpointError(
                f"checkpoint {path} cannot be resumed ({type(e).__name__}: {e}); {RESUME_HINT}"
            )
            err.__cause__ = e
        if self.comm.size > 1:
            mine = [float(err is not None), float(resumed),
                    float(self._iteration if resumed else -1), float(world)]
            flags = torch.tensor(mine + [-x for x in mine[1:]], dtype=torch.float64,
                                 device=self._U[0].device)
            flags = self.comm.all_reduce(flags, "max", "the checkpoint check").tolist()
            failed, hi, lo = flags[0], flags[1:4], [-x for x in flags[4:]]
            if err is None:
                err = self._disagreement(path, failed, hi, lo)
        if err is not None:
            raise err
        return resumed

    def _disagreement(
        self, path: str | Path, failed: float, hi: list[float], lo: list[float]
    ) -> CheckpointError | None:
        """The error every rank raises when the ranks' resumes disagree (``hi``/``lo``: the
        largest and smallest of resumed, iteration, writers' world over the ranks)."""
        if failed:
            return CheckpointError(
                f"rank {self.comm.rank}: another rank could not resume from checkpoint "
                f"{path}; see its error"
            )
        if hi[0] != lo[0]:
            return CheckpointError(
                f"some ranks found checkpoint {path} and others did not: every rank must "
                f"see the same files (a shared file system); {_RESUME_SET_HINT}"
            )
        if hi[2] != lo[2]:
            return CheckpointError(
                f"the ranks found checkpoints of {path} written by {lo[2]:g} and by "
                f"{hi[2]:g} ranks: files of different runs are mixed there; {_RESUME_SET_HINT}"
            )
        if hi[1] != lo[1]:
            return CheckpointError(
                f"the ranks' files of checkpoint {path} are from different iterations "
                f"({lo[1]:g} and {hi[1]:g}): the run stopped while writing them; "
                f"{_RESUME_SET_HINT}"
            )
        return None

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
        copy: bool = True,
    ) -> MGRITResult:
        """Iterate until the residual is below ``tol`` or ``max_iter`` iterations.

        Every call is a new solve on the same grid, reusing the solver's buffers:
        ``u0`` replaces the problem's initial state (same shape, dtype and device);
        ``initial`` is an initial guess at all ``nt + 1`` fine points (each rank takes its
        slab; point 0 becomes the initial state); ``warm_start=True`` starts from the
        previous solve's solution instead (a warm restart). With ``checkpoint`` the fine
        iterate is saved every ``checkpoint_every`` iterations (one file on one rank, else
        ``checkpoint.rank<r>`` per rank); ``resume=True`` continues from it when it exists,
        so finished iterations are not lost, and starts afresh when it does not.

        A checkpoint is resumed only by the same run (:meth:`fingerprint`: problem, u_0,
        solver settings; else :class:`CheckpointMismatchError`), on any number of ranks
        (the slabs are re-cut). An unreadable or incomplete checkpoint is a
        :class:`CheckpointError` naming the file.

        ``copy=False`` returns views of the solver's buffers in the result's ``u`` and
        ``ghost`` (no copy of every state; they change with the next solve).
        """
        t_solve = time.perf_counter()
        if initial is not None and warm_start:
            raise ValueError("give an initial guess or warm_start=True, not both")
        start = self._initial_value(u0)
        self._reset(start, keep_fine=warm_start)
        resumed = False
        if checkpoint is not None and resume:
            resumed = self._resume(checkpoint)
        if not resumed and not warm_start:
            if initial is not None:
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
                self._post_receives()
                self._cycle(0, self.cycle, True)
                self._end_receives()
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
        return self._result(converged, time.perf_counter() - t_solve, copy)

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

    def _result(self, converged: bool, solve_time: float, copy: bool = True) -> MGRITResult:
        U0 = self._U[0]
        last = self.comm.size - 1  # slabs are contiguous and non-empty: it owns t_N
        final = U0[-1] if self.comm.rank == last else torch.zeros_like(self._u0)
        final = self.comm.broadcast(final, last, "the final state")
        return MGRITResult(
            u=U0[1:].clone() if copy else U0[1:],
            points=self._owned(0),
            ghost=None if self._prev[0] is None else U0[0].clone() if copy else U0[0],
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
