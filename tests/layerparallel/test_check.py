"""``serial_gradient``: exact backprop's output and gradient, with nothing left behind."""

from __future__ import annotations

import copy

import torch
from torch import nn

from torchpint.layerparallel.check import relative_error, serial_gradient
from torchpint.trainer import batch_loss


class _Net(nn.Module):
    """Batch norm, dropout, a frozen layer and a layer the loss never reaches."""

    def __init__(self) -> None:
        super().__init__()
        frozen = nn.Linear(3, 3)
        frozen.requires_grad_(False)
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3),
                                  nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), frozen, nn.Linear(3, 4))
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return _Net().train()


def test_serial_gradient_is_backprop_and_leaves_grads_buffers_and_rng():
    net = _net()
    x, y = torch.randn(6, 1, 5, 5), torch.randint(0, 4, (6,))
    with torch.no_grad():
        for p in net.parameters():
            p.grad = torch.full_like(p, 7.0)  # a gradient the optimizer is about to take
    buffers = [b.clone() for b in net.buffers()]
    ref = copy.deepcopy(net)
    for p in ref.parameters():
        p.grad = None
    rng = torch.get_rng_state()
    out, grad = serial_gradient(net, x, y)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(b, v) for b, v in zip(net.buffers(), buffers, strict=True))
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in net.parameters())
    torch.set_rng_state(rng)  # the same dropout mask as inside serial_gradient
    ref_out = ref(x)
    batch_loss(ref_out, y).backward()
    want = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)
                      for p in ref.parameters()])
    assert torch.equal(out, ref_out.detach())
    assert grad.shape == want.shape and relative_error(grad, want) < 1e-6
    assert relative_error(want + 1, want) > 0.1
