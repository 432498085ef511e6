import math

import pytest
import torch

from torchpint.core import (
    MGRIT,
    DivergenceError,
    FunctionProblem,
    Parareal,
    Problem,
    serial_solve,
)
from torchpint.problems import AllenCahn, Dahlquist, Heat1D


def _close(a, b, tol=1e-9):
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("make", [
    lambda: Dahlquist(nt=128),
    lambda: Heat1D(nt=128, nx=17),
    lambda: AllenCahn(nt=128, nx=17),  # nonlinear: the FAS path
])
@pytest.mark.parametrize("kw", [
    dict(cycle="V", relax="F"),
    dict(cycle="V", relax="FCF"),
    dict(cycle="F", relax="FCF", cf_iter=2),
    dict(cycle="F", relax="F", nested=True),
    dict(levels=2, cfactor=8, relax="FCF"),
    dict(cfactor=[4, 2], levels=3),
    dict(cfactor=3),  # 128 is not a multiple of 3: trailing F-points
])
def test_converges_to_serial_time_stepping(make, kw):
    p = make()
    res = MGRIT(p, tol=1e-11, max_iter=60, **kw).solve()
    assert res.converged and res.residuals[-1] <= 1e-11
    assert res.iterations < 30
    assert _close(res.u, serial_solve(p))
    assert torch.equal(res.final, res.u[-1])


@pytest.mark.parametrize("kw", [dict(cycle="V", relax="FCF"), dict(cycle="F"), dict(levels=2)])
def test_serial_solution_is_a_fixed_point(kw):
    p = Heat1D(nt=64, nx=17)
    exact = serial_solve(p)
    res = MGRIT(p, max_iter=2, tol=1e-300, **kw).solve(initial=exact)
    assert res.residuals[0] <= 1e-15 * float(exact.norm())
    assert _close(res.u, exact, 1e-14)


def test_zero_initial_guess_residual_is_positive():
    res = MGRIT(Heat1D(nt=64, nx=17), max_iter=1).solve()
    assert res.residuals[0] > 1e-3


def _poor_coarse_problem(nt):
    """A forced linear ODE whose coarse propagator is poor: only finite termination helps."""
    u0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    rot = torch.tensor([[0.98, 0.2], [-0.2, 0.98]], dtype=torch.float64)
    fine = lambda u, i: rot @ u + 0.05 * torch.tensor([1.0, float(i % 3)], dtype=torch.float64)  # noqa: E731
    coarse = lambda u, i: 0.5 * u  # noqa: E731
    return FunctionProblem(u0, [fine, coarse], nt)


