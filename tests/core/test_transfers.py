"""Levels whose states differ in shape (spatial coarsening): a problem's restrict and
interpolate in the FAS cycle, serial and distributed, and the identity by default."""

from __future__ import annotations

import pytest
import torch

from torchpint.core import MGRIT, Problem, serial_solve
from torchpint.core.problem import has_transfers, level_states
from torchpint.problems import Dahlquist
from torchpint.testing import spawn_gloo

pytestmark = pytest.mark.usefixtures("one_thread")


def _laplacian(nx: int) -> torch.Tensor:
    h = 1.0 / (nx - 1)
    lap = torch.zeros((nx, nx), dtype=torch.float64)
    i = torch.arange(1, nx - 1)
    lap[i, i], lap[i, i - 1], lap[i, i + 1] = -2 / h**2, 1 / h**2, 1 / h**2
    return lap


class CoarsenedHeat(Problem):
    """u_t = u_xx on [0, 1], zero at both ends, backward Euler; level ``l`` has
    ``(nx - 1) / 2^l + 1`` points (full weighting down, linear interpolation up), so a
    coarse step costs less than a fine one. ``seen`` records the shape each level steps."""

    def __init__(self, nt: int = 64, nx: int = 33, levels: int = 3) -> None:
        super().__init__(nt, 0.0, 0.5)
        self.nx = [(nx - 1) // 2**l + 1 for l in range(levels)]
        x = torch.linspace(0, 1, nx, dtype=torch.float64)
        self._u0 = torch.sin(torch.pi * x) + 0.5 * torch.sin(3 * torch.pi * x)
        self._inverse: dict[int, torch.Tensor] = {}
        self.seen: dict[int, set[tuple[int, ...]]] = {}

    def initial_state(self) -> torch.Tensor:
        return self._u0

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        self.seen.setdefault(level, set()).add(tuple(u.shape))
        if level not in self._inverse:
            n = self.nx[level]
            a = torch.eye(n, dtype=torch.float64) - self.dt(0, level) * _laplacian(n)
            self._inverse[level] = torch.linalg.inv(a)
        return self._inverse[level] @ u

    def restrict(self, u: torch.Tensor, level: int) -> torch.Tensor:
        out = torch.zeros(self.nx[level + 1], dtype=u.dtype)
        out[1:-1] = 0.25 * u[1:-2:2] + 0.5 * u[2:-1:2] + 0.25 * u[3::2]
        return out

    def interpolate(self, e: torch.Tensor, level: int) -> torch.Tensor:
        out = torch.zeros(self.nx[level], dtype=e.dtype)
        out[::2] = e
        out[1::2] = 0.5 * (e[:-1] + e[1:])
        return out


@pytest.mark.parametrize(("cycle", "nested"), [("V", False), ("F", True)])
def test_a_solve_with_transfers_converges_to_the_fine_sequential_solution(cycle, nested):
    p = CoarsenedHeat()
    exact = serial_solve(p)
    res = MGRIT(p, cfactor=4, levels=3, cycle=cycle, relax="FCF", nested=nested, tol=1e-11,
                max_iter=40).solve()
    assert res.converged and len(res.residuals) < 15
    torch.testing.assert_close(res.u, exact, rtol=0, atol=1e-10)
    assert p.seen == {0: {(33,)}, 1: {(17,)}, 2: {(9,)}}  # each level at its own size


def test_f_relaxation_alone_stalls_above_a_transfer():
    """F-relaxation changes a C-value only by interpolated corrections, so the part of
    the solution outside the interpolation's range is never reached: C-relaxation is
    needed on every level that a transfer coarsens (a known property of MGRIT with
    spatial coarsening)."""
    p = CoarsenedHeat()
    res = MGRIT(p, cfactor=4, levels=2, relax="F", tol=1e-11, max_iter=20).solve()
    assert not res.converged
    assert res.residuals[-1] > 1e-3 and res.residuals[-1] > 0.9 * res.residuals[-5]


def test_skip_starts_the_coarse_levels_from_the_restricted_fine_values():
    p = CoarsenedHeat()
    res = MGRIT(p, cfactor=4, levels=3, skip=True, tol=1e-11, max_iter=40).solve()
    assert res.converged
    torch.testing.assert_close(res.u, serial_solve(p), rtol=0, atol=1e-10)


def test_serial_solve_on_a_coarse_level_starts_from_the_restricted_initial_state():
    p = CoarsenedHeat()
    MGRIT(p, cfactor=4, levels=3)  # binds the grid
    coarse = serial_solve(p, level=1)
    assert coarse.shape == (17, 17)
    assert torch.equal(coarse[0], p.restrict(p.initial_state(), 0))
    assert [tuple(s.shape) for s in level_states(p, p.initial_state(), 3)] == \
        [(33,), (17,), (9,)]


def test_a_problem_without_transfers_keeps_the_identity_and_its_fast_path():
    p = Dahlquist(nt=16, lam=-1.0)
    assert not has_transfers(p) and has_transfers(CoarsenedHeat())
    u = p.initial_state()
    assert all(s is u for s in level_states(p, u, 3))
    solver = MGRIT(p, cfactor=2, levels=3)
    assert solver._cycler.V == [None, None, None]  # no restricted copies kept


def _distributed(rank, world):
    out = []
    for kw in (dict(iterations=3), dict(iterations=2, skip=True, cycle="F")):
        res = MGRIT(CoarsenedHeat(), cfactor=4, levels=3, group="world", **kw).solve()
        out.append((res.u, list(res.points), res.residuals))
    return out


def test_distributed_solves_with_transfers_equal_the_serial_ones():
    ranks = spawn_gloo(_distributed, 2)
    for j, kw in enumerate((dict(iterations=3), dict(iterations=2, skip=True, cycle="F"))):
        ref = MGRIT(CoarsenedHeat(), cfactor=4, levels=3, **kw).solve()
        assert sum((r[j][1] for r in ranks), []) == list(range(65))
        assert torch.equal(torch.cat([r[j][0] for r in ranks]), ref.u)
        assert ranks[0][j][2] == pytest.approx(ref.residuals, rel=1e-12, abs=1e-15)


def test_check_problem_steps_each_level_at_its_own_shape():
    from torchpint.testing import check_problem

    report = check_problem(CoarsenedHeat(nt=16, levels=2), cfactor=4)
    assert "F-relaxation does not terminate" in report.skipped["two_level"]
