"""LayerParallel with spatial coarsening (coarse levels on pooled states) against exact
serial backprop (float64), on 2 Gloo ranks against one process, and what runs where."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.layerparallel.backprop import errors, run, three_sgd_steps
from torchpint.layerparallel import LayerParallel
from torchpint.layerparallel.spatial import Pooling, SpatialLevels
from torchpint.testing import spawn_gloo

pytestmark = pytest.mark.usefixtures("one_thread")

C, H = 3, 8
X = torch.randn(4, 1, H, H, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _net(levels: int, iters: int, spatial="nearest", group=None, n: int = 16,
         **kw) -> LayerParallel:
    torch.manual_seed(0)
    steps = [nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.Tanh()) for _ in range(n)]
    close = nn.Sequential(nn.Flatten(), nn.Linear(C * H * H, 2))
    return LayerParallel(nn.Conv2d(1, C, 3, padding=1), steps, close, T=2.0, levels=levels,
                         cfactor=2, fwd_iterations=iters, bwd_iterations=iters,
                         spatial=spatial, group=group, **kw).double()


def _run(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return run(m, X)


def _errors(net: LayerParallel) -> tuple[float, float]:
    return errors(net, X)


@pytest.mark.parametrize("spatial", ["nearest", "bilinear"])
def test_one_level_is_backprop(spatial):
    assert max(_errors(_net(1, 1, spatial))) <= 1e-12


@pytest.mark.parametrize("starts", [("warm", "cold"), ("skip", "skip")])
@pytest.mark.parametrize("spatial", ["nearest", "bilinear"])
def test_iterated_to_convergence_is_backprop(spatial, starts):
    net = _net(3, 10, spatial, fwd_start=starts[0], bwd_start=starts[1])
    assert net.relax == ("FCF", "FCF")  # (F-relaxation could not converge: see settings)
    assert max(_errors(net)) <= 1e-9
    assert net.fwd_residuals[-1] < 1e-12 and net.bwd_residuals[-1] < 1e-12


def test_the_coarse_levels_run_at_the_coarse_resolution():
    """A hook on a step's conv sees the fine, the pooled and the twice pooled state,
    forward and adjoint (whose coarse graphs are recorded at the restricted states)."""
    net = _net(3, 2)
    seen: dict[str, set[tuple[int, ...]]] = {"forward": set(), "adjoint": set()}
    phase = ["forward"]
    net.steps[0][0].register_forward_hook(
        lambda mod, args, out: seen[phase[0]].add(tuple(args[0].shape)))
    out = net(X)
    phase[0] = "adjoint"
    out.square().sum().backward()
    assert seen["forward"] == {(4, C, 8, 8), (4, C, 4, 4), (4, C, 2, 2)}
    assert seen["adjoint"] == {(4, C, 4, 4), (4, C, 2, 2)}  # (the fine graph: the sweep's)
    solver = net._fwd[1]
    assert [tuple(U.shape[1:]) for U in solver._cycler.U] == \
        [(4, C, 8, 8), (4, C, 4, 4), (4, C, 2, 2)]


def test_spatial_coarsening_changes_the_solves_not_the_fine_network():
    plain, coarse = _net(3, 2, None), _net(3, 2)
    assert plain.relax == ("F", "FCF")  # TorchBraid's default without it
    a, b = _run(plain), _run(coarse)
    assert not torch.allclose(a[1], b[1])  # an inexact solve, differently inexact
    for p, q in zip(plain.serial().parameters(), coarse.serial().parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_spatial_option_is_checked():
    assert SpatialLevels.of(None, 3) is None and SpatialLevels.of([None, None], 3) is None
    levels = SpatialLevels.of([None, "bilinear"], 3)
    assert not levels.coarsens(0) and levels.coarsens(1)
    assert _net(3, 1, [None, "nearest"]).relax == ("F", "FCF")  # level 0 keeps its state
    assert _net(3, 1, Pooling("bilinear"), relax="F").relax == "F"  # as given (inexact)
    with pytest.raises(ValueError, match="one per coarsening"):
        _net(3, 1, ["nearest"])
    with pytest.raises(ValueError, match="must be one of"):
        _net(3, 1, "cubic")
    with pytest.raises(TypeError, match="spatial must be"):
        _net(3, 1, 2)
    steps = [nn.Linear(3, 3) for _ in range(4)]
    flat = LayerParallel(nn.Identity(), steps, nn.Identity(), levels=2, cfactor=2,
                         spatial="nearest")
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        flat(torch.randn(2, 3))


def _train(group) -> tuple[list[torch.Tensor], dict | None, list[float]]:
    """Three SGD steps with spatial coarsening; outputs, weights (rank 0), residuals."""
    return three_sgd_steps(_net(3, 2, group=group), X, lr=0.05, shift=0.1)


def _worker(rank, world):
    return _train("world")


def test_two_ranks_equal_one_process():
    ref_outs, ref_weights, ref_res = _train(None)
    ranks = spawn_gloo(_worker, 2)
    for outs, _, _ in ranks:
        for a, b in zip(outs, ref_outs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    weights = ranks[0][1]
    assert weights.keys() == ref_weights.keys()
    for k, w in ref_weights.items():
        torch.testing.assert_close(weights[k], w, rtol=0, atol=1e-12, msg=k)
    assert ranks[0][2] == pytest.approx(ref_res, rel=1e-9, abs=1e-13)
