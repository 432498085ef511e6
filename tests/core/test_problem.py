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


class _InPlace(FunctionProblem):
    """A problem that writes its steps into the solver's buffers (``step_into``);
    ``wrong``: it writes something other than its step."""

    def __init__(self, wrong=False, nt=16):
        super().__init__(torch.linspace(1, 2, 5, dtype=torch.float64),
                         [lambda u, i: 0.9 * u + 0.01 * i, lambda u, i: 0.8 * u], nt)
        self.wrong, self.writes = wrong, 0

    def step_into(self, u, i, level, out):
        self.writes += 1
        torch.mul(u, 0.7 if self.wrong else (0.9 if level == 0 else 0.8), out=out)
        if level == 0 and not self.wrong:
            out.add_(0.01 * i)


@pytest.mark.parametrize("levels, relax", [(1, "F"), (2, "FCF"), (3, "F")])
def test_a_problem_writing_its_steps_in_place_solves_bit_for_bit_alike(levels, relax):
    kw = {"levels": levels, "cfactor": 2, "relax": relax, "iterations": 3}
    into = _InPlace()
    plain = FunctionProblem(into.initial_state(), into._steps, 16)  # the same, no step_into
    a, b = MGRIT(plain, **kw).solve(), MGRIT(into, **kw).solve()
    assert torch.equal(a.u, b.u) and a.residuals == b.residuals
    assert into.writes > 0  # the solver used step_into


def test_a_wrong_step_into_is_refused_at_the_first_solve():
    with pytest.raises(ValueError, match=r"step_into\(u, 0, level=0, out\) wrote something"):
        MGRIT(_InPlace(wrong=True), levels=2, cfactor=2).solve()
