"""Layer-parallel's training step on the virtual clock: the same work as the real module,
whatever the ranks, and the hierarchy chooser."""

import pytest
import torch
from torch import nn

from torchpint.core.costmodel import Hierarchy, candidate_hierarchies
from torchpint.layerparallel import LayerParallel, choose_layer_parallel, layer_parallel_time


class _Counted(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        _Layer.calls["backward"] += 1
        return g * w, (g * x).sum().reshape(w.shape)


class _Layer(nn.Module):
    calls = {"forward_no_grad": 0, "forward_grad": 0, "backward": 0}

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.full((1,), 0.5))

    def forward(self, x):
        _Layer.calls["forward_grad" if torch.is_grad_enabled() else "forward_no_grad"] += 1
        return _Counted.apply(x, self.w)


@pytest.mark.parametrize("starts", [("warm", "cold"), ("skip", "skip"), ("cold", "warm")])
@pytest.mark.parametrize(("n", "levels", "cfactor"), [(16, 3, 2), (32, 3, 4), (16, 2, 4)])
def test_the_model_does_the_real_modules_work(n, levels, cfactor, starts):
    """Every step of the model's training step is a real one: the solves' step counts (the
    adjoint's without its steps of zero states) and the layers' forward calls (with and
    without a graph) and backward calls equal a real LayerParallel training step's (after
    the first, which also checks the steps), on any number of ranks."""
    kw = dict(levels=levels, cfactor=cfactor, fwd_start=starts[0], bwd_start=starts[1])
    net = LayerParallel(nn.Identity(), [_Layer() for _ in range(n)], nn.Identity(), **kw)
    x = torch.randn(2, 4)
    for _ in range(2):
        _Layer.calls = dict.fromkeys(_Layer.calls, 0)
        net(x).pow(2).sum().backward()
    model = layer_parallel_time(n, 1, **kw).detail
    assert model["forward_counts"] == net.step_counts["forward"]
    assert model["adjoint_counts"] == net.step_counts["adjoint"]
    assert model["calls"] == _Layer.calls
    for procs in (2, 4):
        assert layer_parallel_time(n, procs, **kw).detail == model


def test_more_ranks_shorten_the_step_and_a_cold_adjoint_costs_about_a_skip():
    t = [layer_parallel_time(64, p).seconds for p in (1, 4, 16)]
    assert t[0] > t[1] > t[2]
    # the serial step costs 64 forwards and 64 backwards: 3 x 64 units
    assert 2 * 192 < t[0] < 3 * 192
    cold, skip = (layer_parallel_time(64, 1, bwd_start=s).detail["adjoint_counts"]
                  for s in ("cold", "skip"))
    assert cold[0] <= skip[0] + 4 and sum(cold) < 1.3 * sum(skip)  # vs 2x without zero skips


def test_the_chooser_picks_a_candidate_layer_parallel_takes():
    choice = choose_layer_parallel(32, 4)
    times = [s for _, s in choice.table]
    assert times == sorted(times) and choice.seconds == times[0]
    assert choice.best in candidate_hierarchies(32)
    h = choice.best
    LayerParallel(nn.Identity(), [_Layer() for _ in range(32)], nn.Identity(),
                  levels=h.levels, cfactor=h.cfactor, relax=h.relax)


def test_equal_accuracy_measures_each_hierarchy_against_the_default_once():
    """The chooser with a measured test: the pick's first-batch gradient error is no
    larger than the default hierarchy's, and every candidate it refused was faster."""
    from torchpint.layerparallel import conv_resnet, equal_accuracy

    torch.manual_seed(1)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))

    def build(h):
        torch.manual_seed(0)
        return conv_resnet(16, 2, 1, 10, 8, levels=h.levels, cfactor=h.cfactor, relax=h.relax)

    accept = equal_accuracy(build, x, y)
    choice = choose_layer_parallel(16, 2, accept=accept)
    errors = accept.errors
    default = Hierarchy(3, 4, ("F", "FCF"))
    assert errors[choice.best] <= errors[default]
    assert choice.checked[-1] == (choice.best, True)
    for h, ok in choice.checked[:-1]:
        assert not ok and errors[h] > errors[default]
    seconds = dict(choice.table)
    assert all(seconds[h] <= choice.seconds for h, _ in choice.checked)
