"""MicroBatchBN: the outputs, gradients and running statistics of a model run on the
slices of its batch one after the other, as DDP ranks and pipeline micro-batches see them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchpint.common.microbatch import MicroBatchBN


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


def _grads(m: nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in m.parameters()]


@pytest.mark.parametrize("stats", ["first", "all"])
def test_slices_run_alone_and_their_statistics_are_kept(stats):
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    base = _model()
    mb = MicroBatchBN(copy.deepcopy(base), 4, stats).train()
    out = mb(x)
    out.square().mean().backward()
    ref = copy.deepcopy(base).train()
    outs = [ref(xi) for xi in x.chunk(4)[:1]]
    after_first = [b.clone() for b in ref.buffers()]  # "first": the later slices keep these
    outs += [ref(xi) for xi in x.chunk(4)[1:]]
    torch.cat(outs).square().mean().backward()
    assert torch.equal(out, torch.cat(outs))
    for a, b in zip(_grads(mb.model), _grads(ref), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    expected = after_first if stats == "first" else list(ref.buffers())
    for a, b in zip(mb.model.buffers(), expected, strict=True):
        assert torch.equal(a, b)
    assert int(mb.model[1].num_batches_tracked) == (1 if stats == "first" else 4)


def test_eval_and_one_part_run_the_whole_batch():
    x = torch.randn(6, 3, dtype=torch.float64)
    base = _model()
    assert torch.equal(MicroBatchBN(base, 3).eval()(x), base.eval()(x))
    base.train()
    assert torch.equal(MicroBatchBN(copy.deepcopy(base), 1).train()(x), copy.deepcopy(base)(x))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="does not split"):
        MicroBatchBN(_model(), 4).train()(torch.randn(6, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="stats"):
        MicroBatchBN(_model(), 2, "last")
    with pytest.raises(ValueError, match="parts"):
        MicroBatchBN(_model(), 0)
