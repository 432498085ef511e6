"""The fine residual and the divergence checks."""

import math

import pytest
import torch

from torchpint.core import MGRIT, DivergenceError, serial_solve
from torchpint.core.residual import DivergenceMonitor, peak
from torchpint.problems import Heat1D


def test_peak_is_the_largest_magnitude_and_keeps_nan():
    assert float(peak(torch.tensor([-3.0, 2.0]))) == 3.0
    assert math.isnan(float(peak(torch.tensor([1.0, float("nan")]))))


def test_the_residual_of_the_serial_solution_is_zero_and_of_zeros_is_not():
    p = Heat1D(nt=32, nx=9)
    exact = serial_solve(p)
    solver = MGRIT(p, levels=2, iterations=1)
    assert solver.solve(initial=exact).residuals[0] <= 1e-15
    assert solver.solve().residuals[0] > 1e-3


def _peaks(*values, bad=0.0, huge=0.0):
    return torch.tensor([*values, bad, huge], dtype=torch.float64)


def test_monitor_names_the_first_non_finite_level():
    m = DivergenceMonitor(1e4, 3)
    m.reset(torch.ones(2))
    with pytest.raises(DivergenceError, match="non-finite values appear first on level 1"):
        m.check(4, 1.0, _peaks(1.0, math.inf, 1.0), [1.0])
    m.watch(2, torch.tensor([float("nan")]))
    m.watch(1, torch.tensor([float("nan")]))  # only the first is kept
    flags = m.flags(torch.device("cpu"))
    assert [float(f) for f in flags] == [1.0, 0.0] and m.bad_level is None


def test_monitor_state_size_and_growth_tests():
    m = DivergenceMonitor(10.0, 2)
    m.reset(torch.tensor([2.0]))  # "too large" is 10 x max(1, 2)
    with pytest.raises(DivergenceError, match=r"exceeded 10 x max\(1, \|u_0\|\) first on level 1"):
        m.check(2, 1.0, _peaks(1.0, 25.0), [1.0])
    m.check(2, 1.0, _peaks(1.0, 19.0), [1.0])
    with pytest.raises(DivergenceError, match=r"residual grew from 1\.000e-01 to 5\.000e\+00"):
        m.check(3, 5.0, _peaks(1.0, 1.0), [0.1, 5.0], hint="a hint")
    m.check(3, 5.0, _peaks(1.0, 1.0), [0.1, 5.0], growth=False)  # a fixed iteration count
    with pytest.raises(DivergenceError, match="non-finite"):
        m.check(3, math.nan, _peaks(1.0, 1.0), [0.1, math.nan], growth=False)


def test_an_infinite_factor_watches_nothing_during_the_cycle():
    m = DivergenceMonitor(math.inf, 2)
    m.reset(torch.ones(1))
    m.watch(0, torch.tensor([float("nan")]))
    assert m.bad_level is None
    m.check(1, 1e300, _peaks(1e300, 1.0), [1e-300, 1e300])  # no size or growth test
