"""The checkpoint state of a rank's slab: written, loaded, refused, resumed."""

import json

import pytest
import torch

from torchpint.core import MGRIT, CheckpointError, CheckpointMismatchError
from torchpint.core.resume import Progress, SlabCheckpoint, solver_fingerprint
from torchpint.problems import Dahlquist, Heat1D
from torchpint.runtime.checkpoint import atomic_save, load_checkpoint
from torchpint.runtime.comm import make_comm


def test_the_solver_fingerprint_is_plain_json():
    p = Heat1D(nt=8, nx=9)
    fp = solver_fingerprint(p, p.initial_state(), {"relax": ("F", "FCF"), "n": [8, 4]})
    assert json.loads(json.dumps(fp)) == fp
    assert fp["problem"] == p.fingerprint() and fp["u0"].startswith("sha256:")
    assert fp["solver"]["relax"] == ["F", "FCF"]  # tuples become lists


def _slab(points=9):
    """One rank owning all ``points`` (its buffer has a ghost row first)."""
    fine = torch.zeros((points + 1, 3), dtype=torch.float64)
    return SlabCheckpoint(make_comm(None, 10.0), range(points), points - 1, fine)


def test_state_dict_round_trip():
    ck = _slab()
    ck.fine.copy_(torch.arange(30.0, dtype=torch.float64).reshape(10, 3))
    fp = {"problem": {"nt": 8}}
    state = ck.state_dict(fp, Progress(3, [1.0, 0.5, 0.1], [0.1] * 3, [10, 4]), [8, 4])
    assert state["iteration"] == 3 and state["slab"] == (0, 9) and state["world"] == 1
    other = _slab()
    progress = other.load_state_dict(state, fp)
    assert progress == Progress(3, [1.0, 0.5, 0.1], [0.1] * 3, [10, 4])
    assert torch.equal(other.fine, ck.fine)
    with pytest.raises(CheckpointMismatchError, match="problem.nt: checkpoint 8, this run 9"):
        other.load_state_dict(state, {"problem": {"nt": 9}})
    with pytest.raises(CheckpointError, match="layout.*re-slabs it"):
        _slab(5).load_state_dict(state, fp)


def test_resume_finds_nothing_or_the_single_file(tmp_path):
    ck = _slab()
    fp = {"a": 1}
    assert ck.resume(tmp_path / "none.pt", fp) is None
    assert ck.path(tmp_path / "c.pt") == tmp_path / "c.pt"  # one rank: the path itself
    ck.fine.fill_(2.0)
    atomic_save(ck.state_dict(fp, Progress(2, [1.0, 0.5], [0.0, 0.0], [3]), [8]),
                tmp_path / "c.pt")
    other = _slab()
    assert other.resume(tmp_path / "c.pt", fp).iteration == 2
    assert torch.equal(other.fine, ck.fine)


def test_a_wrong_iterate_shape_is_named(tmp_path):
    MGRIT(Dahlquist(nt=8), max_iter=2).solve(checkpoint=tmp_path / "d.pt")
    state = load_checkpoint(tmp_path / "d.pt")
    state["u"] = state["u"][:, :0]
    torch.save(state, tmp_path / "d.pt")
    shown = r"holds an iterate of \(\(10, 0\), torch.float64\), expected shape \(10, 1\)"
    with pytest.raises(CheckpointError, match=shown):
        MGRIT(Dahlquist(nt=8)).solve(checkpoint=tmp_path / "d.pt", resume=True)


def test_a_reslabbed_resume_restarts_the_step_counts(tmp_path):
    """One file resumed by the same layout keeps the step counts; MGRIT applies them."""
    ckpt = tmp_path / "h.pt"
    first = MGRIT(Heat1D(nt=16, nx=9), iterations=2).solve(checkpoint=ckpt)
    solver = MGRIT(Heat1D(nt=16, nx=9), iterations=2)
    solver.load_state_dict(load_checkpoint(ckpt), ckpt)
    assert solver.state_dict()["step_counts"] == first.step_counts
    assert solver.iteration == 2 and solver.residuals == first.residuals
