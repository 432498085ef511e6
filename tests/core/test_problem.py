"""The step contract: one check shared by the solvers, serial_solve and check_problem."""

import pytest
import torch

from torchpint.core import MGRIT, FunctionProblem, serial_solve
from torchpint.core.problem import STEP_RULES, checked_step, step_faults


def _problem(step, nt=8):
    return FunctionProblem(torch.ones(3, dtype=torch.float64), [step], nt)


def test_serial_solve_refuses_an_in_place_step_as_mgrit_does():
    p = _problem(lambda u, i: u.mul_(0.5))
    with pytest.raises(ValueError) as serial:
        serial_solve(p)
    with pytest.raises(ValueError) as solver:
        MGRIT(p).solve()
    assert "modified its input in place; return a new tensor" in str(serial.value)
    assert str(serial.value) == str(solver.value)


def test_serial_solve_of_a_pure_step_is_unchanged():
    p = _problem(lambda u, i: 0.5 * u + i)
    u = serial_solve(p)
    ref = [torch.ones(3, dtype=torch.float64)]
    for i in range(8):
        ref.append(0.5 * ref[-1] + i)
    assert torch.equal(u, torch.stack(ref))


def test_checked_step_returns_the_step_and_leaves_the_input():
    p = _problem(lambda u, i: 2 * u)
    u = torch.arange(3.0, dtype=torch.float64)
    out = checked_step(p, u, 0, 0)
    assert torch.equal(out, 2 * torch.arange(3.0, dtype=torch.float64))
    assert torch.equal(u, torch.arange(3.0, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"problem.step\(u, 2, level=0\) returned list"):
        checked_step(_problem(lambda u, i: [u]), u, 2, 0)
    with pytest.raises(ValueError, match="returned shape \\(4,\\)"):
        checked_step(_problem(lambda u, i: torch.ones(4, dtype=torch.float64)), u, 0, 0)


def test_step_faults_name_every_broken_rule():
    u = torch.ones(3, dtype=torch.float64)
    _, faults = step_faults(_problem(lambda u, i: u.mul_(2).float()), u, 0, 0)
    assert set(faults) == {"dtype", "pure"} and set(faults) <= set(STEP_RULES)
    assert torch.equal(u, torch.ones(3, dtype=torch.float64))  # it stepped a copy
    _, faults = step_faults(_problem(lambda u, i: None), u, 0, 0)
    assert set(faults) == {"tensor"}
    _, faults = step_faults(_problem(lambda u, i: u + 1), u, 0, 0)
    assert faults == {}
