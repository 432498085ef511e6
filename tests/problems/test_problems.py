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


def test_fingerprints_name_every_parameter_and_no_device():
    import json

    d = Dahlquist(nt=8, lam=-2.0, method="CN").fingerprint()
    assert d == {"class": "torchpint.problems.dahlquist.Dahlquist", "nt": 8, "t_start": 0.0,
                 "t_stop": 5.0, "lam": -2.0, "method": "CN", "dtype": "torch.float64"}
    h = Heat1D(nt=8, nx=9, a=0.5).fingerprint()
    assert h["nx"] == 9 and h["a"] == 0.5 and "device" not in h
    a = AllenCahn(nt=8, nx=9, eps=0.02).fingerprint()
    assert a["eps"] == 0.02 and a["class"].endswith("AllenCahn")
    for fp in (d, h, a):
        assert json.loads(json.dumps(fp)) == fp  # JSON-able
    assert Heat1D(nt=8, nx=9, a=0.5).fingerprint() == h
    assert Heat1D(nt=8, nx=9, a=0.5, dtype=torch.float32).fingerprint() != h
    assert Dahlquist(nt=8, method="BE").fingerprint() != Dahlquist(nt=8, method="FE").fingerprint()


def test_times_must_be_finite():
    with pytest.raises(ValueError, match="finite"):
        Dahlquist(nt=4, t_stop=float("nan"))
    with pytest.raises(ValueError, match="finite"):
        Heat1D(nt=4, t_stop=float("inf"))
    with pytest.raises(ValueError, match="nt must be"):
        Dahlquist(nt=float("nan"))
