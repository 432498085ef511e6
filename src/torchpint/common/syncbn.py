"""Batch norm over the union of several processes' batches, on any device (Gloo included).

``torch.nn.SyncBatchNorm`` runs only on GPUs. Data-parallel replicas that each hold a
share of the batch need the statistics of the whole batch to train exactly as one process
with the whole batch; ``convert_sync_batchnorm`` swaps every batch norm of a module for
:class:`SyncBatchNorm`, which gathers every rank's batch mean and variance over a process
group (one all-gather per call forward, one all-reduce backward), through the floor's
communicator: a peer that died or hung is a typed ``PeerError``, never a hang.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from torchpint.runtime.comm import Comm, make_comm


class _GatherOverGroup(torch.autograd.Function):
    """The ``(D, K)`` stack of every rank's ``local`` over ``comm`` (rank order). The
    backward gives rank d ``sum_d' w_d' G_d'[d] / w_d``, with ``w_d`` its share of the rows
    and ``G_d'`` rank d''s gradient of the stack, because the replicas' parameter
    gradients are then averaged with those weights (so the cross-replica terms are exact).
    """

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, comm: Comm, share: float) -> torch.Tensor:
        ctx.comm, ctx.share, ctx.rank = comm, share, comm.rank
        if comm.size == 1:
            return local.unsqueeze(0).clone()
        return comm.all_gather(local, "the batch-norm statistics")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        g = grad * ctx.share
        if ctx.comm.size > 1:
            g = ctx.comm.all_reduce_(g, "sum", "the gradients of the batch-norm statistics")
        return g[ctx.rank] / ctx.share, None, None


def _comm(group: Any) -> Comm:
    """The communicator over ``group``: a ``Comm`` as it is; a process group (``None``:
    the world) with the group's own timeout; one rank when not distributed."""
    if isinstance(group, Comm):
        return group
    if not (dist.is_available() and dist.is_initialized()):
        return Comm()
    return make_comm("world" if group is None else group)


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the batches of all ranks of
    ``group`` together (the running statistics too); eval mode, and a process without a
    process group, is plain batch norm. ``group``: a process group (``None``: the world;
    its waits time out as the group's do) or a :class:`~torchpint.runtime.comm.Comm`.

    Each rank's mean and variance are combined as Chan et al.'s parallel variance (no sum
    of squares, so a large mean costs no digits). Works with ``ProcessGrid``'s row-weighted gradient
    averaging, also when the replicas' shares of the batch differ by a row.

    A process group never leaves its process: a pickled copy (gathered to one rank, saved
    whole) normalises over its own batch alone, as plain batch norm; a deep copy in the
    same process shares the group.
    """

    def __init__(self, num_features: int, group: Any = None, **kwargs: Any) -> None:
        super().__init__(num_features, **kwargs)
        self.group = group  # a process group (None: the world) or a Comm

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["group"] = Comm()  # one rank: no messages wherever the copy lands
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> SyncBatchNorm:
        memo[id(self.group)] = self.group  # shared, never copied
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        batch_stats = self.training or not self.track_running_stats
        if not batch_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)  # fmt: skip
        shape = [1, -1] + [1] * (x.dim() - 2)
        dims = [0, *range(2, x.dim())]
        c, count = self.num_features, x.numel() // self.num_features
        var_d, mean_d = torch.var_mean(x, dim=dims, unbiased=False)
        local = torch.cat([mean_d, var_d, x.new_tensor([float(count)])])
        every = _GatherOverGroup.apply(local, _comm(self.group), float(count))  # (ranks, 2c+1)
        m_d, v_d, n_d = every[:, :c], every[:, c : 2 * c], every[:, 2 * c :].detach()
        n = n_d.sum()
        mean = (n_d * m_d).sum(0) / n
        var = (n_d * (v_d + (m_d - mean) ** 2)).sum(0) / n
        tracked = self.track_running_stats and self.running_mean is not None
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.training and tracked:
            self._update_running(mean.detach(), var.detach(), float(n))
        return y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        cumulative = 1.0 / float(self.num_batches_tracked)
        factor = cumulative if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def convert_sync_batchnorm(module: nn.Module, group: Any = None) -> nn.Module:
    """``module`` with every batch norm replaced by a :class:`SyncBatchNorm` over ``group``
    (a process group or a ``Comm``) that shares its parameters and buffers (so call it
    before building the optimizer). A module shared between several parents is replaced
    by one shared copy."""
    memo: dict[int, nn.Module] = {}

    def convert(m: nn.Module) -> nn.Module:
        if id(m) in memo:
            return memo[id(m)]
        new = m
        if isinstance(m, _BatchNorm) and not isinstance(m, SyncBatchNorm):
            new = SyncBatchNorm(m.num_features, group, eps=m.eps, momentum=m.momentum,
                                affine=m.affine, track_running_stats=m.track_running_stats)
            new.weight, new.bias = m.weight, m.bias
            new.running_mean, new.running_var = m.running_mean, m.running_var
            new.num_batches_tracked = m.num_batches_tracked
            new.train(m.training)
        memo[id(m)] = new
        for name, child in list(new.named_children()):
            new.add_module(name, convert(child))
        return new

    return convert(module)
