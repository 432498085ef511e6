"""The level buffers and the cycle's operations, driven directly on one rank."""

import pytest
import torch

from torchpint.core import MGRIT, serial_solve
from torchpint.core.cycle import Cycle
from torchpint.core.grid import Grid, Partition
from torchpint.core.residual import DivergenceMonitor, fine_residual
from torchpint.core.schedule import ReceiveSchedule
from torchpint.problems import AllenCahn, Heat1D
from torchpint.runtime.comm import make_comm


def _cycle(problem, **grid_kw):
    grid = Grid(problem.nt, **grid_kw)
    problem.bind(grid)
    comm = make_comm(None, 10.0)
    monitor = DivergenceMonitor(1e4, grid.num_levels)
    ncf = [1] * (grid.num_levels - 1) + [0]
    u0 = problem.initial_state()
    cyc = Cycle(problem, grid, Partition.of(grid, 0, 1), comm, ReceiveSchedule(comm), ncf,
                monitor, u0)
    cyc.reset(u0)
    monitor.reset(u0)
    return cyc, comm, monitor


def test_f_relaxation_from_exact_c_points_is_exact():
    p = Heat1D(nt=16, nx=9)
    exact = serial_solve(p)
    cyc, _, _ = _cycle(p, cfactor=4, levels=2)
    cyc.U[0][1::4] = exact[::4]  # row j is point j - 1: C-points only
    cyc.f_relax(0)
    assert torch.equal(cyc.U[0][1:], exact)
    assert cyc.step_counts == [12, 0]  # 3 F-points in each of 4 intervals


def test_c_relaxation_reuses_the_residual_and_counts_no_step():
    p = AllenCahn(nt=16, nx=9)
    cyc, comm, monitor = _cycle(p, cfactor=2, levels=2)
    cyc.f_relax(0)
    fine_residual(cyc, monitor, comm)
    assert cyc.cache_valid
    before = list(cyc.step_counts)
    cyc.c_relax(0)
    assert cyc.step_counts == before
    assert torch.equal(cyc.U[0][1 + 2 :: 2], cyc.phi_cache[1:])
    cyc.f_relax(0)  # the fine iterate changes: the cache is stale
    assert not cyc.cache_valid


@pytest.mark.parametrize("kind", ["V", "F"])
def test_one_cycle_is_one_mgrit_iteration(kind):
    p = AllenCahn(nt=32, nx=9)
    cyc, _, _ = _cycle(p, cfactor=2)
    cyc.cycle(0, kind, True)
    ref = MGRIT(p, cycle=kind, iterations=1).solve()
    assert torch.equal(cyc.U[0][1:], ref.u)


def test_nested_iteration_injects_the_coarse_solve():
    p = Heat1D(nt=16, nx=9)
    cyc, _, _ = _cycle(p, cfactor=4, levels=2)
    cyc.nested_iteration()
    assert torch.equal(cyc.U[0][1::4], serial_solve(p, level=1))
    assert cyc.step_counts == [0, 4]


def test_reset_keeps_the_fine_iterate_only_on_a_warm_start():
    p = Heat1D(nt=8, nx=9)
    cyc, _, _ = _cycle(p, cfactor=2, levels=2)
    cyc.cycle(0, "V", True)
    fine = cyc.U[0].clone()
    cyc.reset(p.initial_state(), keep_fine=True)
    assert torch.equal(cyc.U[0], fine)
    assert cyc.step_counts == [0, 0] and cyc.step_time == 0.0
    cyc.reset(p.initial_state())
    # a cold start: the fine C-values (rows 3, 5, 7, 9: points 2, 4, 6, 8) zero, u_0 at
    # point 0; the F-values and coarse levels are written before they are read (the
    # kept-solver test in test_mgrit.py checks that no bit of them reaches a solve)
    assert not cyc.U[0][3::2].any() and torch.equal(cyc.U[0][1], p.initial_state())
    assert torch.equal(cyc.U[0][2::2], fine[2::2])
