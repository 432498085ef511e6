import pytest

from torchpint.core import Grid, iteration_cost, potential_speedup


def test_parareal_critical_path_by_hand():
    # two levels, F-relaxation, m = 8, N = 64, one processor per chunk (P = 8):
    # restrict (1 fine + 1 coarse) + coarse solve 8 + F-relax 7 + residual 1; the fine
    # level starts with F-relaxation only in the first iteration (counted once).
    g = Grid(64, cfactor=8, levels=2)
    assert iteration_cost(g, 8, relax="F") == 2 + 8 + 7 + 1
    # one processor does everything: 8 chunks of each sweep
    assert iteration_cost(g, 1, relax="F") == 8 * 2 + 8 + 8 * 7 + 8
    assert potential_speedup(g, 3, 8, relax="F") == pytest.approx(64 / (3 * 18 + 7))


def test_speedup_grows_with_processors_and_f_cycles_cost_more():
    g = Grid(4096, cfactor=2)
    s = [potential_speedup(g, 10, p) for p in (1, 16, 256, 2048)]
    assert s[0] < 1 and s == sorted(s) and s[-1] > 4
    assert iteration_cost(g, 64, cycle="F") > iteration_cost(g, 64, cycle="V")
    cheap = potential_speedup(g, 10, 256, costs=[1.0, 0.5])
    assert cheap > potential_speedup(g, 10, 256)


def test_costs_must_cover_levels_or_repeat_the_last():
    g = Grid(64, levels=3)
    assert iteration_cost(g, 4, costs=[1.0]) == pytest.approx(iteration_cost(g, 4))
