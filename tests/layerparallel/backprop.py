"""What the layer-parallel tests share: a forward and backward of a network against its
``serial()`` twin, and three SGD steps whose results one process and several compare."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Loss = Callable[[torch.Tensor], torch.Tensor]


def square_sum(out: torch.Tensor) -> torch.Tensor:
    return out.square().sum()


def run(m: nn.Module, x: torch.Tensor, loss: Loss = square_sum
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``m(x)`` and the gradient of ``loss`` of it over all parameters, flat."""
    m.zero_grad()
    out = m(x)
    loss(out).backward()
    return out.detach(), torch.cat([p.grad.reshape(-1) for p in m.parameters()])


def errors(net: nn.Module, x: torch.Tensor, loss: Loss = square_sum) -> tuple[float, float]:
    """Relative 2-norm errors of ``net``'s output and of all its parameter gradients
    against ``net.serial()``'s (exact backprop)."""
    out, grad = run(net, x, loss)
    ref_out, ref_grad = run(net.serial(), x, loss)
    return (float((out - ref_out).norm() / ref_out.norm()),
            float((grad - ref_grad).norm() / ref_grad.norm()))


def three_sgd_steps(net: nn.Module, x: torch.Tensor, lr: float, shift: float
                    ) -> tuple[list[torch.Tensor], dict | None, list[float]]:
    """Three SGD steps (momentum 0.5) on batches ``x + shift * b``: the outputs, then all
    weights (``serial()``'s: rank 0's when distributed) and the last solves' residuals."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.5)
    outs = []
    for b in range(3):
        opt.zero_grad()
        out = net(x + shift * b)
        square_sum(out).backward()
        opt.step()
        outs.append(out.detach())
    serial = net.serial()
    weights = None if serial is None else {k: v.clone() for k, v in serial.state_dict().items()}
    return outs, weights, net.fwd_residuals + net.bwd_residuals
