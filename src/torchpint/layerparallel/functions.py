"""The autograd nodes of :class:`~torchpint.layerparallel.LayerParallel`: the MGRIT solves
across the layers as one node, and the last rank's output broadcast to every rank."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch

from torchpint.runtime.comm import Comm

if TYPE_CHECKING:
    from torchpint.layerparallel.module import LayerParallel


class Solve(torch.autograd.Function):
    """The steps as one autograd node: the forward MGRIT solve, whose final sweep records
    each step's graph; in backward, the adjoint MGRIT solve over those graphs, whose final
    sweep gives the parameter gradients.

    Each call's node owns its graphs and states (a later forward leaves them alone), so
    several forwards may share one backward; the graphs are freed when autograd frees the
    node's saved tensors (at the end of a backward without ``retain_graph``), and a
    second backward then fails as torch's own nodes do."""

    @staticmethod
    def forward(ctx: Any, net: LayerParallel, grad: bool, u0: torch.Tensor,
                *params: torch.Tensor):
        graphs = net.forward_solve(u0, grad)
        assert graphs.output is not None
        if not grad:  # inference: nothing kept (training mode: the sweep updated batch norm)
            return graphs.output
        net._recorded = weakref.ref(graphs)
        ctx.net, ctx.params, ctx.graphs = net, params, graphs
        ctx.save_for_backward(u0)  # autograd frees it with the graph: our sign to free ours
        return graphs.output.detach()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        ctx.saved_tensors  # noqa: B018  (a second backward without retain_graph: torch's error)
        lam0, grads = ctx.net.adjoint_solve(ctx.graphs, g)
        torch.autograd.Variable._execution_engine.queue_callback(lambda: _free(ctx))
        return (None, None, lam0, *(grads.get(p) for p in ctx.params))


def _free(ctx: Any) -> None:
    """At the end of a backward: free the node's graphs unless autograd keeps the graph
    (``retain_graph=True`` keeps the saved tensors, and with them ours)."""
    try:
        ctx.saved_tensors  # noqa: B018
    except RuntimeError:  # freed: this was the graph's last backward
        ctx.graphs = None


class FromLast(torch.autograd.Function):
    """The last rank's output on every rank; backward, the last rank's gradient alone
    (the loss is the last rank's; the others' copies carry no gradient)."""

    @staticmethod
    def forward(ctx: Any, comm: Comm, out: torch.Tensor, shape: torch.Size):
        last = comm.size - 1
        ctx.last, ctx.like = comm.rank == last, (out.shape, out.dtype, out.device)
        buf = out.detach() if comm.rank == last else out.new_zeros(shape)
        return comm.broadcast(buf, last, "the network's output")

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        shape, dtype, device = ctx.like
        return None, (g if ctx.last else torch.zeros(shape, dtype=dtype, device=device)), None


_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64,
           torch.complex128)


def told(comm: Comm, meta: dict[Any, tuple[torch.Size, torch.dtype]], key: Any,
         t: torch.Tensor | None, src: int) -> tuple[torch.Size, torch.dtype]:
    """The shape and dtype of rank ``src``'s ``t``, on every rank of ``comm``: broadcast
    once per ``key``, then remembered in ``meta``."""
    if key not in meta:
        msg = torch.zeros(10, dtype=torch.int64)
        if t is not None:
            msg[0], msg[1] = _DTYPES.index(t.dtype), t.dim()
            msg[2 : 2 + t.dim()] = torch.tensor(t.shape)
        msg = comm.broadcast(msg, src, "a shape")
        dims = msg[2 : 2 + int(msg[1])].tolist()
        meta[key] = (torch.Size(dims), _DTYPES[int(msg[0])])
    return meta[key]
