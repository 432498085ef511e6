"""train_mgrit: serial equivalence, determinism, divergence, checkpoint/resume, distributed."""

import pytest
import torch
from torch import nn

from torchpint.core import CheckpointMismatchError, DivergenceError
from torchpint.testing import spawn_gloo
from torchpint.training import (
    HalfSSELoss,
    TrainingProblem,
    digits_task,
    serial_train,
    sigmoid_mlp,
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


def test_another_runs_checkpoint_is_refused(tmp_path):
    """Regression: resuming with another seed 'converged' at once to foreign weights."""
    t = xor_task(0)
    kw = dict(lr=1.0, lr_max=4.0, data_rule="minibatch", batch_size=2, tol=1e-12,
              verify_serial=False, checkpoint=str(tmp_path / "ck"))
    first = train_mgrit(t.model, t.loss_fn, t.data, 32, seed=0, **kw)
    assert first.converged
    with pytest.raises(CheckpointMismatchError, match="checkpoint does not match") as info:
        train_mgrit(t.model, t.loss_fn, t.data, 32, seed=5, resume=True, **kw)
    assert "problem.training.seed: checkpoint 0, this run 5" in str(info.value)
    # the same run resumes (nothing left to do), another tolerance and budget too
    again = train_mgrit(t.model, t.loss_fn, t.data, 32, seed=0, resume=True,
                        **{**kw, "tol": 1e-11, "max_iter": 60})
    assert again.residuals == first.residuals and torch.equal(again.weights, first.weights)
    other = xor_task(5)  # other initial weights: u_0 differs
    x, y = t.data
    for change, field in [
        (dict(seed=0, data_rule="serial"), "problem.training.data_rule"),
        (dict(seed=0, lr=0.5), "problem.training.lr"),
        (dict(seed=0, batch_size=3), "problem.training.batch_size"),
        (dict(seed=0, momentum=0.5), "problem.training.momentum"),
        (dict(seed=0, lr_rule="naive"), "problem.training.lr_rule"),
        (dict(seed=0, data=(x, 1 - y)), "problem.data.Y"),
        (dict(seed=0, model=other.model), "u0"),
        (dict(seed=0, model=sigmoid_mlp((3, 4, 1), bias=True)), "problem.model"),
    ]:
        args = {**kw, **change}
        model, data = args.pop("model", t.model), args.pop("data", t.data)
        with pytest.raises(CheckpointMismatchError, match=field):
            train_mgrit(model, t.loss_fn, data, 32, resume=True, **args)


def _frozen_xor():
    t = xor_task(0)
    t.model[0].weight.requires_grad_(False)  # the hidden layer stays as initialised
    return t


def test_frozen_parameters_stay_fixed_in_mgrit_and_in_serial_training():
    """Regression: frozen parameters moved, in MGRIT and in the serial check alike."""
    t = _frozen_xor()
    frozen = t.model[0].weight.detach().clone()
    r = train_mgrit(t.model, t.loss_fn, t.data, 32, lr=1.0, lr_max=4.0, tol=1e-12)
    assert r.converged and r.settings["engine"] == "AutogradEngine"
    assert r.problem.n_weights == t.model[2].weight.numel()  # trainable ones only
    assert torch.equal(r.model[0].weight, frozen)
    assert not r.model[0].weight.requires_grad
    assert r.max_weight_diff_vs_serial < 1e-10
    # the serial reference is plain gradient descent on the trainable layer only
    m, (x, y) = xor_task(0).model.double(), t.data
    m[0].weight.requires_grad_(False)
    for _ in range(32):
        m.zero_grad()
        t.loss_fn(m(x), y).backward()
        with torch.no_grad():
            m[2].weight -= 1.0 * m[2].weight.grad
    assert torch.equal(m[0].weight, frozen.double())
    assert torch.allclose(r.weights, m[2].weight.flatten(), rtol=0, atol=1e-10)


def test_frozen_values_are_part_of_the_fingerprint():
    a, b = _frozen_xor(), _frozen_xor()
    with torch.no_grad():
        b.model[0].weight[0, 0] += 1.0  # another constant, same trainable weights
    fa, fb = (TrainingProblem(t.model, t.loss_fn, t.data, 8, lr=1.0).fingerprint() for t in (a, b))
    assert fa["constants"] != fb["constants"]
    assert {k: v for k, v in fa.items() if k != "constants"} == {
        k: v for k, v in fb.items() if k != "constants"}


def test_frozen_parameters_and_the_fast_engine():
    t = _frozen_xor()
    with pytest.raises(ValueError, match=r"fast=True trains every parameter.*0\.weight"):
        TrainingProblem(t.model, t.loss_fn, t.data, 8, lr=1.0, fast=True)
    t.model[2].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="has no trainable parameters"):
        train_mgrit(t.model, t.loss_fn, t.data, 8, lr=1.0)
    with pytest.raises(ValueError, match="has no trainable parameters"):
        train_mgrit(nn.Sequential(nn.Sigmoid()), HalfSSELoss(), t.data, 8, lr=1.0)


@pytest.mark.parametrize("where, msg", [
    ("X", r"X \(the inputs\) has 2 NaN or inf entries of 12"),
    ("Y", r"Y \(the targets\) has 1 NaN or inf entries of 4"),
    ("w", r"initial weights are not finite: parameter '2.weight' has 1 NaN"),
])
def test_non_finite_data_or_weights_are_refused_first(where, msg):
    t = xor_task(0)
    x, y = (v.clone() for v in t.data)
    if where == "X":
        x[0, 0], x[2, 1] = float("nan"), float("inf")
    elif where == "Y":
        y[3, 0] = float("-inf")
    else:
        with torch.no_grad():
            t.model[2].weight[0, 1] = float("nan")
    with pytest.raises(ValueError, match=msg):
        train_mgrit(t.model, t.loss_fn, (x, y), 16, lr=1.0)


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
