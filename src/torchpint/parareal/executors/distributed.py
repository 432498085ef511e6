"""The ``distributed`` executor: rank j of a torch.distributed group runs chunk j, and,
on a :class:`ProcessGrid`, D such groups train data-parallel replicas.

Every message goes through the floor's communicator (:class:`GroupComm`), so a peer that
died, hung or closed its connection is a typed ``PeerError`` within the executor's
``timeout``, never a hang or a backend traceback."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from torchpint.common.process_grid import ReplicaAverage
from torchpint.parareal.executors._autograd import (
    chunk_backward,
    chunk_forward,
    fine_stage,
    needs_grad,
    trainable,
    unique_trainable,
)
from torchpint.parareal.executors.base import Executor, Stages
from torchpint.parareal.executors.grid import ProcessGrid
from torchpint.runtime.comm import Comm, GroupComm, group_timeout


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

    With ``group`` a :class:`ProcessGrid` of D replicas, rank j of each replica's group runs
    chunk j on that replica's share of the batch, and a backward through the network's
    output averages the gradients of everything the rank trains (P, C, Q and F_j) over the
    D ranks that hold chunk j, weighted by their rows: one all-reduce per step, run when
    the backward ends. For a loss that is a mean over the batch this is the gradient of
    the whole batch (batch norm aside: see ``convert_sync_batchnorm``).

    ``timeout``: seconds any message waits for a peer before a ``RankTimeoutError`` (a
    ``PeerClosedError`` when the peer's connection closed). Default: the grid's, else the
    group's own (``init_distributed``'s), else 300.
    """

    name = "distributed"
    spans_processes = True

    def __init__(self, group: Any = None, timeout: float | None = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "executor 'distributed' needs torch.distributed initialised "
                "(dist.init_process_group, e.g. under torchrun)"
            )
        grid = group if isinstance(group, ProcessGrid) else None
        self.grid = grid
        self.group = grid.chunk_group if grid is not None else group
        if timeout is None:
            timeout = grid.timeout if grid is not None else group_timeout(self.group)
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self._chunks = GroupComm(self.group, self.timeout)  # the N ranks of one network
        self.rank, self.world = self._chunks.rank, self._chunks.size
        # every rank that trains the network (on a grid: the world, all replicas), over
        # which agree_cuts and barrier run; gradients are averaged over the replicas
        self._comm = GroupComm(None, self.timeout) if grid is not None else self._chunks
        self._replicas = GroupComm(grid.data_group, self.timeout) if grid is not None else None
        self._average = ReplicaAverage(self._replicas) if self._replicas is not None else None

    @classmethod
    def create(cls, devices: Any = None, group: Any = None,
               timeout: float | None = None) -> Executor:
        return cls(group, timeout)

    @property
    def comm(self) -> Comm:
        """The communicator over every rank that trains this network together: the group
        of its chunks, or on a grid the world (every replica's)."""
        return self._comm

    def clone(self) -> Executor:
        return DistributedExecutor(self.grid or self.group, self.timeout)

    @property
    def _replicated(self) -> bool:
        return self.grid is not None and self.grid.replicas > 1

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
        allr = self._chunks.all_gather(mine, "the chunks' block ranges")
        if any(not torch.equal(a, mine) for a in allr):
            raise ValueError(
                "ranks split the network differently "
                f"({[a.tolist() for a in allr]}); pass cut_points=... or balance='flops' "
                "so every rank gets the same chunks"
            )

    def agree_cuts(self, cuts: list[int]) -> list[int]:
        """Rank 0's cut points (measured times differ between ranks; on a grid, the
        world's rank 0 decides for every replica)."""
        t = torch.tensor(cuts + [0], dtype=torch.long)
        return self._comm.broadcast(t, 0, "the cut points").tolist()[:-1]

    def barrier(self) -> None:
        """Wait for every rank (of the world, on a grid), with the executor's timeout."""
        self._comm.barrier("the parareal executor")

    def output(self, stages: Stages, y: torch.Tensor) -> torch.Tensor:
        """On a grid of several replicas, ``y`` behind a node whose backward averages the
        gradients over the replicas once the backward ends."""
        if self._average is None:
            return y

        def trained() -> list[torch.Tensor]:
            return unique_trainable([stages.pre, *stages.coarse, stages.post,
                                     stages.fine[self.rank]])

        return self._average.wrap(y, trained, len(y))

    def synchronize(self, stages: Stages, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Each fine chunk's parameters and buffers from the rank that trains it, P, C and Q
        from rank 0; with ``optimizer``, each chunk's momentum buffers from its owner too,
        so a checkpoint written by rank 0 resumes every rank exactly."""
        owners = [(j, [*c.parameters(), *c.buffers()]) for j, c in enumerate(stages.fine)]
        shared = [
            t
            for m in (stages.pre, *stages.coarse, stages.post)
            for t in [*m.parameters(), *m.buffers()]
        ]
        owners.append((0, shared))
        for owner, tensors in owners:
            self._broadcast(tensors, owner, self._chunks, f"chunk {owner}'s weights")
        if optimizer is not None:
            self._sync_momentum(stages, optimizer)
        if self._replicated:  # the replicas' batch-norm statistics: replica 0's
            assert self._replicas is not None
            modules = (stages.pre, *stages.fine, *stages.coarse, stages.post)
            tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
            self._broadcast(tensors, 0, self._replicas, "replica 0's weights")

    @staticmethod
    @torch.no_grad()
    def _broadcast(tensors: list[torch.Tensor], src: int, comm: Comm, what: str) -> None:
        """``tensors`` := rank ``src`` of ``comm``'s, one broadcast per dtype and device."""
        by_kind: dict[tuple, list[torch.Tensor]] = {}
        for t in tensors:
            by_kind.setdefault((t.dtype, t.device), []).append(t)
        for ts in by_kind.values():
            buf = torch.cat([t.detach().reshape(-1) for t in ts])
            comm.broadcast_(buf, src, what)
            off = 0
            for t in ts:
                t.copy_(buf[off : off + t.numel()].view_as(t))
                off += t.numel()

    def _sync_momentum(self, stages: Stages, optimizer: torch.optim.Optimizer) -> None:
        for j, chunk in enumerate(stages.fine):
            what = f"chunk {j}'s momentum"
            for p in chunk.parameters():
                if not p.requires_grad:
                    continue
                state = optimizer.state[p]
                buf = state.get("momentum_buffer")
                has = torch.tensor([0 if buf is None else 1], device=p.device)
                if not int(self._chunks.broadcast_(has, j, what)):
                    continue
                if buf is None:
                    buf = torch.zeros_like(p)
                state["momentum_buffer"] = self._chunks.broadcast_(buf, j, what)

    def _exchange(
        self, slots: dict[int, torch.Tensor | None], metas: list, dev: Any, what: str
    ) -> list:
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
        self._chunks.all_reduce_(buf, "sum", what)
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
            res = self._exchange(out, metas, next(iter(inputs.values())).device,
                                 "the chunk outputs")
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
        return state, self._exchange(out, metas, xs[0].device, "the chunk outputs")

    def fine_backward(self, ctx: Any, out_grads: tuple) -> tuple[list, list]:
        p_grads: list = []
        local = {}
        if ctx.state is not None:
            i, xi, o = ctx.state
            gx, p_grads = chunk_backward(ctx.stages, self.rank, xi, o, out_grads[i])
            local[i] = gx
        dev = ctx.in_meta[0][2]
        metas = [(s, dt) for s, dt, _ in ctx.in_meta]
        in_grads = self._exchange(local, metas, dev, "the gradients of the chunk inputs")
        return in_grads, p_grads
