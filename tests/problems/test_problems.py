import math

import pytest
import torch

from torchpint.core import serial_solve
from torchpint.problems import AllenCahn, Dahlquist, Heat1D


@pytest.mark.parametrize("method, factor", [
    ("BE", 1 / 1.1), ("FE", 0.9), ("CN", 0.95 / 1.05),
])
def test_dahlquist_methods(method, factor):
    p = Dahlquist(nt=10, t_stop=1.0, method=method)
    u = serial_solve(p)
    assert u[1].item() == pytest.approx(factor)
    assert u[-1].item() == pytest.approx(factor**10)


def test_heat1d_converges_to_pde_solution():
    errors = []
    for nt in (32, 64):
        p = Heat1D(nt=nt, nx=65, t_stop=0.1)
        u = serial_solve(p)
        errors.append(float((u[-1] - p.exact(0.1)).abs().max()))
        assert u[-1, 0] == 0 and u[-1, -1] == 0
    assert errors[1] < 0.6 * errors[0]  # first order in time: the error halves


def test_allen_cahn_is_nonlinear_and_bounded():
    p = AllenCahn(nt=50, nx=33)
    u0 = p.initial_state()
    a, b = p.step(u0, 0, 0), p.step(2 * u0, 0, 0)
    assert not torch.allclose(b, 2 * a)  # nonlinear in u
    u = serial_solve(p)
    assert torch.isfinite(u).all() and u.abs().max() < 1.5


def test_bad_problem_arguments():
    with pytest.raises(ValueError, match="method"):
        Dahlquist(nt=4, method="RK4")
    with pytest.raises(ValueError, match="nx"):
        Heat1D(nt=4, nx=2)
    with pytest.raises(ValueError, match="t_stop"):
        Dahlquist(nt=4, t_stop=-1.0)
    assert math.isclose(Dahlquist(nt=4, t_stop=2.0).dt(1), 0.5)
