"""Checkpoints know their run: fingerprints, safe loading, typed errors, re-slabbing."""

import shutil

import pytest
import torch

from torchpint.core import MGRIT, CheckpointError, CheckpointMismatchError, FunctionProblem
from torchpint.problems import AllenCahn, Dahlquist, Heat1D
from torchpint.runtime.checkpoint import fingerprint_diff, load_checkpoint, tensor_digest
from torchpint.testing import spawn_gloo


def test_a_foreign_problems_checkpoint_is_refused(tmp_path):
    """Regression: lam=-5 resumed from lam=-1's file 'converged' to a wrong answer."""
    ckpt = tmp_path / "d.pt"
    MGRIT(Dahlquist(nt=64, lam=-1.0), tol=1e-12).solve(checkpoint=ckpt)
    with pytest.raises(CheckpointMismatchError, match="checkpoint does not match") as info:
        MGRIT(Dahlquist(nt=64, lam=-5.0), tol=1e-12).solve(checkpoint=ckpt, resume=True)
    msg = str(info.value)
    assert "problem.lam: checkpoint -1.0, this run -5.0" in msg and str(ckpt) in msg
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("other, field", [
    (dict(problem=lambda: Heat1D(nt=32, nx=9, a=2.0)), "problem.a"),
    (dict(problem=lambda: Heat1D(nt=32, nx=9), u0=2.0), "u0"),
    (dict(problem=lambda: Heat1D(nt=32, nx=9), cycle="F"), "solver.cycle"),
    (dict(problem=lambda: Heat1D(nt=32, nx=9), relax="F"), "solver.relax"),
    (dict(problem=lambda: Heat1D(nt=32, nx=9), cfactor=4), "solver.m"),
    (dict(problem=lambda: AllenCahn(nt=32, nx=9)), "problem.class"),
])
def test_every_field_that_defines_the_solution_is_compared(tmp_path, other, field):
    ckpt = tmp_path / "h.pt"
    MGRIT(Heat1D(nt=32, nx=9), max_iter=2).solve(checkpoint=ckpt)
    other = dict(other)
    problem = other.pop("problem")()
    scale = other.pop("u0", None)
    solver = MGRIT(problem, **other)
    u0 = None if scale is None else problem.initial_state() * scale
    with pytest.raises(CheckpointMismatchError, match=f"{field}: checkpoint"):
        solver.solve(u0, checkpoint=ckpt, resume=True)


def test_tol_and_max_iter_may_change_on_resume(tmp_path):
    p = Heat1D(nt=32, nx=9)
    full = MGRIT(p, tol=1e-12).solve()
    ckpt = tmp_path / "h.pt"
    loose = MGRIT(p, tol=1e-6, max_iter=50).solve(checkpoint=ckpt)
    assert loose.converged and loose.iterations < full.iterations
    tight = MGRIT(p, tol=1e-12, max_iter=40).solve(checkpoint=ckpt, resume=True)
    assert tight.residuals == pytest.approx(full.residuals, rel=1e-12, abs=0)
    assert torch.equal(tight.u, full.u)


def test_resume_without_a_file_starts_afresh(tmp_path):
    p = Dahlquist(nt=32)
    fresh = MGRIT(p, tol=1e-12).solve()
    again = MGRIT(p, tol=1e-12).solve(checkpoint=tmp_path / "none.pt", resume=True)
    assert again.residuals == fresh.residuals and torch.equal(again.u, fresh.u)
    # a folder that does not exist yet: no checkpoint either; the first save creates it
    path = tmp_path / "new" / "run.pt"
    later = MGRIT(p, tol=1e-12).solve(checkpoint=path, resume=True)
    assert later.residuals == fresh.residuals and path.is_file()


class _Payload:
    pass


@pytest.mark.parametrize("kind, msg", [
    ("empty", "is empty"),
    ("garbage", "cannot be read"),
    ("truncated", "cannot be read"),
    ("code", "cannot be read"),  # weights_only: no arbitrary objects
    ("list", "holds a list"),
    ("fields", r"cannot be resumed \(KeyError"),
])
def test_unreadable_checkpoints_are_typed_errors_naming_the_file(tmp_path, kind, msg):
    ckpt = tmp_path / "bad.pt"
    MGRIT(Dahlquist(nt=32), max_iter=2).solve(checkpoint=ckpt)
    data = ckpt.read_bytes()
    if kind == "empty":
        ckpt.write_bytes(b"")
    elif kind == "garbage":
        ckpt.write_bytes(b"not a checkpoint at all")
    elif kind == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif kind == "code":
        torch.save({"u": torch.zeros(3), "payload": _Payload()}, ckpt)
    elif kind == "fields":
        state = load_checkpoint(ckpt)
        del state["iteration"]
        torch.save(state, ckpt)
    else:
        torch.save([1, 2], ckpt)
    with pytest.raises(CheckpointError, match=msg) as info:
        MGRIT(Dahlquist(nt=32)).solve(checkpoint=ckpt, resume=True)
    assert str(ckpt) in str(info.value) and "delete it" in str(info.value)
    assert not isinstance(info.value, CheckpointMismatchError)


def test_a_checkpoint_without_fingerprint_is_refused(tmp_path):
    ckpt = tmp_path / "old.pt"
    solver = MGRIT(Dahlquist(nt=32), max_iter=2)
    solver.solve(checkpoint=ckpt)
    state = load_checkpoint(ckpt)
    del state["fingerprint"]  # as the previous format wrote it
    torch.save(state, ckpt)
    with pytest.raises(CheckpointMismatchError, match="no fingerprint"):
        MGRIT(Dahlquist(nt=32)).solve(checkpoint=ckpt, resume=True)


