"""LayerParallel against exact serial forward and backprop of ``serial()`` (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchpint.layerparallel import LayerParallel

pytestmark = pytest.mark.usefixtures("one_thread")

D = 6


class _HalfStep(nn.Module):
    """A layer whose forward takes the step size: it is the whole step."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, D)

    def forward(self, x: torch.Tensor, h: float) -> torch.Tensor:
        return x + h * torch.tanh(self.lin(x)) - 0.5 * h * x


def _net(levels: int, cfactor: int, iters: int, relax: str = "F", n: int = 16,
         layer: type[nn.Module] | None = None) -> LayerParallel:
    torch.manual_seed(0)
    steps = [layer() if layer else nn.Sequential(nn.Linear(D, D), nn.Tanh()) for _ in range(n)]
    return LayerParallel(nn.Linear(3, D), steps, nn.Linear(D, 2), T=2.0, levels=levels,
                         cfactor=cfactor, relax=relax, fwd_iterations=iters,
                         bwd_iterations=iters).double()


X = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _run(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    m.zero_grad()
    out = m(X)
    out.square().sum().backward()
    return out.detach(), torch.cat([p.grad.reshape(-1) for p in m.parameters()])


def _errors(net: LayerParallel) -> tuple[float, float]:
    """Relative 2-norm errors of the output and of all parameter gradients."""
    out, grad = _run(net)
    ref_out, ref_grad = _run(net.serial())
    return (float((out - ref_out).norm() / ref_out.norm()),
            float((grad - ref_grad).norm() / ref_grad.norm()))


@pytest.mark.parametrize("layer", [None, _HalfStep])
def test_one_level_is_backprop(layer):
    assert max(_errors(_net(1, 2, 1, layer=layer))) <= 1e-12


@pytest.mark.parametrize("relax", ["F", "FCF"])
def test_iterated_to_convergence_is_backprop(relax):
    assert max(_errors(_net(3, 2, 30, relax))) <= 1e-9


def test_two_level_f_relaxation_is_exact_after_n_over_m_iterations_not_before():
    n, m = 16, 4
    assert max(_errors(_net(2, m, n // m))) <= 1e-12
    assert _errors(_net(2, m, n // m - 1))[1] > 1e-6  # the gradient is not exact yet


def test_gradient_error_falls_with_more_iterations():
    errs = [_errors(_net(3, 2, k))[1] for k in range(1, 5)]
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[0] > 1e-2 and errs[-1] < 1e-2


def test_warm_start_carries_iterations_across_batches():
    """One forward iteration per call, each from the last call's solution: on the same
    batch the output approaches the exact one, as iterations would."""
    net = _net(3, 2, 1)
    exact = net.serial()(X).detach()
    errs = []
    for _ in range(4):
        with torch.no_grad():
            errs.append(float((net(X) - exact).norm() / exact.norm()))
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 1e-2 < errs[0]


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="divisible by cfactor"):
        LayerParallel(nn.Identity(), [nn.Linear(D, D) for _ in range(10)], nn.Identity(),
                      levels=3, cfactor=2)
    shrink = LayerParallel(nn.Identity(), [nn.Linear(D, D - 1) for _ in range(4)],
                           nn.Identity(), levels=2, cfactor=2).double()
    with pytest.raises(ValueError, match="shape"):
        shrink(torch.zeros(2, D, dtype=torch.float64))
    with pytest.raises(ValueError, match="fwd_iterations"):
        _net(2, 2, 0)


def test_trains_with_a_torch_optimizer():
    net = _net(3, 2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    target = torch.zeros(5, 2, dtype=torch.float64)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = (net(X) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def _copies(extra: nn.Module, n: int = 8) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(D, D), copy.deepcopy(extra), nn.Tanh()) for _ in range(n)]


def test_batch_norm_statistics_are_updated_once_per_batch_as_serial_training_does():
    """Converged MGRIT with batch norm in the steps trains as the serial network does:
    the same weights and the same running statistics after a few SGD steps."""
    net = LayerParallel(nn.Linear(3, D), _copies(nn.BatchNorm1d(D)), nn.Linear(D, 2), T=2.0,
                        levels=3, cfactor=2, fwd_iterations=20, bwd_iterations=20).double()
    ref = copy.deepcopy(net).serial()
    for m in (net, ref):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for b in range(3):
            opt.zero_grad()
            m(X + b).square().sum().backward()
            opt.step()
    got, want = net.state_dict(), ref.state_dict()
    assert len(got) == len(want)
    for (k, a), b in zip(got.items(), want.values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=k)
    assert int(net.steps[0][1].num_batches_tracked) == 3


def test_dropout_masks_are_fixed_per_batch_and_layer():
    """With dropout, MGRIT iterations converge (every call of a layer in one batch draws
    the same mask) to the sequential sweep with those masks (one level); a new batch
    draws new masks, and eval mode none."""
    def net(levels: int) -> LayerParallel:
        torch.manual_seed(5)  # the same mask seed
        return LayerParallel(nn.Linear(3, D), _copies(nn.Dropout(0.3)), nn.Linear(D, 2),
                             T=2.0, levels=levels, cfactor=2, fwd_iterations=20,
                             bwd_iterations=20).double()

    multi, one = net(3), net(1)
    assert multi.keyed_rng and multi.fwd_residuals == []
    out_m, grad_m = _run(multi)
    out_1, grad_1 = _run(one)
    assert multi.fwd_residuals[-1] < 1e-10  # a fixed point exists: the masks are fixed
    torch.testing.assert_close(out_m, out_1, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad_m, grad_1, rtol=0, atol=1e-10)
    assert not torch.allclose(multi(X), out_m)  # the next batch: other masks
    multi.eval()
    with torch.no_grad():
        torch.testing.assert_close(multi(X), multi.serial()(X), rtol=0, atol=1e-10)


def test_other_running_statistics_are_refused_in_training():
    net = LayerParallel(nn.Identity(), _copies(nn.InstanceNorm1d(D, track_running_stats=True),
                                               4), nn.Identity(), levels=2, cfactor=2).double()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        net(torch.randn(8, D, D, dtype=torch.float64))
    net.eval()
    with torch.no_grad():
        net(torch.randn(8, D, D, dtype=torch.float64))


def test_relaxation_per_level():
    torch.manual_seed(0)
    layers = [nn.Linear(D, D) for _ in range(16)]
    assert LayerParallel(nn.Identity(), layers, nn.Identity(), levels=3, cfactor=2).relax == (
        "F", "FCF")  # TorchBraid's default
    assert LayerParallel(nn.Identity(), layers, nn.Identity(), levels=1).relax == ()
    with pytest.raises(ValueError, match="one per level"):
        LayerParallel(nn.Identity(), layers, nn.Identity(), levels=3, cfactor=2,
                      relax=("F",))
    errs = [max(_errors(_net(3, 2, 30, relax))) for relax in (("F", "FCF"), ("FCF", "F"))]
    assert max(errs) <= 1e-9


def test_steps_from_a_function():
    torch.manual_seed(0)
    made = LayerParallel(nn.Identity(), lambda k: nn.Linear(D, D), nn.Identity(),
                         num_steps=8, levels=2, cfactor=2)
    assert len(made.steps) == 8 and made.layers == range(8)
    with pytest.raises(ValueError, match="num_steps"):
        LayerParallel(nn.Identity(), lambda k: nn.Linear(D, D), nn.Identity())


def test_the_last_batch_is_reported_as_one_result_object():
    from torchpint.layerparallel import LayerParallel

    torch.manual_seed(0)
    net = LayerParallel(torch.nn.Linear(3, 4), [torch.nn.Linear(4, 4) for _ in range(8)],
                        torch.nn.Linear(4, 2), levels=2, cfactor=2).double()
    net(torch.randn(5, 3, dtype=torch.float64)).sum().backward()
    r = net.report
    assert r.fwd_residuals == net.fwd_residuals and len(r.fwd_residuals) == net.fwd_iterations
    assert r.bwd_residuals == net.bwd_residuals and len(r.bwd_residuals) == net.bwd_iterations
    assert set(r.step_counts) == {"forward", "adjoint"}
    assert r.to_dict()["timings"]["forward_solve"] > 0


def test_old_keyword_spellings_still_work_with_a_deprecation():
    with pytest.warns(DeprecationWarning, match="fwd_iterations"):
        net = LayerParallel(nn.Linear(3, 4), [nn.Linear(4, 4) for _ in range(4)],
                            nn.Linear(4, 2), levels=2, cfactor=2, fwd_iters=3)
    assert net.fwd_iterations == net.fwd_iters == 3
