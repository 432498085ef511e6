"""refine: a trained shallow network as the start of a deeper one on the same [0, T]."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchpint.layerparallel import LayerParallel, refine

pytestmark = pytest.mark.usefixtures("one_thread")


def _coarse() -> LayerParallel:
    torch.manual_seed(0)
    steps = [nn.Sequential(nn.Linear(6, 6), nn.Tanh()) for _ in range(4)]
    return LayerParallel(nn.Linear(3, 6), steps, nn.Linear(6, 2), T=1.0, levels=2,
                         cfactor=2, fwd_iterations=3).double()


def test_each_layer_repeats_in_order_on_the_same_horizon():
    coarse = _coarse()
    fine = refine(coarse, 4)
    assert len(fine.steps) == 16 and fine.T == coarse.T and fine.h == coarse.h / 4
    assert (fine.levels, fine.cfactor, fine.fwd_iterations) == (2, 2, 3)
    for k, layer in enumerate(fine.steps):
        src = coarse.steps[k // 4]
        for a, b in zip(layer.parameters(), src.parameters(), strict=True):
            assert torch.equal(a, b) and a is not b  # copies, not shared
    x = torch.randn(20, 3, dtype=torch.float64)
    with torch.no_grad():
        c, f = coarse.serial()(x), fine.serial()(x)
    # the same ODE with a 4x smaller step: close to the coarse network's function
    assert float((f - c).norm() / c.norm()) < 0.05
    assert refine(coarse, 2, levels=3).levels == 3


def test_bad_factor_is_refused():
    with pytest.raises(ValueError, match="factor"):
        refine(_coarse(), 1)
