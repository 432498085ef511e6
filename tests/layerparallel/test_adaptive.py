"""AdaptiveIterations: its probe measures the gradient check's error without changing
training, it raises iterations and then makes the solves exact, and it resumes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchpint.layerparallel import AdaptiveIterations, LayerParallel, gradient_check
from torchpint.layerparallel.adaptive import gradient_error
from torchpint.testing import spawn_gloo
from torchpint.trainer import FitConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")

D = 6


def _net(group=None, **kw) -> LayerParallel:
    torch.manual_seed(0)
    steps = [nn.Sequential(nn.Linear(D, D), nn.Tanh()) for _ in range(16)]
    return LayerParallel(nn.Linear(3, D), steps, nn.Linear(D, 4), T=2.0, levels=3, cfactor=2,
                         group=group, **kw).double()


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,),
                                                                              generator=g)


def _loaders() -> tuple[DataLoader, DataLoader]:
    x, y = _data()
    return (DataLoader(TensorDataset(x, y), batch_size=8),
            DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8))


def _params(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def test_the_probe_measures_the_gradient_checks_error_and_leaves_the_grads():
    x, y = _data(8)
    net = _net()
    expected = gradient_check(net, x, y)["grad_rel_err"]
    net = _net()
    F.cross_entropy(net(x), y).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    assert gradient_error(net, x, y) == pytest.approx(expected, rel=1e-9)
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), grads, strict=True))


def test_probes_that_never_raise_leave_training_bit_for_bit_as_without_them():
    cfg = FitConfig(epochs=2, lr=0.05, seed=0)
    plain, probed = _net(), _net()
    fit(plain, *_loaders(), cfg, progress=False, log=None)
    hook = AdaptiveIterations(every=2, threshold=1e9)
    fit(probed, *_loaders(), cfg, progress=False, log=None, hooks=[hook])
    assert torch.equal(_params(plain), _params(probed))
    assert len(hook.history) == 5 and not hook.exact  # 10 batches, every 2nd probed
    assert all(0 < h["grad_rel_err"] < 1 for h in hook.history)


def test_raising_doubles_the_iterations_then_makes_the_solves_exact():
    seen = _raising(batches=4)
    assert [s[:3] for s in seen] == [(4, 2, 3), (4, 2, 1), (4, 2, 1), (4, 2, 1)]
    assert seen[-1][3] <= 1e-12  # exact: backprop's gradient


def test_a_resumed_run_goes_on_as_the_uninterrupted_one(tmp_path):
    cfg = FitConfig(epochs=3, lr=0.05, seed=0)

    def hook() -> AdaptiveIterations:
        return AdaptiveIterations(every=3, threshold=1e-30, patience=2, max_iterations=4)

    full, h_full = _net(), hook()
    fit(full, *_loaders(), cfg, progress=False, log=None, hooks=[h_full])
    ck = str(tmp_path / "ck.pt")
    part, h_part = _net(), hook()
    fit(part, *_loaders(), cfg, progress=False, log=None, hooks=[h_part], checkpoint=ck,
        stop_after=1)
    resumed, h_res = _net(), hook()
    fit(resumed, *_loaders(), cfg, progress=False, log=None, hooks=[h_res], checkpoint=ck,
        resume=True)
    assert (resumed.fwd_iterations, resumed.levels) == (full.fwd_iterations, full.levels)
    assert h_res.history == h_full.history and len(h_full.history) == 5
    assert torch.equal(_params(resumed), _params(full))
    with pytest.raises(ValueError, match="step hook"):
        fit(_net(), *_loaders(), cfg, progress=False, log=None, checkpoint=ck, resume=True)


@pytest.mark.parametrize("kw", [dict(every=0), dict(threshold=0.0), dict(patience=1.5),
                                dict(max_iterations=True)])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        AdaptiveIterations(**kw)


def _raising(group: str | None = None, batches: int = 2) -> list[tuple[int, int, int, float]]:
    """Batches of a net built with 2 / 1 iterations, each probed and raised (doubling
    while the forward iterations stay at most 4, then exact): after each, the settings
    ``(fwd_iterations, bwd_iterations, levels)`` and the probe's gradient error."""
    x, y = _data(8)
    net = _net(group=group, fwd_iterations=2, bwd_iterations=1)
    hook = AdaptiveIterations(every=1, threshold=1e-30, patience=1, max_iterations=4)
    seen = []
    for step in range(batches):
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        hook.after_backward(net, x, y, step)
        seen.append((net.fwd_iterations, net.bwd_iterations, net.levels,
                     hook.history[-1]["grad_rel_err"]))
    assert hook.exact == (net.levels == 1)
    return seen


def _rounded(seen: list[tuple[int, int, int, float]]) -> list[tuple[int, int, int, float]]:
    return [(*s[:3], round(s[3], 9)) for s in seen]


def _two_ranks(rank: int, world: int) -> list[tuple[int, int, int, float]]:
    return _rounded(_raising("world"))


def test_on_two_ranks_every_rank_raises_at_the_same_probe_as_one_process():
    one = _rounded(_raising())
    assert [s[:3] for s in one] == [(4, 2, 3), (4, 2, 1)]
    assert spawn_gloo(_two_ranks, 2) == [one, one]
