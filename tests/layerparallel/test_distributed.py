"""LayerParallel on 2 and 3 Gloo processes against the same module in one process (float64):
each rank holds a slab of the layers, and training gives the same outputs and weights."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from tests.layerparallel.backprop import three_sgd_steps
from torchpint.core import RankTimeoutError
from torchpint.layerparallel import LayerParallel
from torchpint.layerparallel.layout import layer_slabs
from torchpint.testing import spawn_gloo

D = 5
X = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
# (steps, levels, cfactor, dropout[, starts]): N = 8 over 3 ranks cuts slabs off the coarse
# grid, so coarse steps use layers of the previous rank (edge weights are sent); the last
# cases start by skip and from the last batch's adjoint
CASES = {2: [(16, 3, 2, False), (16, 2, 4, True), (16, 3, 2, False, ("skip", "warm"))],
         3: [(8, 3, 2, True), (12, 2, 2, False), (12, 2, 2, False, ("skip", "skip"))]}


def _net(group, n, levels, cfactor, dropout, starts=("warm", "cold"), timeout=30.0,
         **kw) -> LayerParallel:
    torch.manual_seed(0)
    kw.update(fwd_start=starts[0], bwd_start=starts[1])
    steps = [nn.Sequential(nn.Linear(D, D), nn.Dropout(0.2) if dropout else nn.Identity(),
                           nn.Tanh()) for _ in range(n)]
    return LayerParallel(nn.Linear(3, D), steps, nn.Linear(D, 2), T=2.0, levels=levels,
                         cfactor=cfactor, group=group, timeout=timeout, **kw).double()


def _train(group, case) -> tuple[list[torch.Tensor], dict | None, list[float]]:
    """Three SGD steps; the outputs, then all weights (rank 0) and the last residuals."""
    return three_sgd_steps(_net(group, *case), X, lr=0.1, shift=1.0)


def _worker(rank, world):
    out = []
    for case in CASES[world]:
        net = _net("world", *case)
        out.append((list(net.layers), sorted(net._edges), _train("world", case)))
    return out


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_training_equals_one_process(world):
    results = spawn_gloo(_worker, world)
    for j, case in enumerate(CASES[world]):
        ref_outs, ref_weights, ref_res = _train(None, case)
        layers = [results[r][j][0] for r in range(world)]
        assert sum(layers, []) == list(range(case[0]))  # contiguous slabs, all layers
        for r in range(world):
            outs, weights, res = results[r][j][2]
            for a, b in zip(outs, ref_outs, strict=True):  # the output reaches every rank
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
            assert res == pytest.approx(ref_res, rel=1e-9, abs=1e-13) if r == 0 else True
        weights = results[0][j][2][1]
        assert weights.keys() == ref_weights.keys()
        for k, w in ref_weights.items():
            torch.testing.assert_close(weights[k], w, rtol=0, atol=1e-12, msg=k)
    edges = [results[r][0][1] for r in range(world)]
    assert any(edges) == (world == 3)  # the 3-rank case needs edge weights, the other not


def _gradient_worker(rank, world):
    net = _net("world", 12, 2, 2, False, fwd_iterations=1, bwd_iterations=1)
    net(X).square().sum().backward()
    return net.gathered_grads(), net.serial()


def test_gradients_live_on_their_owners_and_gather_to_the_serial_order():
    grads, serial = spawn_gloo(_gradient_worker, 3)[0]
    ref = _net(None, 12, 2, 2, False, fwd_iterations=1, bwd_iterations=1)
    ref(X).square().sum().backward()
    torch.testing.assert_close(grads, ref.gathered_grads(), rtol=0, atol=1e-12)
    params = [p for p in serial.parameters()]
    assert sum(p.numel() for p in params) == grads.numel()


def _dying_peer(rank, world):
    net = _net("world", 8, 2, 2, False, timeout=2.0)
    out = net(X)
    if rank == 1:
        return "left"  # exits before the backward solve
    t = time.perf_counter()
    try:
        out.square().sum().backward()
    except RankTimeoutError as err:
        return (type(err).__name__, time.perf_counter() - t, str(err))
    return "no error"


def test_a_rank_that_dies_is_an_error_on_its_peers():
    kind, elapsed, msg = spawn_gloo(_dying_peer, 2)[0]
    assert kind in ("PeerClosedError", "RankTimeoutError") and elapsed < 10, msg
    assert "rank 1" in msg


def test_more_ranks_than_layers_is_refused():
    with pytest.raises(ValueError, match="every rank needs at least one layer"):
        layer_slabs(2, 3)


X2 = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def _two_forwards(net: LayerParallel) -> torch.Tensor | None:
    """Two forwards, one backward, then a backward twice through a retained graph."""
    (net(X).square().sum() + net(X2).tanh().sum()).backward()
    loss = net(X).square().sum()
    loss.backward(retain_graph=True)
    loss.backward()
    return net.gathered_grads()


def _two_forwards_worker(rank, world):
    return _two_forwards(_net("world", 16, 3, 2, False, fwd_iterations=2, bwd_iterations=1))


def test_two_forwards_and_a_retained_graph_on_two_ranks_equal_one_process():
    grads = spawn_gloo(_two_forwards_worker, 2)[0]
    ref = _two_forwards(_net(None, 16, 3, 2, False, fwd_iterations=2, bwd_iterations=1))
    torch.testing.assert_close(grads, ref, rtol=0, atol=1e-12)
