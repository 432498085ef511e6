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


def serial_gradient(serial: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact backprop through ``serial`` on ``(x, y)``: its output and its parameter
    gradient, flattened on the CPU (zeros for a parameter the loss does not reach).
    Leaves every ``.grad``, buffer and random state as it was, because ``serial`` shares
    its layers with the network in one process (batch-norm statistics, dropout)."""
    params = list(serial.parameters())
    live = [p for p in params if p.requires_grad]
    saved = [b.detach().clone() for b in serial.buffers()]
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            out = serial(x)
            grads = torch.autograd.grad(batch_loss(out, y), live, allow_unused=True,
                                        materialize_grads=True)
    finally:
        with torch.no_grad():
            for b, v in zip(serial.buffers(), saved, strict=True):
                b.copy_(v)
    by_param = {id(p): g for p, g in zip(live, grads, strict=True)}
    flat = torch.cat([by_param.get(id(p), torch.zeros_like(p)).reshape(-1) for p in params])
    return out.detach(), flat.cpu()


def relative_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    """``|a - ref| / |ref|`` in the 2-norm (a zero ``ref`` divides by the tiniest float)."""
    return float((a - ref).norm() / ref.norm().clamp_min(torch.finfo(ref.dtype).tiny))


def gradient_check(net: LayerParallel, x: torch.Tensor, y: torch.Tensor
                   ) -> dict[str, float] | None:
    """On one batch: the relative 2-norm error of the output and of the parameter
    gradient of ``net`` against exact serial autograd of ``net.serial()`` (on rank 0;
    ``None`` on the others, which take part). Leaves ``net``'s gradients zeroed."""
    net.zero_grad(set_to_none=True)
    out = net(x)
    batch_loss(out, y).backward()
    out, grad = out.detach(), net.gathered_grads()
    serial = net.serial()
    net.zero_grad(set_to_none=True)
    if serial is None:
        return None
    ref_out, ref_grad = serial_gradient(serial, x, y)
    return {"output_rel_err": relative_error(out, ref_out),
            "grad_rel_err": relative_error(grad, ref_grad)}


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