@pytest.mark.parametrize("relax, bound", [
    ("F", lambda n, m: n // m), ("FCF", lambda n, m: -(-n // (2 * m))),
])
@pytest.mark.parametrize("m", [2, 4])
def test_two_level_finite_termination(relax, bound, m):
    p = _poor_coarse_problem(48)
    n, exact = p.nt, serial_solve(p)
    k = bound(n, m)
    res = MGRIT(p, levels=2, cfactor=m, relax=relax, tol=1e-300, max_iter=k).solve()
    assert res.iterations <= k  # an exactly zero residual may stop it one iteration early
    assert _close(res.u, exact, 1e-13)
    early = MGRIT(p, levels=2, cfactor=m, relax=relax, tol=1e-300, max_iter=k - 2).solve()
    assert not _close(early.u, exact, 1e-8)  # not exact before the bound: the test can fail


@pytest.mark.parametrize("lam", [-1.0, -10.0, -100.0])
@pytest.mark.parametrize("m", [2, 4, 8])
@pytest.mark.parametrize("relax", ["F", "FCF"])
def test_dobrev_two_level_bound(lam, m, relax):
    """Measured convergence factors sit just below max|lam^m - mu| / (1 - |mu|) (x |lam|^m)."""
    p = Dahlquist(nt=1024, t_stop=10.0, lam=lam)
    dt = p.dt(0)
    a, mu = p.amplification(dt), p.amplification(m * dt)
    bound = abs(a**m - mu) / (1 - abs(mu)) * (abs(a) ** m if relax == "FCF" else 1.0)
    res = MGRIT(p, levels=2, cfactor=m, relax=relax, tol=1e-300, max_iter=4).solve()
    r = res.residuals
    factors = [r[k] / r[k - 1] for k in range(1, len(r)) if r[k] > 1e-12]
    assert factors
    for f in factors:
        assert 0.5 * bound <= f <= 1.15 * bound


def _classic_parareal(u0, fine, coarse, chunks, iters):
    """U^{k+1}_{j+1} = G(U^{k+1}_j) + F(U^k_j) - G(U^k_j), from U^0 = (u0, 0, ...)."""
    U = [u0] + [torch.zeros_like(u0)] * chunks
    for _ in range(iters):
        F = [fine(U[j], j) for j in range(chunks)]
        G = [coarse(U[j], j) for j in range(chunks)]
        new = [u0]
        for j in range(chunks):
            new.append(coarse(new[j], j) + F[j] - G[j])
        U = new
    return torch.stack(U)


def test_parareal_is_classic_parareal():
    p = Heat1D(nt=40, nx=9)
    chunks, m = 5, 8

    def fine(u, j):
        for i in range(m):
            u = p.step(u, j * m + i, 0)
        return u

    for k in (1, 2, 3):
        solver = Parareal(p, chunks, tol=1e-300, max_iter=k)
        res = solver.solve()
        coarse = lambda u, j: p.step(u, j, 1)  # noqa: E731 (bound after the grid exists)
        ref = _classic_parareal(p.initial_state(), fine, coarse, chunks, k)
        assert _close(res.u[::m], ref, 1e-12)
    assert _close(Parareal(p, chunks, tol=1e-12).solve().u, serial_solve(p))


def test_function_problem_with_parareal():
    u0 = torch.tensor([1.0], dtype=torch.float64)
    p = FunctionProblem(u0, [lambda u, i: 0.99 * u, lambda u, i: 0.99**4 * u + 1e-3], nt=32)
    res = Parareal(p, chunks=8, tol=1e-12).solve()
    assert res.converged and _close(res.u, serial_solve(p))


@pytest.mark.parametrize("kwargs, err, msg", [
    (dict(cfactor=1), ValueError, "cfactor"),
    (dict(tol=0.0), ValueError, "tol"),
    (dict(tol=float("nan")), ValueError, "tol"),
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(cycle="W"), ValueError, "cycle"),
    (dict(relax="C"), ValueError, "relax"),
    (dict(cf_iter=0), ValueError, "cf_iter"),
    (dict(levels=9), ValueError, "cannot make 9 levels"),
    (dict(cfactor=2.5), ValueError, "cfactor must be an integer >= 2"),
    (dict(cfactor="2"), ValueError, "cfactor must be an integer >= 2"),
    (dict(cfactor=[2, 1.5]), ValueError, "cfactor must be an integer >= 2"),
    (dict(levels=2.5), ValueError, "levels must be an integer >= 1"),
    (dict(min_coarse=2.5), ValueError, "min_coarse must be an integer >= 2"),
    (dict(min_coarse=0), ValueError, "min_coarse must be an integer >= 2"),
    (dict(max_coarse=0), ValueError, "max_coarse must be an integer >= 1"),
    (dict(max_coarse=1.5), ValueError, "max_coarse must be an integer >= 1"),
    (dict(cf_iter=float("nan")), ValueError, "cf_iter"),
    (dict(max_iter=float("inf")), ValueError, "max_iter"),
])
def test_bad_settings(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        MGRIT(Dahlquist(nt=16), **kwargs)


class _Bad(Problem):
    def __init__(self, kind):
        super().__init__(16)
        self.kind = kind

    def initial_state(self):
        return torch.ones(3, dtype=torch.float64)

    def step(self, u, i, level):
        if self.kind == "shape" and level == 1:
            return torch.ones(4, dtype=torch.float64)
        if self.kind == "dtype":
            return u.float()
        if self.kind == "inplace":
            return u.mul_(0.5)
        if self.kind == "nan" and level == 2 and i == 1:
            return u * float("nan")
        if self.kind == "later" and level == 0 and i == 5:
            return torch.ones(4, dtype=torch.float64)
        if self.kind == "later-dtype" and level == 1 and i == 3:
            return u.float()
        return 0.5 * u


@pytest.mark.parametrize("kind, msg", [
    ("shape", r"level=1\) returned shape \(4,\)"),
    ("dtype", "dtype torch.float32"),
    ("inplace", "in place"),
])
def test_step_contract_is_checked_at_the_first_solve(kind, msg):
    solver = MGRIT(_Bad(kind))  # the constructor runs none of the user's steps
    with pytest.raises(ValueError, match=msg):
        solver.solve()


@pytest.mark.parametrize("kind, msg", [
    ("later", r"step 5 of level 0\) returned shape \(4,\), dtype torch.float64.*"
              r"state is shape \(3,\)"),
    ("later-dtype", r"step 3 of level 1\) returned shape \(3,\), dtype torch.float32"),
])
def test_a_step_that_changes_shape_later_is_named(kind, msg):
    """Only index 0 is checked at the first solve; a later step's wrong shape or dtype is a
    ValueError naming the level, the index and the shapes, not a broadcasting error."""
    solver = MGRIT(_Bad(kind))
    with pytest.raises(ValueError, match=msg):
        solver.solve()
    if kind == "later":
        with pytest.raises(ValueError, match=msg):
            serial_solve(_Bad(kind))


def test_nan_stops_with_iteration_and_level():
    with pytest.raises(DivergenceError, match=r"iteration 1.*non-finite .* first on level 2"):
        MGRIT(_Bad("nan"), max_iter=10).solve()


def test_exploding_state_stops_at_once_with_hint():
    # forward Euler with lambda dt = -0.6: stable on the fine grid, unstable from level 2 on
    p = Dahlquist(nt=512, t_stop=512 * 0.6, method="FE")
    p.divergence_hint = "the coarse propagator is unstable"
    with pytest.raises(DivergenceError, match=r"iteration 1: the state .* level [2-9] .*unstable"):
        MGRIT(p, tol=1e-300, max_iter=100).solve()


def test_growing_residual_stops_early():
    # states stay bounded (|u| < 3 x 10) but the residual jumps up: a noisy coarse level
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(400, dtype=torch.float64, generator=g)
    fine = lambda u, i: 0.9 * u  # noqa: E731
    coarse = lambda u, i: torch.tanh(5 * u) + noise[i]  # noqa: E731
    p = FunctionProblem(torch.tensor([10.0], dtype=torch.float64), [fine, coarse], nt=400)
    with pytest.raises(DivergenceError, match=r"iteration \d: the residual grew from"):
        MGRIT(p, levels=2, tol=1e-300, max_iter=100, divergence_factor=3).solve()


def test_checkpoint_and_resume_lose_no_iteration(tmp_path):
    p = AllenCahn(nt=64, nx=17)
    full = MGRIT(p, cycle="F", tol=1e-12, max_iter=30).solve()
    ckpt = tmp_path / "mgrit.pt"
    part = MGRIT(p, cycle="F", tol=1e-12, max_iter=3).solve(checkpoint=ckpt)
    assert part.iterations == 3 and ckpt.exists()
    rest = MGRIT(p, cycle="F", tol=1e-12, max_iter=30).solve(checkpoint=ckpt, resume=True)
    assert rest.residuals[:3] == part.residuals
    assert rest.residuals == pytest.approx(full.residuals, rel=1e-12, abs=0)
    assert torch.equal(rest.u, full.u)
    with pytest.raises(ValueError, match="checkpoint does not match"):
        MGRIT(AllenCahn(nt=32, nx=17)).solve(checkpoint=ckpt, resume=True)


def test_result_reports_history_and_timings():
    res = MGRIT(Heat1D(nt=64, nx=17), tol=1e-8).solve()
    assert len(res.conv_factors) == res.iterations - 1
    assert all(0 < f < 1 for f in res.conv_factors)
    assert len(res.timings["iterations"]) == res.iterations
    assert res.step_counts[0] > 0 and len(res.step_counts) == res.grid.num_levels
    d = res.to_dict()
    assert d["iterations"] == res.iterations and d["residuals"] == res.residuals


def test_solver_is_reusable_with_a_new_initial_state():
    """One solver, several solves: each is a fresh solve on the same buffers, equal bit for
    bit to a new solver's, and a new u0 gives the solve of the problem started there."""
    solver = MGRIT(Dahlquist(nt=64, u0=1.0), cycle="F", tol=1e-12)
    first = solver.solve()
    again = solver.solve()
    assert again.residuals == first.residuals and torch.equal(again.u, first.u)
    assert solver.residuals == first.residuals
    assert len(solver.iteration_times) == first.iterations
    other = solver.solve(torch.tensor([2.0], dtype=torch.float64))
    fresh = MGRIT(Dahlquist(nt=64, u0=2.0), cycle="F", tol=1e-12).solve()
    assert other.residuals == fresh.residuals and torch.equal(other.u, fresh.u)
    assert not torch.equal(other.u, first.u)
    with pytest.raises(ValueError, match="shape"):
        solver.solve(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype"):
        solver.solve(torch.ones(1, dtype=torch.float32))


def test_warm_start_restarts_from_the_previous_solution():
    p = Heat1D(nt=64, nx=17)
    solver = MGRIT(p, tol=1e-10)
    cold = solver.solve()
    warm = solver.solve(warm_start=True)  # already converged: one iteration confirms it
    assert warm.iterations == 1 and warm.converged
    assert _close(warm.u, cold.u, 1e-10)
    nearby = p.initial_state() * 1.001
    cold_nearby = MGRIT(p, tol=1e-10).solve(nearby)
    warm_nearby = solver.solve(nearby, warm_start=True)
    assert warm_nearby.converged and warm_nearby.iterations < cold_nearby.iterations
    assert _close(warm_nearby.u, cold_nearby.u, 1e-9)
    with pytest.raises(ValueError, match="not both"):
        solver.solve(initial=cold.u, warm_start=True)


class _Counting(Problem):
    """0.5 u per step, counting the steps taken."""

    def __init__(self, nt=16):
        super().__init__(nt)
        self.calls = 0

    def initial_state(self):
        return torch.ones(2, dtype=torch.float64)

    def step(self, u, i, level):
        self.calls += 1
        return 0.5 * u


def test_the_constructor_runs_no_step_and_the_first_solve_checks_once():
    p = _Counting()
    solver = MGRIT(p, max_iter=1)
    assert p.calls == 0
    solver.solve()
    first = p.calls
    solver.solve()
    assert p.calls - first == first - solver.grid.num_levels  # the check ran only once


def test_a_failed_step_check_is_repeated_by_the_next_solve():
    p = _Bad("inplace")
    solver = MGRIT(p)
    for _ in range(2):
        with pytest.raises(ValueError, match="modified its input in place"):
            solver.solve()


# -- a fixed number of iterations ---------------------------------------------------------
def _noisy_coarse_problem():
    """Bounded states (|u| < 3 x 10), a residual that jumps up: see the growth test."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(400, dtype=torch.float64, generator=g)
    fine = lambda u, i: 0.9 * u  # noqa: E731
    coarse = lambda u, i: torch.tanh(5 * u) + noise[i]  # noqa: E731
    return FunctionProblem(torch.tensor([10.0], dtype=torch.float64), [fine, coarse], nt=400)


@pytest.mark.parametrize("kw", [dict(cycle="V", relax="F"), dict(cycle="F"),
                                dict(relax=("F", "FCF"), levels=3)])
def test_fixed_iterations_equal_the_tiny_tolerance_they_replace(kw):
    """``iterations=k`` is what ``tol=1e-300, max_iter=k`` did, bit for bit."""
    p = AllenCahn(nt=64, nx=17)
    old = MGRIT(p, tol=1e-300, max_iter=3, divergence_factor=math.inf, **kw).solve()
    new = MGRIT(p, iterations=3, divergence_factor=math.inf, **kw).solve()
    assert new.residuals == old.residuals and torch.equal(new.u, old.u)
    assert new.step_counts == old.step_counts
    assert new.iterations == 3 and new.fixed_iterations == 3 and new.converged is None
    assert old.fixed_iterations is None and old.converged is False
    d = new.to_dict()
    assert d["fixed_iterations"] == 3 and d["converged"] is None


def test_fixed_iterations_run_past_a_zero_residual():
    """No convergence test: an exactly zero residual does not stop the solve."""
    p = FunctionProblem(torch.ones(2, dtype=torch.float64), [lambda u, i: 0 * u], nt=32)
    assert MGRIT(p, tol=1e-300, max_iter=4).solve().iterations == 1
    res = MGRIT(p, iterations=4).solve()
    assert res.iterations == 4 and res.residuals == [0.0] * 4
    assert torch.equal(res.u, serial_solve(p))


def test_fixed_iterations_skip_the_growth_test_but_not_nan():
    p = _noisy_coarse_problem()
    with pytest.raises(DivergenceError, match="residual grew"):
        MGRIT(p, levels=2, tol=1e-300, max_iter=8, divergence_factor=3).solve()
    res = MGRIT(p, levels=2, iterations=8, divergence_factor=3).solve()
    assert res.iterations == 8 and max(res.residuals) > 3 * min(res.residuals)
    with pytest.raises(DivergenceError, match=r"iteration 1.*non-finite .* first on level 2"):
        MGRIT(_Bad("nan"), iterations=10).solve()
    with pytest.raises(DivergenceError, match="non-finite"):
        MGRIT(_Bad("nan"), iterations=10, divergence_factor=math.inf).solve()


@pytest.mark.parametrize("kw, named", [
    (dict(tol=1e-6), "tol=1e-06 was given"),
    (dict(max_iter=5), "max_iter=5 was given"),
    (dict(tol=1e-6, max_iter=5), "tol=1e-06 and max_iter=5 were given"),
])
def test_fixed_iterations_exclude_tol_and_max_iter(kw, named):
    with pytest.raises(ValueError, match=rf"iterations=3 .*{named}.*tol and max_iter"):
        MGRIT(Dahlquist(nt=16), iterations=3, **kw)
    with pytest.raises(ValueError, match="iterations=3"):
        Parareal(Dahlquist(nt=16), 4, iterations=3, **kw)


@pytest.mark.parametrize("k", [0, 2.5, float("nan"), -1])
def test_fixed_iterations_must_be_a_positive_integer(k):
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        MGRIT(Dahlquist(nt=16), iterations=k)


def test_parareal_with_fixed_iterations_is_classic_parareal():
    p = Heat1D(nt=40, nx=9)
    chunks, m = 5, 8

    def fine(u, j):
        for i in range(m):
            u = p.step(u, j * m + i, 0)
        return u

    res = Parareal(p, chunks, iterations=2).solve()
    ref = _classic_parareal(p.initial_state(), fine, lambda u, j: p.step(u, j, 1), chunks, 2)
    assert res.iterations == 2 and res.converged is None and _close(res.u[::m], ref, 1e-12)


def test_fixed_iterations_checkpoint_at_the_end_and_resume_to_a_larger_count(tmp_path):
    p = AllenCahn(nt=64, nx=17)
    full = MGRIT(p, iterations=5).solve()
    ckpt = tmp_path / "fixed.pt"
    part = MGRIT(p, iterations=3).solve(checkpoint=ckpt, checkpoint_every=2)
    assert torch.load(ckpt, weights_only=True)["iteration"] == 3  # the last one is saved
    rest = MGRIT(p, iterations=5).solve(checkpoint=ckpt, resume=True)
    assert rest.residuals[:3] == part.residuals and rest.iterations == 5
    assert rest.residuals == full.residuals and torch.equal(rest.u, full.u)
    again = MGRIT(p, iterations=5).solve(checkpoint=ckpt, resume=True)
    assert again.iterations == 5 and torch.equal(again.u, full.u)  # nothing left to do


# -- XBraid's skip and the final sweep ------------------------------------------------------
SKIP_KW = dict(levels=3, cfactor=4, relax=("F", "FCF"))


def test_skip_does_no_work_on_the_first_way_down():
    """One skipped iteration at N = 32, m = 4: the coarsest solve (2), level 1's F-relaxation
    after its correction (6), the fine F-relaxation (24) and the residual (8): the adjoint's
    minimum in the design notes, where the unskipped iteration also relaxes on the way down."""
    p = AllenCahn(nt=32, nx=9)
    skipped = MGRIT(p, iterations=1, skip=True, **SKIP_KW).solve()
    assert skipped.step_counts == [32, 6, 2]
    plain = MGRIT(p, iterations=1, **SKIP_KW).solve()
    assert plain.step_counts[0] > 32 and plain.step_counts[1] > 6


@pytest.mark.parametrize("kw", [dict(cycle="V"), dict(cycle="F"),
                                dict(levels=2, cfactor=8, relax="F")])
def test_skip_converges_to_serial_time_stepping(kw):
    p = AllenCahn(nt=64, nx=17)
    res = MGRIT(p, skip=True, **{**SKIP_KW, **kw}).solve()
    assert res.converged and _close(res.u, serial_solve(p))


def test_skip_discards_a_warm_start():
    """The first iteration's coarse solve replaces the fine C-values, and the F-relaxation
    from them the rest: whatever the fine iterate held, the solve is the same."""
    p = AllenCahn(nt=32, nx=9)
    solver = MGRIT(p, iterations=2, skip=True, **SKIP_KW)
    cold = solver.solve()
    solver.fine.normal_()
    warm = solver.solve(warm_start=True)
    assert torch.equal(warm.u, cold.u) and warm.residuals == cold.residuals


def test_skip_is_in_the_fingerprint_only_when_on():
    p = Dahlquist(nt=16)
    assert "skip" not in MGRIT(p, levels=2).fingerprint()["solver"]
    assert MGRIT(p, levels=2, skip=True).fingerprint()["solver"]["skip"] is True


class _Recording(Dahlquist):
    """Dahlquist whose final-sweep steps are logged, with the step index."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.final: list[int] = []

    def final_step(self, u, i):
        self.final.append(i)
        return super().final_step(u, i)


@pytest.mark.parametrize("kw", [SKIP_KW, dict(levels=2, cfactor=4, relax="FCF"),
                                dict(levels=1), dict(cycle="F", levels=3, cfactor=2)])
def test_the_final_sweep_takes_every_fine_step_once_in_the_last_iteration(kw):
    p = _Recording(nt=32)
    res = MGRIT(p, iterations=3, **kw).solve()
    assert sorted(p.final) == list(range(32))
    ref = MGRIT(Dahlquist(nt=32), iterations=3, **kw).solve()  # the base final_step: step
    assert torch.equal(res.u, ref.u) and res.residuals == ref.residuals
    p.final.clear()
    MGRIT(p, **kw).solve()  # to a tolerance: no iteration is known to be the last
    assert p.final == []


def test_with_no_size_limit_a_non_finite_value_is_still_found_and_named():
    """``divergence_factor=inf`` scans only what no residual sees; a NaN anywhere else
    reaches the residual within the iteration."""
    with pytest.raises(DivergenceError, match=r"iteration 1.*non-finite values appear first"):
        MGRIT(_Bad("nan"), iterations=10, divergence_factor=math.inf).solve()
    # the last point is an F-point (18 = 4 * 4 + 2): no residual follows it
    p = FunctionProblem(torch.ones(2, dtype=torch.float64),
                        [lambda u, i: u * float("nan") if i == 17 else 0.5 * u], nt=18)
    with pytest.raises(DivergenceError, match="non-finite"):
        MGRIT(p, cfactor=4, levels=2, iterations=3, divergence_factor=math.inf).solve()


@pytest.mark.parametrize("kw", [
    {"levels": 1},
    {"levels": 2, "cfactor": 4, "relax": "F"},
    {"levels": 3, "cfactor": 4, "relax": "FCF", "cycle": "F"},
    {"levels": 3, "cfactor": 2, "relax": "F", "nested": True},
    {"levels": 3, "cfactor": 4, "relax": "F", "skip": True},
])
def test_a_kept_solver_solves_another_initial_state_as_a_new_one_does(kw):
    """A solve reads nothing its predecessor left: stale coarse values, right-hand sides
    or fine F-values (the reset zeroes only the fine C-values) change no bit."""
    p = Heat1D(nt=32, nx=9)
    u1 = p.initial_state().clone()
    u2 = torch.linspace(0, 1, u1.numel(), dtype=u1.dtype).reshape(u1.shape)
    kept = MGRIT(p, iterations=3, **kw)
    kept.solve(u1)
    again = kept.solve(u2)
    new = MGRIT(p, iterations=3, **kw).solve(u2)
    assert torch.equal(again.u, new.u) and again.residuals == new.residuals


def test_a_fixed_unwatched_solve_agrees_on_its_residuals_at_its_end():
    """With no size limit, callback, bar or checkpoint, a fixed solve gathers its
    residuals once at its end: the iterates and residuals equal those of the same solve
    checked every iteration (a callback makes it so) bit for bit."""
    p = Heat1D(nt=64, nx=9)
    kw = {"levels": 3, "cfactor": 4, "iterations": 4, "divergence_factor": math.inf}
    seen = []
    per_iteration = MGRIT(p, callback=lambda k, r: seen.append(r), **kw).solve()
    solver = MGRIT(p, **kw)
    at_end = solver.solve()
    assert torch.equal(at_end.u, per_iteration.u)
    assert at_end.residuals == per_iteration.residuals == seen
    assert len(solver.iteration_times) == 4


def test_a_fixed_unwatched_solve_names_the_iteration_that_diverged():
    kw = {"iterations": 3, "divergence_factor": math.inf}
    with pytest.raises(DivergenceError) as at_end:
        MGRIT(_Bad("nan"), **kw).solve()
    with pytest.raises(DivergenceError) as per_iteration:
        MGRIT(_Bad("nan"), callback=lambda k, r: None, **kw).solve()
    assert "MGRIT diverged at iteration 1" in str(at_end.value)
    assert "non-finite values appear first on level" in str(at_end.value)
    assert str(at_end.value).split(":")[0] == str(per_iteration.value).split(":")[0]
