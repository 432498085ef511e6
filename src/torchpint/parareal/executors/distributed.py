"""The ``distributed`` executor: rank j of a torch.distributed group runs chunk j."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from torchpint.parareal.executors._autograd import (
    chunk_backward,
    chunk_forward,
    fine_stage,
    needs_grad,
    trainable,
)
from torchpint.parareal.executors.base import Executor, Stages


class DistributedExecutor(Executor):
    """Rank j of ``group`` (default: the world) computes fine chunk j.

    Every rank runs P, the coarse sweeps and Q redundantly on the same batch (they are
    cheap), so every rank returns the same output. Each iteration exchanges the chunk
    outputs with one all-reduce (every rank fills only its own slot, so the sum is exact),
    and the backward exchanges the gradients of the chunk inputs the same way. Nothing is
    summed over ranks: every rank computes the same loss, so the gradient each rank receives
    for its chunk's output is already the full one (no world-size factor).

    After ``backward`` rank j holds the gradients of P, of all coarse networks, of Q and of
    F_j; the other fine chunks' parameters get no gradient there and are not updated by
    the optimizer, which is fine since rank j never runs them. ``synchronize`` makes the
    replicas identical before a single one is saved or evaluated.
    """

    name = "distributed"
    spans_processes = True

    def __init__(self, group: Any = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "executor 'distributed' needs torch.distributed initialised "
                "(dist.init_process_group, e.g. under torchrun)"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    @classmethod
    def create(cls, devices: Any = None, group: Any = None) -> Executor:
        return cls(group)

    def clone(self) -> Executor:
        return DistributedExecutor(self.group)

    def _global(self, r: int) -> int:
        """The global rank of rank ``r`` of the group."""
        return dist.get_global_rank(self.group, r) if self.group is not None else r

    def _device(self, stages: Stages) -> torch.device:
        p = next(stages.fine[self.rank].parameters(), None)
        if p is not None:
            return p.device
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def bind(self, stages: Stages) -> None:
        if self.world != stages.num_chunks:
            raise ValueError(
                f"executor 'distributed' runs one fine chunk per rank: the network has "
                f"{stages.num_chunks} chunks but the group has {self.world} ranks"
            )
        # every rank must have cut the network in the same place
        mine = torch.tensor([b for r in stages.block_ranges for b in r], dtype=torch.long)
        mine = mine.to(self._device(stages))
        allr = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(allr, mine, group=self.group)
        if any(not torch.equal(a, mine) for a in allr):
            raise ValueError(
                "ranks split the network differently "
                f"({[a.tolist() for a in allr]}); pass cut_points=... or balance='flops' "
                "so every rank gets the same chunks"
            )

    def agree_cuts(self, cuts: list[int]) -> list[int]:
        """Rank 0's cut points (measured times differ between ranks)."""
        t = torch.tensor(cuts + [0], dtype=torch.long)
        if dist.get_backend(self.group) == "nccl":
            t = t.cuda()
        dist.broadcast(t, src=self._global(0), group=self.group)
        return t.tolist()[:-1]

    def barrier(self) -> None:
        dist.barrier(group=self.group)

    def synchronize(self, stages: Stages, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Each fine chunk's parameters and buffers from the rank that trains it, P, C and Q
        from rank 0; with ``optimizer``, each chunk's momentum buffers from its owner too,
        so a checkpoint written by rank 0 resumes every rank exactly."""
        owners = [
            (self._global(j), [*c.parameters(), *c.buffers()]) for j, c in enumerate(stages.fine)
        ]
        shared = [
            t
            for m in (stages.pre, *stages.coarse, stages.post)
            for t in [*m.parameters(), *m.buffers()]
        ]
        owners.append((self._global(0), shared))
        with torch.no_grad():
            for owner, tensors in owners:  # one broadcast per owner and dtype
                by_dtype: dict[tuple, list[torch.Tensor]] = {}
                for t in tensors:
                    by_dtype.setdefault((t.dtype, t.device), []).append(t)
                for ts in by_dtype.values():
                    buf = torch.cat([t.detach().reshape(-1) for t in ts])
                    dist.broadcast(buf, src=owner, group=self.group)
                    off = 0
                    for t in ts:
                        t.copy_(buf[off : off + t.numel()].view_as(t))
                        off += t.numel()
        if optimizer is not None:
            self._sync_momentum(stages, optimizer)

    def _sync_momentum(self, stages: Stages, optimizer: torch.optim.Optimizer) -> None:
        for j, chunk in enumerate(stages.fine):
            src = self._global(j)
            for p in chunk.parameters():
                if not p.requires_grad:
                    continue
                state = optimizer.state[p]
                buf = state.get("momentum_buffer")
                has = torch.tensor([0 if buf is None else 1], device=p.device)
                dist.broadcast(has, src=src, group=self.group)
                if not int(has):
                    continue
                if buf is None:
                    buf = torch.zeros_like(p)
                dist.broadcast(buf, src=src, group=self.group)
                state["momentum_buffer"] = buf

    def _exchange(self, slots: dict[int, torch.Tensor | None], metas: list, dev: Any) -> list:
        """All ranks get every slot; the owner of slot i fills it, the others zeros."""
        sizes = [int(torch.Size(s).numel()) for s, _ in metas]
        dtype = metas[0][1]
        buf = torch.zeros(sum(sizes), dtype=dtype, device=dev)
        offs = [0]
        for s in sizes:
            offs.append(offs[-1] + s)
        for i, t in slots.items():
            if t is not None:
                buf[offs[i] : offs[i + 1]].copy_(t.reshape(-1))
        dist.all_reduce(buf, group=self.group)
        return [buf[offs[i] : offs[i + 1]].view(metas[i][0]).clone() for i in range(len(metas))]

    def run(
        self, stages: Stages, inputs: dict[int, torch.Tensor], like: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        js = tuple(inputs)
        mine = self.rank in inputs
        if not needs_grad(stages, inputs):
            out = {}
            if mine:
                out[js.index(self.rank)] = stages.fine[self.rank](inputs[self.rank])
            metas = [(like[j].shape, like[j].dtype) for j in js]
            res = self._exchange(out, metas, next(iter(inputs.values())).device)
            return dict(zip(js, res, strict=True))
        params = trainable(stages.fine[self.rank]) if mine else []
        return fine_stage(self, stages, inputs, like, params)

    def fine_forward(self, stages: Stages, js: tuple, metas: list, xs: tuple) -> tuple:
        state = None
        out = {}
        if self.rank in js:
            i = js.index(self.rank)
            xi, o = chunk_forward(stages, self.rank, xs[i])
            state = (i, xi, o)
            out[i] = o.detach()
        return state, self._exchange(out, metas, xs[0].device)

    def fine_backward(self, ctx: Any, out_grads: tuple) -> tuple[list, list]:
        p_grads: list = []
        local = {}
        if ctx.state is not None:
            i, xi, o = ctx.state
            gx, p_grads = chunk_backward(ctx.stages, self.rank, xi, o, out_grads[i])
            local[i] = gx
        dev = ctx.in_meta[0][2]
        metas = [(s, dt) for s, dt, _ in ctx.in_meta]
        in_grads = self._exchange(local, metas, dev)
        return in_grads, p_grads
