"""The fine residual of an MGRIT iteration and the divergence checks (XBraid's residual.c).

After each iteration the solver reports the 2-norm over the fine C-points i >= 1 of
``Phi(u_{i-1}) - u_i`` (XBraid's and PyMGRIT's convention) and the largest ``|u|`` on
every level, both agreed by all ranks in one collective, so every rank stops, or raises
the same :class:`DivergenceError`, at the same iteration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from torchpint.core.history import DivergenceError

if TYPE_CHECKING:
    from torchpint.core.cycle import Cycle
    from torchpint.runtime.comm import Comm


def peak(t: torch.Tensor) -> torch.Tensor:
    """``max |t|`` (NaN if any is), without allocating ``|t|``: one pass of aminmax."""
    lo, hi = torch.aminmax(t)
    return torch.maximum(-lo, hi)


class DivergenceMonitor:
    """Watches a solve for divergence and raises :class:`DivergenceError` naming it.

    Three tests: non-finite values (always on), a state beyond ``factor`` x max(1,
    max |u_0|) (off with ``factor = inf``), a residual beyond ``factor`` times its
    smallest value so far (off with ``factor = inf``, or per call: a fixed number of
    iterations has no residual test). During a cycle :meth:`watch` remembers the first
    level whose values turn non-finite or too large, so the error names where it began.
    """

    def __init__(self, factor: float, levels: int) -> None:
        self.factor, self.levels = float(factor), int(levels)
        self.scale = 1.0
        self.bad_level: int | None = None  # first level seen non-finite this iteration
        self.huge_level: int | None = None  # first level seen too large this iteration

    def reset(self, u0: torch.Tensor) -> None:
        """Start watching a new solve from ``u0`` (it sets the scale of "too large")."""
        self.bad_level = self.huge_level = None
        self.scale = max(1.0, float(u0.abs().max()) if u0.numel() else 1.0)

    def watch(self, level: int, states: torch.Tensor) -> None:
        """Note ``level`` if its ``states`` are the first seen non-finite or too large
        (with ``factor = inf`` the once-per-iteration check of the residual does it)."""
        if self.bad_level is not None or self.factor == math.inf:
            return
        top = float(peak(states))
        if not math.isfinite(top):
            self.bad_level = level
        elif top > self.factor * self.scale and self.huge_level is None:
            self.huge_level = level

    def flags(self, device: torch.device) -> list[torch.Tensor]:
        """The levels noted in this iteration as two scalars (``levels - level``, 0 for
        none), for the residual's collective; they are cleared for the next iteration."""
        L = self.levels
        out = [torch.tensor(0.0 if lev is None else L - lev, dtype=torch.float64, device=device)
               for lev in (self.bad_level, self.huge_level)]
        self.bad_level = self.huge_level = None
        return out

    def check(
        self,
        iteration: int,
        res: float,
        peaks: torch.Tensor,
        residuals: Sequence[float],
        hint: str = "",
        growth: bool = True,
    ) -> None:
        """Raise :class:`DivergenceError` if iteration ``iteration`` diverged.

        ``peaks`` is what :func:`fine_residual` returned, ``residuals`` the history with
        ``res`` last, ``hint`` the problem's likely cause; ``growth=False`` leaves out the
        growing-residual test (the non-finite and state-size tests stay).
        """
        hint = f" Likely cause: {hint}" if hint else ""
        k, L, factor = iteration, self.levels, self.factor
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
        huge = [l for l in range(L) if float(peaks[l]) > factor * self.scale]
        if huge or first_huge:
            first = L - first_huge if first_huge else huge[0]
            raise DivergenceError(
                f"MGRIT diverged at iteration {k}: the state exceeded {factor:g} x max(1, "
                f"|u_0|) first on level {first} {levels} and reached |u| = "
                f"{float(peaks.max()):.3e}; the residual is {res:.3e}.{hint}"
            )
        best = min(residuals[:-1], default=math.inf)
        if growth and res > factor * best:
            raise DivergenceError(
                f"MGRIT diverged at iteration {k}: the residual grew from {best:.3e} to "
                f"{res:.3e} (more than {factor:g}x).{hint}"
            )


