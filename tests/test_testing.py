"""check_problem: every check of a user's problem at once (XBraid's braid_TestAll)."""

import pytest
import torch

from torchpint.core import FunctionProblem, Problem
from torchpint.problems import AllenCahn, Dahlquist, Heat1D
from torchpint.testing import CHECKS, ProblemCheckError, ProblemReport, check_problem


@pytest.mark.parametrize("make", [
    lambda: Dahlquist(nt=64),
    lambda: Dahlquist(nt=50, method="FE", t_stop=50.0),  # an unstable coarse step
    lambda: Heat1D(nt=64, nx=17),
    lambda: Heat1D(nt=30, nx=9, dtype=torch.float32),
    lambda: AllenCahn(nt=64, nx=17),
    lambda: FunctionProblem(torch.ones(2, dtype=torch.float64),
                            [lambda u, i: 0.9 * u + 0.01 * i, lambda u, i: 0.5 * u], nt=24),
])
def test_good_problems_pass_every_check(make):
    report = check_problem(make())
    assert isinstance(report, ProblemReport)
    assert report.passed == list(CHECKS) and not report.skipped
    assert f"{len(CHECKS)} checks passed" in str(report)


class _Bad(Problem):
    """0.5 u per step, broken in the ways ``kinds`` names."""

    def __init__(self, *kinds, nt=16):
        super().__init__(nt)
        self.kinds, self.calls = set(kinds), 0

    def initial_state(self):
        return torch.ones(3, dtype=torch.float64)

    def step(self, u, i, level):
        self.calls += 1
        if "inplace" in self.kinds:
            u.mul_(0.5)
        if "dtype" in self.kinds:
            return u.float()
        if "shape" in self.kinds and level == 1:
            return torch.ones(4, dtype=torch.float64)
        if "hidden" in self.kinds:  # depends on how many steps were taken before
            return 0.5 * u + 1e-3 * self.calls
        if "raises" in self.kinds and level == 1:
            raise RuntimeError("no coarse step")
        return 0.5 * u

    def fingerprint(self):
        fp = super().fingerprint()
        if "json" in self.kinds:
            fp["weights"] = torch.ones(2)
        if "nan" in self.kinds:
            fp["lam"] = float("nan")
        return fp


class _BadInto(_Bad):
    """A problem that writes its steps in place (``step_into``), wrongly."""

    def step_into(self, u, i, level, out):
        if "into" in self.kinds:  # writes something else than step
            out.copy_(0.4 * u)
        else:  # "into_inplace"
            out.copy_(u.mul_(0.5))


@pytest.mark.parametrize("kinds, failed, message", [
    (("inplace",), {"step_pure"}, r"level=0\) modified its input in place"),
    (("dtype",), {"step_dtype"}, r"returned shape \(3,\), dtype torch.float32"),
    (("shape",), {"step_shape"}, r"level=1\) returned shape \(4,\)"),
    (("json",), {"fingerprint"}, r"fingerprint\(\)\['weights'\] is a Tensor"),
    (("nan",), {"fingerprint"}, "is NaN, which never equals itself"),
    (("hidden",), {"one_level", "two_level"}, "not of hidden state or call order"),
    (("raises",), {"step_runs"}, r"step\(u, 0, level=1\) raised RuntimeError: no coarse step"),
    (("into",), {"step_into"}, r"step_into\(u, 0, level=0, out\) wrote something other"),
    (("into_inplace",), {"step_pure"}, r"step_into\(u, 0, level=0, out\) modified its input"),
])
def test_each_bad_problem_fails_its_check(kinds, failed, message):
    bad = (_BadInto if kinds[0].startswith("into") else _Bad)(*kinds)
    with pytest.raises(ProblemCheckError, match=message) as info:
        check_problem(bad)
    err = info.value
    assert set(err.failures) == failed and isinstance(err, ValueError)
    assert "initial_state" in err.report.passed
    assert not set(err.report.passed) & failed


def test_one_error_lists_every_failed_check():
    with pytest.raises(ProblemCheckError) as info:
        check_problem(_Bad("inplace", "json"))
    err = info.value
    assert set(err.failures) == {"step_pure", "fingerprint"}
    text = str(err)
    assert "fails 2 of the problem checks" in text
    assert "- step_pure:" in text and "- fingerprint:" in text
    # the solves are not tried with a broken step, and say why
    assert err.report.skipped == {"one_level": "the step breaks its contract (see step_*)",
                                  "two_level": "the step breaks its contract (see step_*)"}


def test_an_initial_state_that_is_no_tensor():
    p = FunctionProblem([1.0], [lambda u, i: u], nt=4)
    with pytest.raises(ProblemCheckError, match=r"initial_state: .* returned a list") as info:
        check_problem(p)
    assert set(info.value.report.skipped) == set(CHECKS) - {"initial_state"}


def test_two_level_is_skipped_when_asked_or_impossible():
    report = check_problem(Heat1D(nt=16, nx=9), two_level=False)
    assert report.skipped == {"two_level": "two_level=False"}
    report = check_problem(Dahlquist(nt=1))
    assert "no two-level grid" in report.skipped["two_level"]
    assert "one_level" in report.passed
