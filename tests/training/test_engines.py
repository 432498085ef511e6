"""The NumPy sigmoid-MLP engine against autograd, and the determinism checks."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn

from torchpint.training import HalfSSELoss, TrainingProblem
from torchpint.training.engines import AutogradEngine, SigmoidMLPEngine, sigmoid_mlp

pytestmark = pytest.mark.usefixtures("one_thread")


def _flat(model):
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().double()


@pytest.mark.parametrize(
    ("model", "loss"),
    [
        (sigmoid_mlp((3, 4, 1)), HalfSSELoss()),
        (sigmoid_mlp((5, 7, 6, 3), bias=True), nn.MSELoss(reduction="sum")),
        (sigmoid_mlp((4, 6, 2), bias=True, sigmoid_output=False), nn.MSELoss()),
        (sigmoid_mlp((8, 96, 5), bias=True), HalfSSELoss()),  # large: torch.sigmoid path
    ],
)
def test_fast_engine_matches_autograd(model, loss):
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p)
    n_in = model[0].in_features
    n_out = [m for m in model if isinstance(m, nn.Linear)][-1].out_features
    x, y = torch.rand(9, n_in, dtype=torch.float64), torch.rand(9, n_out, dtype=torch.float64)
    fast = SigmoidMLPEngine.from_model(model, loss)
    assert fast is not None
    slow = AutogradEngine(model, loss, torch.float64)
    w = _flat(model)
    l1, g1 = fast.loss_grad(w.numpy(), x.numpy(), y.numpy())
    l2, g2 = slow.loss_grad(w, x, y)
    assert l1 == pytest.approx(l2, rel=1e-12)
    np.testing.assert_allclose(g1, g2.numpy(), rtol=1e-10, atol=1e-13)
    assert fast.loss(w.numpy(), x.numpy(), y.numpy()) == pytest.approx(l2, rel=1e-12)


def test_fast_engine_reuses_its_workspace_safely():
    """Reused buffers must not leak between calls, batch sizes or threads."""
    torch.manual_seed(0)
    model = sigmoid_mlp((8, 96, 5), bias=True)
    eng = SigmoidMLPEngine.from_model(model, HalfSSELoss())
    w1 = _flat(model).numpy()
    w2 = w1 + 0.1
    rng = np.random.default_rng(0)
    (x, y), (x2, y2) = [(rng.random((b, 8)), rng.random((b, 5))) for b in (50, 61)]
    l1, g1 = eng.loss_grad(w1, x, y)
    ref = AutogradEngine(model, HalfSSELoss(), torch.float64).loss_grad(
        torch.from_numpy(w1), torch.from_numpy(x), torch.from_numpy(y))[1]
    np.testing.assert_allclose(g1, ref.numpy(), rtol=1e-10, atol=1e-13)
    kept = g1.copy()
    eng.loss_grad(w2, x, y)
    eng.loss_grad(w1, x2, y2)
    np.testing.assert_array_equal(g1, kept)  # returned gradients are not workspace views
    assert eng.loss_grad(w1, x, y)[0] == l1
    np.testing.assert_array_equal(eng.loss_grad(w1, x, y)[1], kept)
    assert eng.loss(w1, x, y) == l1
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda w: eng.loss_grad(w, x, y)[1], [w1, w2] * 20))
    for g in outs[::2]:
        np.testing.assert_array_equal(g, kept)


def test_fast_engine_refuses_other_models():
    relu = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    assert SigmoidMLPEngine.from_model(relu, HalfSSELoss()) is None
    assert SigmoidMLPEngine.from_model(sigmoid_mlp((2, 2)), nn.CrossEntropyLoss()) is None
    with pytest.raises(ValueError, match="fast=True"):
        TrainingProblem(nn.Sequential(nn.Linear(2, 1), nn.Tanh()), HalfSSELoss(),
                        (torch.zeros(3, 2), torch.zeros(3, 1)), 4, lr=0.1, fast=True)


def test_fast_and_autograd_problems_step_alike():
    model = sigmoid_mlp((3, 4, 1))
    data = (torch.rand(4, 3), torch.rand(4, 1))
    a = TrainingProblem(model, HalfSSELoss(), data, 8, lr=1.0, momentum=0.9, fast=True)
    b = TrainingProblem(model, HalfSSELoss(), data, 8, lr=1.0, momentum=0.9, fast=False)
    ua, ub = a.initial_state(), b.initial_state()
    for i in range(5):
        ua, ub = a.step(ua, i, 0), b.step(ub, i, 0)
    torch.testing.assert_close(ua, ub, rtol=1e-12, atol=1e-12)


def test_batchnorm_running_stats_refused_with_a_clear_message():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    data = (torch.rand(8, 3), torch.rand(8, 1))
    with pytest.raises(ValueError, match="running statistics"):
        TrainingProblem(model, nn.MSELoss(), data, 4, lr=0.1)
    model[1].track_running_stats = False  # batch statistics only: deterministic, allowed
    TrainingProblem(model, nn.MSELoss(), data, 4, lr=0.1)


def test_dropout_is_keyed_by_step_level_and_seed():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    data = (torch.rand(10, 5), torch.rand(10, 1))
    p = TrainingProblem(model, nn.MSELoss(), data, 4, lr=0.1, seed=3)
    u = p.initial_state()
    torch.manual_seed(123)  # global RNG state must not matter
    a = p.step(u, 2, 0)
    torch.manual_seed(456)
    b = p.step(u, 2, 0)
    assert torch.equal(a, b)
    assert not torch.equal(a, p.step(u, 3, 0))  # another step: another mask
    q = TrainingProblem(model, nn.MSELoss(), data, 4, lr=0.1, seed=4)
    assert not torch.equal(a, q.step(u, 2, 0))  # another seed: another mask