def fine_residual(
    cycle: Cycle, monitor: DivergenceMonitor, comm: Comm, gather: bool = True
) -> tuple[float, torch.Tensor] | torch.Tensor:
    """Fine residual norm and, per level, the largest |u| (all ranks agree on both).
    With ``gather=False`` (a solve that agrees on its residuals once, at its end:
    :func:`gather_residuals`), this rank's record of them instead, with no collective.

    ``Phi(u_{i-1})`` at the fine C-points is kept in the cycle's cache: the next
    iteration's C-relaxation and restriction reuse it. Two entries are appended to the
    peaks: :meth:`DivergenceMonitor.flags`, so every rank raises the same error.

    With no size limit (``factor = inf``) only non-finite values matter, and the residual
    sees them all: a non-finite F-point or coarse value reaches a fine C-point's residual
    within the iteration. So only the fine points after the last C-point (which no
    residual follows) are scanned, and every level only when the residual is not finite,
    to name where it began (a pass over every state saved per iteration).
    """
    U, L = cycle.U[0], cycle.levels
    sumsq = torch.zeros((), dtype=torch.float64, device=U.device)
    if L > 1:
        cache, points = cycle.phi_cache, cycle.c_points(0)
        assert cache is not None
        first = 1 if points and points[0] == 0 else 0  # (u_0 is given: no residual there)
        for j in range(first, len(points)):
            r = cycle.row(0, points[j])
            cycle.phi_into(0, U[r - 1], points[j] - 1, cache[j])
        if len(points) > first:  # the C-points' rows are m apart: one pass for the norm
            rows = cycle.rows(0, points[first:])
            sumsq = torch.linalg.vector_norm(cache[first:] - U[rows]).double() ** 2
        cycle.cache_valid = True
    lazy = monitor.factor == math.inf
    if not gather:
        return _record(cycle, monitor, sumsq, full=not lazy)
    total, peaks = _gather(cycle, monitor, comm, sumsq, full=not lazy)
    if lazy and not (math.isfinite(total) and bool(torch.isfinite(peaks).all())):
        total, peaks = _gather(cycle, monitor, comm, sumsq, full=True)
    return math.sqrt(total), peaks


def gather_residuals(cycle: Cycle, monitor: DivergenceMonitor, comm: Comm,
                     records: list[torch.Tensor]) -> list[tuple[float, torch.Tensor]]:
    """The residual norm and peaks of each iteration recorded by ``fine_residual(...,
    gather=False)``, agreed by all ranks in one collective at the solve's end. A
    non-finite one has its peaks from a scan of every level's current states, to name
    where it began (the states of that iteration are gone)."""
    ranks = comm.all_gather(torch.stack(records), "the residual norms and state magnitudes")
    comm.flush()  # the peers got the solve's messages before they joined
    totals = ranks[:, :, 0].sum(dim=0).tolist()
    peaks = list(ranks[:, :, 1:].amax(dim=0).cpu())
    bad = [i for i, (t, p) in enumerate(zip(totals, peaks, strict=True))
           if not (math.isfinite(t) and bool(torch.isfinite(p).all()))]
    if bad:  # (every rank sees the same totals: all take part)
        zero = torch.zeros((), dtype=torch.float64, device=cycle.U[0].device)
        _, now = _gather(cycle, monitor, comm, zero, full=True)
        for i in bad:
            peaks[i] = now
    return [(math.sqrt(t), p) for t, p in zip(totals, peaks, strict=True)]


def _gather(cycle: Cycle, monitor: DivergenceMonitor, comm: Comm, sumsq: torch.Tensor,
            full: bool) -> tuple[float, torch.Tensor]:
    """The squared residual summed over the ranks and the peaks' largest, in one
    collective (``full``: every level's states; else the fine points no residual follows)."""
    ranks = comm.all_gather(_record(cycle, monitor, sumsq, full),
                            "the residual norm and the state magnitude")
    comm.flush()  # the peers got this iteration's messages before they joined
    return float(ranks[:, 0].sum().item()), ranks[:, 1:].amax(dim=0).cpu()


def _record(cycle: Cycle, monitor: DivergenceMonitor, sumsq: torch.Tensor, full: bool
            ) -> torch.Tensor:
    """This rank's ``[sumsq, peak per level..., the monitor's two flags]``."""
    U, L = cycle.U[0], cycle.levels
    zero = torch.zeros((), dtype=torch.float64, device=U.device)

    def top(states: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(peak(states).double(), nan=math.inf) if len(states) else zero

    if full:
        levels = [top(cycle.U[l][1:]) if cycle.count[l] else zero for l in range(L)]
    else:  # the rows after this rank's last fine C-point (all of them on one level)
        c = cycle.c_points(0)
        tail = cycle.row(0, c[-1]) + 1 if c else 1
        levels = [top(U[tail:]) if cycle.count[0] else zero] + [zero] * (L - 1)
    return torch.cat([sumsq.reshape(1), torch.stack(levels + monitor.flags(U.device))])