def test_the_state_is_plain_and_loads_with_weights_only(tmp_path):
    ckpt = tmp_path / "s.pt"
    MGRIT(Heat1D(nt=16, nx=9), max_iter=2).solve(checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["iteration"] == 2 and state["world"] == 1
    fp = state["fingerprint"]
    assert fp["problem"]["class"] == "torchpint.problems.heat1d.Heat1D"
    assert fp["u0"] == tensor_digest(Heat1D(nt=16, nx=9).initial_state())
    assert set(fp["solver"]) == {"cycle", "relax", "cf_iter", "nested", "n", "m"}


def test_fingerprint_diff_names_nested_fields():
    a = {"problem": {"lam": -1.0, "nx": 5}, "u0": "sha256:" + "a" * 64}
    b = {"problem": {"lam": -1.0, "eps": 0.1}, "u0": "sha256:" + "b" * 64}
    lines = fingerprint_diff(a, b)
    assert lines == [
        "problem.eps: checkpoint (absent), this run 0.1",
        "problem.nx: checkpoint 5, this run (absent)",
        "u0: checkpoint sha256:aaaaaaaaaaaa..., this run sha256:bbbbbbbbbbbb...",
    ]
    assert fingerprint_diff(a, dict(a)) == []


def test_function_problem_fingerprint_names_its_callables(tmp_path):
    def fine(u, i):
        return 0.9 * u

    def coarse(u, i):
        return 0.9**2 * u

    u0 = torch.ones(1, dtype=torch.float64)
    fp = FunctionProblem(u0, [fine, coarse], nt=8).fingerprint()
    assert fp["steps"][0].endswith("fine") and fp["steps"][1].endswith("coarse")
    ckpt = tmp_path / "f.pt"
    MGRIT(FunctionProblem(u0, [fine, coarse], nt=8), max_iter=1).solve(checkpoint=ckpt)
    with pytest.raises(CheckpointMismatchError, match="problem.steps"):
        MGRIT(FunctionProblem(u0, [coarse, coarse], nt=8)).solve(checkpoint=ckpt, resume=True)


# -- re-slabbing: a checkpoint from P ranks resumes on any number of ranks -----------------
_SETTINGS = dict(cycle="F", tol=1e-12)


def _problem():
    return AllenCahn(nt=64, nx=17)  # nonlinear: FAS, ghost rows matter


def _reslab_worker(rank, world, from_one, to_two):
    # a 2-rank run with uneven slabs, stopped after 3 iterations ...
    part = MGRIT(_problem(), group="world", slabs=[20, 45], max_iter=3, **_SETTINGS)
    part.solve(checkpoint=to_two)
    # ... and a 1-rank checkpoint resumed on 2 ranks
    res = MGRIT(_problem(), group="world", max_iter=30, **_SETTINGS).solve(
        checkpoint=from_one, resume=True)
    return res.u, list(res.points), res.residuals


def test_a_checkpoint_resumes_on_another_number_of_ranks(tmp_path):
    full = MGRIT(_problem(), max_iter=30, **_SETTINGS).solve()
    from_one, to_two = tmp_path / "one.pt", tmp_path / "two.pt"
    part = MGRIT(_problem(), max_iter=3, **_SETTINGS).solve(checkpoint=from_one)
    assert part.iterations == 3 and not part.converged

    out = spawn_gloo(_reslab_worker, 2, from_one, to_two, timeout=60)
    # 1 -> 2 ranks
    assert torch.equal(torch.cat([u for u, _, _ in out]), full.u)
    assert [p for _, pts, _ in out for p in pts] == list(range(65))
    for _, _, residuals in out:
        assert residuals[:3] == part.residuals
        assert residuals == pytest.approx(full.residuals, rel=1e-12, abs=0)

    # 2 -> 1 rank
    assert sorted(f.name for f in tmp_path.iterdir() if f.name.startswith("two")) == [
        "two.pt.rank0", "two.pt.rank1"]
    rest = MGRIT(_problem(), max_iter=30, **_SETTINGS).solve(checkpoint=to_two, resume=True)
    assert rest.residuals[:3] == pytest.approx(part.residuals, rel=1e-12, abs=0)
    assert rest.residuals == pytest.approx(full.residuals, rel=1e-12, abs=0)
    assert torch.equal(rest.u, full.u)

    # a rank file missing: say which, never restart silently
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tmp_path / "two.pt.rank0", lone / "two.pt.rank0")
    with pytest.raises(CheckpointError, match=r"incomplete: it was written by 2 ranks.*"
                                              r"two\.pt\.rank1 is missing"):
        MGRIT(_problem(), **_SETTINGS).solve(checkpoint=lone / "two.pt", resume=True)
    # rank files of different iterations or layouts: refused, naming the cause
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tmp_path / "two.pt.rank0", mixed / "two.pt.rank0")
    state = load_checkpoint(tmp_path / "two.pt.rank1")
    state["iteration"] = 7
    torch.save(state, mixed / "two.pt.rank1")
    with pytest.raises(CheckpointError, match=r"from different iterations \(.*: 3, .*: 7\)"):
        MGRIT(_problem(), **_SETTINGS).solve(checkpoint=mixed / "two.pt", resume=True)
    shutil.copy(tmp_path / "one.pt.rank1", mixed / "two.pt.rank1")  # other slabs
    with pytest.raises(CheckpointError, match="does not continue the slabs"):
        MGRIT(_problem(), **_SETTINGS).solve(checkpoint=mixed / "two.pt", resume=True)
    # another run's rank files are refused like a single file
    with pytest.raises(CheckpointMismatchError, match="problem.nx"):
        MGRIT(AllenCahn(nt=64, nx=9), **_SETTINGS).solve(checkpoint=to_two, resume=True)
