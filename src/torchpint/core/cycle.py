"""One rank's level buffers and the operations of an MGRIT iteration on them.

XBraid's relax.c, restrict.c and interp.c in one place: F- and C-relaxation, FAS
restriction by injection, the coarse-grid correction, the sequential solve on the
coarsest level, V- and F-cycles and nested iteration. A problem whose levels hold states
of different shapes (spatial coarsening: :meth:`~torchpint.core.Problem.restrict` and
:meth:`~torchpint.core.Problem.interpolate`) has its C-values restricted on the way
down, its residuals restricted into the FAS right-hand side and its corrections
interpolated on the way up, as XBraid does with a spatial coarsen / refine pair. A rank
owns, on every level, the points whose fine index lies in its slab, and keeps one ghost
row (the point just before them) that its neighbour refreshes; every send and receive
of a cycle is here, in the order the :class:`~torchpint.core.schedule.ReceiveSchedule`
learns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from torchpint.core.grid import Grid, Partition
from torchpint.core.problem import (
    Problem,
    check_step_output,
    has_transfers,
    level_states,
    writes_in_place,
)
from torchpint.core.schedule import TAG_F, TAG_SOLVE, TAG_V, ReceiveSchedule

if TYPE_CHECKING:
    from torchpint.core.residual import DivergenceMonitor
    from torchpint.runtime.comm import Comm


class Cycle:
    """The iterate of one rank on every level and the MGRIT cycle that updates it.

    Level ``l``'s buffers have one row per owned point plus row 0, the ghost (the point
    before the first owned one): row ``j`` is point ``first[l] + j - 1``. ``U`` holds the
    iterate and ``G`` the FAS right-hand side (``None`` on level 0); ``V`` the restricted
    values ``v`` of the last restriction, kept for the correction only when the problem
    has transfers (``None`` otherwise: ``v`` is then the fine C-values themselves, so the
    correction overwrites them). ``phi_cache`` keeps
    ``Phi(u_{i-1})`` at the fine C-points from the last residual (valid until the fine
    iterate changes), which the next iteration's C-relaxation and restriction reuse.
    ``step_counts`` and ``step_time`` count the steps taken (per level) and the seconds
    spent in them.

    Args:
        problem, grid, partition, comm: what is solved, on which levels, by which rank.
        schedule: the receive schedule every receive goes through.
        ncf: CF sweeps per level after its first F-relaxation (0: F-relaxation only).
        monitor: told each level's values after its relaxation (divergence checks).
        like: a state of level 0: the buffers get its dtype and device, and its shape
            on every level (carried down by the problem's transfers).
    """

    def __init__(
        self,
        problem: Problem,
        grid: Grid,
        partition: Partition,
        comm: Comm,
        schedule: ReceiveSchedule,
        ncf: Sequence[int],
        monitor: DivergenceMonitor,
        like: torch.Tensor,
    ) -> None:
        self.problem, self.grid, self.partition, self.comm = problem, grid, partition, comm
        self.schedule, self.monitor = schedule, monitor
        self.ncf = list(ncf)
        self.levels = L = grid.num_levels
        self.first, self.count = partition.first, partition.count
        self.prev, self.next = partition.prev, partition.next
        self.transfers = has_transfers(problem)
        shapes = [tuple(s.shape) for s in level_states(problem, like, L)]
        kw = {"dtype": like.dtype, "device": like.device}

        def buffer(l: int) -> torch.Tensor:
            return torch.zeros((self.count[l] + 1, *shapes[l]), **kw)

        self.U = [buffer(l) for l in range(L)]
        self.G: list[torch.Tensor | None] = [None] + [buffer(l) for l in range(1, L)]
        self.V: list[torch.Tensor | None] = [None] + [
            buffer(l) if self.transfers else None for l in range(1, L)]
        n_c = len(self.c_points(0))
        self.phi_cache = torch.zeros((n_c, *shapes[0]), **kw) if L > 1 else None
        self.cache_valid = False
        self.final = False  # fine steps go through problem.final_step (the final sweep)
        self.in_place = writes_in_place(problem)  # steps written into the buffers
        self.step_counts = [0] * L
        self.step_time = 0.0

    def reset(self, u0: torch.Tensor, keep_fine: bool = False) -> None:
        """Start a solve: the fine C-values zero (``keep_fine``: the fine iterate stays, a
        warm start), ``u0`` at point 0 (on a coarse level: carried there), the step counts
        zero.

        Nothing else is read before it is written: the fine F-points by the first
        F-relaxation (or a one-level solve's sweep), the coarse levels by restriction,
        skip's injection or nested iteration, which zeroes its right-hand sides. So only
        the C-values are zeroed, not every buffer.
        """
        if not keep_fine:
            c = self.c_points(0)
            if self.levels == 1:
                self.U[0].zero_()
            elif c:
                self.U[0][self.rows(0, c)].zero_()
        starts = level_states(self.problem, u0, self.levels) if self.count[0] and \
            self.first[0] == 0 else []
        for l, U in enumerate(self.U):
            if self.count[l] and self.first[l] == 0:
                U[1] = starts[l]
        self.cache_valid = False
        self.step_counts = [0] * self.levels
        self.step_time = 0.0

    # -- indexing ------------------------------------------------------------------------
    def row(self, l: int, i: int) -> int:
        """The buffer row of point ``i`` of level ``l``."""
        return i - self.first[l] + 1

    def owned(self, l: int) -> range:
        """The points of level ``l`` this rank owns."""
        return self.partition.owned(l)

    def rows(self, l: int, points: range) -> slice:
        """The buffer rows of level ``l``'s owned ``points`` (a range of any step) as one
        slice: one operation over them all."""
        r0 = self.row(l, points.start)
        return slice(r0, r0 + (len(points) - 1) * points.step + 1, points.step)

    def c_points(self, l: int) -> range:
        """Owned C-points of level ``l`` (coarse points of level ``l + 1``)."""
        if l == self.levels - 1:
            return range(0)
        m, own = self.grid.m[l], self.owned(l)
        return range(-(-own.start // m) * m, own.stop, m)

    # -- steps ---------------------------------------------------------------------------
    def phi(self, l: int, u: torch.Tensor, i: int) -> torch.Tensor:
        """Step ``i`` of level ``l`` from ``u``, counted and timed; its output checked
        for shape, dtype and device (no values: cheap enough for every step)."""
        t = time.perf_counter()
        out = self.problem.final_step(u, i) if self.final and l == 0 else \
            self.problem.step(u, i, l)
        self.step_time += time.perf_counter() - t
        self.step_counts[l] += 1
        if (not isinstance(out, torch.Tensor) or out.shape != u.shape or out.dtype != u.dtype
                or out.device != u.device):
            check_step_output(out, u, i, l)  # raises, naming the level, index and shapes
        return out

    def phi_into(self, l: int, u: torch.Tensor, i: int, out: torch.Tensor) -> None:
        """:meth:`phi` written into ``out`` (a buffer row): in place by the problem when it
        writes its steps so (:meth:`~torchpint.core.Problem.step_into`, checked at the
        first solve; the final sweep's through ``final_step_into``)."""
        if not self.in_place:
            out.copy_(self.phi(l, u, i))
            return
        t = time.perf_counter()
        if self.final and l == 0:
            self.problem.final_step_into(u, i, out)
        else:
            self.problem.step_into(u, i, l, out)
        self.step_time += time.perf_counter() - t
        self.step_counts[l] += 1

    def sweep(self, l: int, start: int, stop: int) -> None:
        """u_i = g_i + Phi(u_{i-1}) for i in [start, stop] (inclusive), in order."""
        U, G = self.U[l], self.G[l]
        for i in range(start, stop + 1):
            r = self.row(l, i)
            if G is None or self.in_place:
                self.phi_into(l, U[r - 1], i - 1, U[r])
                if G is not None:
                    U[r].add_(G[r])
            else:  # (one pass fewer than a copy and an add)
                torch.add(self.phi(l, U[r - 1], i - 1), G[r], out=U[r])

    def watch(self, l: int) -> None:
        """Let the monitor see level ``l``'s owned values."""
        if self.count[l]:
            self.monitor.watch(l, self.U[l][1:])

    # -- relaxation ----------------------------------------------------------------------
    def f_relax(self, l: int) -> None:
        """Step from each C-point through its F-points; refresh the ghost row.

        Every rank sends its last point to the next rank exactly once (as soon as it is
        final) and receives its ghost exactly once (before it needs it).
        """
        if l == 0:
            self.cache_valid = False
        own, m = self.owned(l), self.grid.m[l]
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
        prev, nxt = self.prev[l], self.next[l]
        U, what = self.U[l], f"a boundary state on level {l}"
        if nxt is not None and last % m == 0:
            self.comm.send(U[-1], nxt, TAG_F, what)
        for s, e in reversed(body):
            self.sweep(l, s, e)
            if e == last and nxt is not None:
                self.comm.send(U[-1], nxt, TAG_F, what)
        if prev is not None:
            self.schedule.recv(U[0], prev, TAG_F, what)
        if head is not None:
            self.sweep(l, *head)
            if head[1] == last and nxt is not None:
                self.comm.send(U[-1], nxt, TAG_F, what)

    def c_relax(self, l: int) -> None:
        """u_i = g_i + Phi(u_{i-1}) at the owned C-points i >= 1 (the fine ones from the
        residual's cache while it is valid)."""
        U, G = self.U[l], self.G[l]
        for j, i in enumerate(self.c_points(l)):
            if i == 0:
                continue
            r = self.row(l, i)
            if l == 0 and self.cache_valid:
                U[r] = self.phi_cache[j]  # type: ignore[index]
            else:
                self.phi_into(l, U[r - 1], i - 1, U[r])
                if G is not None:
                    U[r].add_(G[r])

    # -- coarse-grid correction ----------------------------------------------------------
    def restrict(self, l: int) -> None:
        """Inject u to level l + 1 (the coarse iterate starts there) and form the FAS
        right-hand side: g_c = v_k - Phi_c(v_{k-1}) + R(g + Phi(u_{i-1}) - u_i). Without
        transfers the injected v_k is u_i, so g_c = g + Phi(u_{i-1}) - Phi_c(v_{k-1});
        with them (XBraid's restriction with a spatial coarsen), v_k = R(u_i) is kept in
        ``V`` for the correction and the residual is restricted by the same R."""
        c, m = l + 1, self.grid.m[l]
        U, G, Uc, Gc, Vc = self.U[l], self.G[l], self.U[c], self.G[c], self.V[c]
        assert Gc is not None
        coarse = self.owned(c)
        self._inject(l)
        if coarse and self.next[c] is not None:
            self.comm.send(Uc[-1], self.next[c], TAG_V, f"a restricted state on level {c}")
        if coarse and self.prev[c] is not None:
            self.schedule.recv(Uc[0], self.prev[c], TAG_V, f"a restricted state on level {c}")
        if Vc is not None:
            Vc.copy_(Uc)
        for j, k in enumerate(coarse):
            if k == 0:
                continue
            i, r, rc = k * m, self.row(l, k * m), self.row(c, k)
            if l == 0 and self.cache_valid:
                fine = self.phi_cache[j]  # type: ignore[index]
            else:
                fine = self.phi(l, U[r - 1], i - 1)
            if Vc is None:
                torch.sub(fine, self.phi(c, Uc[rc - 1], k - 1), out=Gc[rc])
                if G is not None:
                    Gc[rc] += G[r]
                continue
            residual = fine - U[r] if G is None else fine - U[r] + G[r]
            torch.sub(Uc[rc], self.phi(c, Uc[rc - 1], k - 1), out=Gc[rc])
            Gc[rc] += self.problem.restrict(residual, l)

    def _inject(self, l: int) -> None:
        """Level ``l``'s owned C-values into level ``l + 1``'s iterate: in one copy (they
        are ``m`` rows apart), or restricted one by one when the problem has transfers."""
        c, own = l + 1, self.owned(l + 1)
        if not own:
            return
        if not self.transfers:
            self.U[c][self.rows(c, own)] = self.U[l][self._c_rows(l, own)]
            return
        m, Uc, U = self.grid.m[l], self.U[c], self.U[l]
        for k in own:
            Uc[self.row(c, k)] = self.problem.restrict(U[self.row(l, k * m)], l)

    def _c_rows(self, l: int, own: range) -> slice:
        """The rows of level ``l``'s C-points that are level ``l + 1``'s points ``own``."""
        m = self.grid.m[l]
        return self.rows(l, range(own.start * m, own.stop * m, m))

    def inject(self, l: int) -> None:
        """XBraid's skip, on the way down of a solve's first iteration: level ``l + 1``
        starts from level ``l``'s C-values, with no FAS right-hand side and no steps."""
        Gc, Vc = self.G[l + 1], self.V[l + 1]
        assert Gc is not None
        self._inject(l)
        Gc.zero_()
        if Vc is not None:
            Vc.copy_(self.U[l + 1])

    def correct(self, l: int) -> None:
        """u_{mk} += P(u^{l+1}_k - v_k) at the owned C-points of level ``l``. Without
        transfers the coarse values overwrite them, since the restricted v_k is u_{mk}
        (level ``l`` is not touched between its restriction and its correction); with
        them, P is the problem's interpolation and v_k the kept ``V``."""
        if l == 0:
            self.cache_valid = False
        own, Vc = self.owned(l + 1), self.V[l + 1]
        if not own:
            return
        if Vc is None:
            self.U[l][self._c_rows(l, own)] = self.U[l + 1][self.rows(l + 1, own)]
            return
        m, U, Uc = self.grid.m[l], self.U[l], self.U[l + 1]
        for k in own:
            if k:  # (point 0 is the initial state on every level: no correction)
                rc = self.row(l + 1, k)
                U[self.row(l, k * m)] += self.problem.interpolate(Uc[rc] - Vc[rc], l)

    def prolong(self, l: int) -> None:
        """Level ``l + 1``'s values become level ``l``'s C-values (nested iteration): copied,
        or interpolated when the problem has transfers."""
        if not self.transfers:
            self.correct(l)
            return
        own, m, U, Uc = self.owned(l + 1), self.grid.m[l], self.U[l], self.U[l + 1]
        for k in own:
            if k:
                U[self.row(l, k * m)] = self.problem.interpolate(Uc[self.row(l + 1, k)], l)

    def forward_solve(self, l: int) -> None:
        """Sequential time stepping on the coarsest level, pipelined over the ranks."""
        own = self.owned(l)
        if not own:
            return
        U, what = self.U[l], f"the coarse solve on level {l}"
        if self.prev[l] is not None:
            self.schedule.recv(U[0], self.prev[l], TAG_SOLVE, what)
        self.sweep(l, max(own.start, 1), own.stop - 1)
        self.watch(l)
        if self.next[l] is not None:
            self.comm.send(U[-1], self.next[l], TAG_SOLVE, what)

    # -- cycles --------------------------------------------------------------------------
    def cycle(self, l: int, kind: str, first_f: bool, skip: bool = False,
              final: bool = False) -> None:
        """A ``kind`` ("V" or "F") cycle from level ``l``; ``first_f``: F-relax first.

        On the fine level the first F-relaxation is done only at a solve's first
        iteration (the caller says so); on coarse levels whenever ``first_f``. ``skip``:
        the way down does no work (:meth:`inject`). ``final``: the fine level's last
        sweep is the solve's final one (:attr:`final` stays set for the residual).
        """
        if l == self.levels - 1:
            self.final = final
            self.forward_solve(l)
            return
        if skip:
            self.inject(l)
        else:
            if first_f:
                self.f_relax(l)
            for _ in range(self.ncf[l]):
                self.c_relax(l)
                self.f_relax(l)
            self.watch(l)
            self.restrict(l)
        self.cycle(l + 1, kind, True, skip)
        self.correct(l)
        self.final = final
        self.f_relax(l)
        if l > 0 and kind == "F":
            self.cycle(l, "V", False)

    def nested_iteration(self) -> None:
        """Initial guess: solve the coarsest level, then inject and V-cycle upwards (the
        coarse problems without a FAS right-hand side)."""
        L = self.levels
        for G in self.G[1:]:
            G.zero_()  # type: ignore[union-attr]
        self.forward_solve(L - 1)
        for l in range(L - 2, -1, -1):
            self.prolong(l)  # the coarse values become level l's C-values
            if l > 0:
                self.cycle(l, "V", True)
