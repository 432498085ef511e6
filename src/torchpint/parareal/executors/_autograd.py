"""The fine stage as one autograd node, and the gradient helpers the executors share."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from torchpint.parareal.executors.base import Stages


def trainable(m: nn.Module) -> list[torch.Tensor]:
    return [p for p in m.parameters() if p.requires_grad]


def unique_trainable(modules: list[nn.Module]) -> list[torch.Tensor]:
    """The trainable parameters of ``modules``, each once (C_j may share F_j's)."""
    seen: dict[int, torch.Tensor] = {}
    for m in modules:
        for p in trainable(m):
            seen.setdefault(id(p), p)
    return list(seen.values())


def needs_grad(stages: Stages, inputs: dict[int, torch.Tensor]) -> bool:
    """Whether running the chunks of ``inputs`` must record a graph."""
    if not torch.is_grad_enabled():
        return False
    if any(x.requires_grad for x in inputs.values()):
        return True
    return any(trainable(stages.fine[j]) for j in inputs)


def grads(
    outs: list[torch.Tensor | None],
    gos: list[torch.Tensor | None],
    x: torch.Tensor,
    modules: list[nn.Module],
) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
    """Backpropagate ``gos`` through ``outs`` (both may hold None) to the leaf ``x`` and the
    trainable parameters of ``modules``: ``(grad of x or None, {id(param): grad})``."""
    pairs = [(o, g) for o, g in zip(outs, gos, strict=True) if o is not None and g is not None]
    pairs = [(o, g) for o, g in pairs if o.requires_grad]
    params = unique_trainable(modules)
    wrt = ([x] if x.requires_grad else []) + params
    if not pairs or not wrt:
        return None, {}
    gs = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
    gx = gs[0] if x.requires_grad else None
    by_id = {id(p): g for p, g in zip(params, gs[len(gs) - len(params) :], strict=True)}
    return gx, {k: g for k, g in by_id.items() if g is not None}


def add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """``a + b`` where None counts as zero."""
    return b if a is None else a if b is None else a + b


def chunk_forward(stages: Stages, j: int, x: torch.Tensor) -> tuple:
    """Run chunk j with grad on a detached copy of its input: (input leaf, output)."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(x.requires_grad)
        return xi, stages.fine[j](xi)


def chunk_backward(
    stages: Stages, j: int, xi: torch.Tensor, out: torch.Tensor, g: torch.Tensor | None
) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
    """Gradients of chunk j's input and trainable parameters for output gradient ``g``."""
    gx, by_id = grads([out], [g], xi, [stages.fine[j]])
    return gx, [by_id.get(id(p)) for p in trainable(stages.fine[j])]


class FineStageRunner(Protocol):
    """An executor that runs the fine stage inside ``_FineStage``."""

    def fine_forward(
        self, stages: Stages, js: tuple, metas: list, xs: tuple
    ) -> tuple[Any, list[torch.Tensor]]:
        """Run chunks ``js`` on ``xs``: (a state for ``fine_backward``, detached outputs)."""
        ...

    def fine_backward(self, ctx: Any, grads: tuple) -> tuple[list, list]:
        """(gradients of the chunk inputs, of the parameters passed to the node)."""
        ...


class _FineStage(torch.autograd.Function):
    """The fine stage as one autograd node whose forward and backward the executor runs.

    Inputs: the chunk inputs, then the trainable parameters of the chunks this process
    computes. ``ex.fine_forward`` returns the outputs and a state kept for
    ``ex.fine_backward``.
    """

    @staticmethod
    def forward(
        ctx: Any, ex: Any, stages: Any, js: tuple, metas: list, n_in: int, *tensors: torch.Tensor
    ):
        state, outs = ex.fine_forward(stages, js, metas, tensors[:n_in])
        ctx.ex, ctx.stages, ctx.js, ctx.state = ex, stages, js, state
        ctx.in_meta = [(x.shape, x.dtype, x.device) for x in tensors[:n_in]]
        ctx.n_params = len(tensors) - n_in
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None):
        in_grads, p_grads = ctx.ex.fine_backward(ctx, grads)
        ctx.state = None  # free the chunk graphs
        assert len(p_grads) == ctx.n_params
        return (None, None, None, None, None, *in_grads, *p_grads)


def fine_stage(
    ex: FineStageRunner,
    stages: Stages,
    inputs: dict[int, torch.Tensor],
    like: dict[int, torch.Tensor],
    params: list[torch.Tensor],
) -> dict[int, torch.Tensor]:
    """``{j: F_j(inputs[j])}`` through one ``_FineStage`` node run by ``ex``; ``params``: the
    trainable parameters of the chunks this process computes, in ``ex``'s order."""
    js = tuple(inputs)
    metas = [(like[j].shape, like[j].dtype) for j in js]
    outs = _FineStage.apply(ex, stages, js, metas, len(js), *inputs.values(), *params)
    return dict(zip(js, outs, strict=True))
