"""train_mgrit: serial equivalence, determinism, divergence, checkpoint/resume, distributed."""

import pytest
import torch
from torch import nn

from torchpint.core import DivergenceError
from torchpint.testing import spawn_gloo
from torchpint.training import (
    TrainingProblem,
    digits_task,
    serial_train,
    train_mgrit,
    xor_task,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("solver", ["two-level", "V", "F"])
@pytest.mark.parametrize("data_rule", ["full", "serial"])
def test_xor_mgrit_equals_serial_training(solver, data_rule):
    t = xor_task(0)
    r = train_mgrit(t.model, t.loss_fn, t.data, 96, solver=solver, lr=1.0, lr_max=4.0,
                    data_rule=data_rule, tol=1e-12, max_iter=50)
    assert r.converged
    serial = serial_train(r.problem)
    diff = (r.weights - serial.final).abs().max().item()
    assert diff < 1e-10
    assert r.max_weight_diff_vs_serial == pytest.approx(diff, abs=1e-15)
    assert r.verification.max_weight_diff_curve < 1e-10
    v = r.verification
    assert v.points[0] == 0 and v.points[-1] == 96
    assert v.loss_mgrit == pytest.approx(v.loss_serial, abs=1e-9)
    # the returned model holds w_N
    got = torch.nn.utils.parameters_to_vector(r.model.parameters()).double()
    assert torch.allclose(got, r.weights.to(got.dtype), atol=1e-6)


def test_digits_minibatch_autograd_with_momentum_equals_serial():
    t = digits_task(0, hidden=8)
    r = train_mgrit(t.model, t.loss_fn, t.data, 40, solver="V", lr=0.05, lr_max=0.1,
                    data_rule="minibatch", batch_size=16, momentum=0.5, tol=1e-11,
                    max_iter=30, curve_samples=10)
    assert r.converged and r.settings["engine"] == "AutogradEngine"
    assert r.problem.initial_state().numel() == 2 * r.problem.n_weights  # + momentum buffer
    assert r.max_weight_diff_vs_serial < 1e-9


def test_problem_is_deterministic_and_pure():
    t = xor_task(3)
    p = TrainingProblem(t.model, t.loss_fn, t.data, 10, lr=1.0, data_rule="serial")
    u = p.initial_state().clone()
    a = p.step(u, 5, 1)
    assert torch.equal(u, p.initial_state())  # input untouched
    assert torch.equal(a, p.step(u.clone(), 5, 1))
    assert not torch.equal(a, p.step(u, 5, 0))  # level 1 has another learning rate
    assert not torch.equal(p.step(u, 4, 0), p.step(u, 5, 0))  # another example


def test_divergence_names_the_coarse_learning_rate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1))
    x = torch.randn(16, 3) * 3
    data = (x, x.sum(1, keepdim=True))
    # fine rate stable, coarse rates 100x larger: gradient descent on level >= 1 explodes
    with pytest.raises(DivergenceError, match="coarse-level learning rate is too large"):
        train_mgrit(model, nn.MSELoss(), data, 64, solver="V", lr=0.05,
                    lr_rule=lambda l: 0.05 if l == 0 else 5.0, max_iter=50)


def test_checkpoint_resume_gives_the_uninterrupted_result(tmp_path):
    t = xor_task(1)
    kw = dict(solver="F", lr=1.0, lr_max=4.0, data_rule="serial", tol=1e-12,
              verify_serial=False)
    full = train_mgrit(t.model, t.loss_fn, t.data, 64, max_iter=30, **kw)
    ck = tmp_path / "ck"
    part = train_mgrit(t.model, t.loss_fn, t.data, 64, max_iter=3, checkpoint=str(ck), **kw)
    assert part.iterations == 3 and not part.converged
    rest = train_mgrit(t.model, t.loss_fn, t.data, 64, max_iter=30, checkpoint=str(ck),
                       resume=True, **kw)
    assert rest.residuals[:3] == part.residuals  # finished iterations are kept
    assert rest.residuals == pytest.approx(full.residuals, rel=1e-9, abs=1e-15)
    assert torch.equal(rest.weights, full.weights)


def _distributed_xor(rank, world, solver):
    t = xor_task(2)
    r = train_mgrit(t.model, t.loss_fn, t.data, 50, solver=solver, lr=1.0, lr_max=4.0,
                    data_rule="serial", tol=1e-12, group="world", curve_samples=25)
    return r.weights, r.residuals, r.max_weight_diff_vs_serial, r.verification.loss_mgrit


@pytest.mark.parametrize("world", [1, 2, 3])
def test_distributed_equals_serial(world):
    solver = "F" if world != 2 else "two-level"
    t = xor_task(2)
    ref = train_mgrit(t.model, t.loss_fn, t.data, 50, solver=solver, lr=1.0, lr_max=4.0,
                      data_rule="serial", tol=1e-12, curve_samples=25)
    out = spawn_gloo(_distributed_xor, world, solver, timeout=60)
    for w, res, diff, loss in out:
        assert torch.equal(w, ref.weights)
        assert res == pytest.approx(ref.residuals, rel=1e-12, abs=1e-15)
        assert diff < 1e-10
        assert loss == pytest.approx(ref.verification.loss_mgrit, abs=1e-12)
