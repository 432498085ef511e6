"""The GPT as a LayerParallel network against exact serial backprop (float64): one level
is backprop, iterated MGRIT converges to it, dropout's keyed masks are the serial sweep's,
and two Gloo ranks equal one process."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchpint.common.seeds import mix_seed
from torchpint.layerparallel import LayerParallel, gpt_layer_parallel
from torchpint.testing import spawn_gloo

pytestmark = pytest.mark.usefixtures("one_thread")

V, T, WIDTH, HEADS = 11, 8, 16, 2
X = torch.randint(V, (3, T), generator=torch.Generator().manual_seed(1))
Y = torch.randint(V, (3, T), generator=torch.Generator().manual_seed(2))


def _net(blocks: int = 8, levels: int = 1, iterations: int = 1, dropout: float = 0.0,
         group: object = None, **kw: object) -> LayerParallel:
    torch.manual_seed(0)
    return gpt_layer_parallel(V, blocks, WIDTH, HEADS, T, dropout, T=2.0, levels=levels,
                              cfactor=2, fwd_iterations=iterations,
                              bwd_iterations=iterations, group=group, **kw).double()


def _loss(out: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.flatten(0, 1), Y.flatten())


def _run(m: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    m.zero_grad()
    out = m(X)
    _loss(out).backward()
    return out.detach(), torch.cat([p.grad.reshape(-1) for p in m.parameters()])


def _errors(net: LayerParallel) -> tuple[float, float]:
    """Relative errors of the logits and of all parameter gradients against serial()."""
    out, grad = _run(net)
    ref_out, ref_grad = _run(net.serial())
    assert out.shape == (3, T, V)
    return (float((out - ref_out).norm() / ref_out.norm()),
            float((grad - ref_grad).norm() / ref_grad.norm()))


def test_one_level_is_backprop():
    net = _net()
    assert not net.keyed_rng  # no dropout, no random module
    assert max(_errors(net)) <= 1e-10


@pytest.mark.parametrize(("levels", "iterations"), [(2, 8), (3, 12)])
def test_iterated_to_convergence_is_backprop(levels, iterations):
    assert max(_errors(_net(levels=levels, iterations=iterations))) <= 1e-8


def _keyed_serial(net: LayerParallel) -> tuple[torch.Tensor, torch.Tensor]:
    """The blocks in sequence, each drawing its masks from the generator LayerParallel
    keys by (batch, block): the serial network with the same masks (the embedding's
    dropout draws from the global generator, seeded as for the layer-parallel run)."""
    seed = mix_seed(int(net.rng_seed), int(net.batches))
    net.zero_grad()
    torch.manual_seed(7)
    u = net.open(X)
    for k, block in enumerate(net.steps):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(seed, k))
            u = block(u, net.h)
    out = net.close(u)
    _loss(out).backward()
    return out.detach(), torch.cat([p.grad.reshape(-1) for p in net.parameters()])


def test_dropout_masks_make_one_level_the_serial_sweep():
    net = _net(dropout=0.3)
    assert net.keyed_rng
    torch.manual_seed(7)
    out, grad = _run(net)
    ref_out, ref_grad = _keyed_serial(net)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12)
    converged = _net(levels=3, iterations=12, dropout=0.3)  # the same masks in every iteration
    torch.manual_seed(7)
    out_m, grad_m = _run(converged)
    torch.testing.assert_close(out_m, out, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad_m, grad, rtol=0, atol=1e-10)


def _train(group: object) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Two SGD steps with dropout on 2 levels: the outputs and the gathered gradients."""
    net = _net(levels=2, iterations=2, dropout=0.1, group=group)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    outs = []
    for _ in range(2):
        opt.zero_grad()
        out = net(X)
        _loss(out).backward()
        opt.step()
        outs.append(out.detach())
    return outs, net.gathered_grads()


def _worker(rank: int, world: int) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    return _train("world")


def test_two_ranks_equal_one_process():
    results = spawn_gloo(_worker, 2)
    ref_outs, ref_grads = _train(None)
    for outs, _ in results:
        for a, b in zip(outs, ref_outs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(results[0][1], ref_grads, rtol=0, atol=1e-12)
