"""How far layer-parallel training's output and gradient are from exact backprop, and
the equal-accuracy test the hierarchy chooser takes (:func:`equal_accuracy`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from torchpint.core.costmodel import Hierarchy
from torchpint.trainer import batch_loss

if TYPE_CHECKING:
    from torchpint.layerparallel.module import LayerParallel

DEFAULT = Hierarchy(3, 4, ("F", "FCF"))
"""LayerParallel's default hierarchy (TorchBraid's: F on the fine level, FCF coarse)."""


def gradient_check(net: LayerParallel, x: torch.Tensor, y: torch.Tensor
                   ) -> dict[str, float] | None:
    """On one batch: the relative 2-norm error of the output and of the parameter
    gradient of ``net`` against exact serial autograd of ``net.serial()`` (on rank 0;
    ``None`` on the others, which take part)."""
    net.zero_grad(set_to_none=True)
    out = net(x)
    batch_loss(out, y).backward()
    out, grad = out.detach(), net.gathered_grads()
    serial = net.serial()
    net.zero_grad(set_to_none=True)
    if serial is None:
        return None
    serial.zero_grad(set_to_none=True)
    ref_out = serial(x)
    batch_loss(ref_out, y).backward()
    ref_grad = torch.cat([torch.zeros_like(p) if p.grad is None else p.grad.reshape(-1)
                          for p in serial.parameters()]).cpu()
    serial.zero_grad(set_to_none=True)
    ref_out = ref_out.detach()
    return {"output_rel_err": float((out - ref_out).norm() / ref_out.norm()),
            "grad_rel_err": float((grad - ref_grad).norm() / ref_grad.norm())}


def equal_accuracy(build: Callable[[Hierarchy], LayerParallel], x: torch.Tensor,
                   y: torch.Tensor, reference: Hierarchy = DEFAULT,
                   bound: float | None = None) -> Callable[[Hierarchy], bool]:
    """A test for :func:`~torchpint.layerparallel.choose_layer_parallel`'s ``accept``: whether
    a hierarchy's first-batch gradient error (:func:`gradient_check` on ``(x, y)``) is
    no larger than ``reference``'s (or than ``bound``, e.g. the error of other starts),
    up to a relative 1e-4 of rounding. ``build(h)`` makes the network with hierarchy
    ``h`` and the same initial weights every time (seed it). The errors do not depend on
    the number of ranks (the solves are the same), so one process checks for all;
    ``errors`` keeps each one measured."""
    errors: dict[Hierarchy, float] = {}

    def error(h: Hierarchy) -> float:
        if h not in errors:
            check = gradient_check(build(h), x, y)
            if check is None:
                raise RuntimeError("equal_accuracy runs in one process (rank 0 of none)")
            errors[h] = check["grad_rel_err"]
        return errors[h]

    def accept(h: Hierarchy) -> bool:  # (a relative 1e-4 for rounding: equal is equal)
        return error(h) <= (error(reference) if bound is None else bound) * (1 + 1e-4)

    accept.errors = errors  # type: ignore[attr-defined]
    return accept
