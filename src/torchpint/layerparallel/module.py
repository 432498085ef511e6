"""``LayerParallel``: a residual network whose forward and backward passes are MGRIT solves
across its layers (layer-parallel training, Günther et al. 2020; TorchBraid's method).

Forward: ``fwd_iterations`` MGRIT iterations on the layers; the last one's final fine
sweep (XBraid's "done" sweep) records each step's graph ``y_k = Phi_k(x_k)``, and the
output is ``y_{N-1}``. Backward: ``bwd_iterations`` MGRIT iterations on the adjoint, whose
steps are vector-Jacobian products of those graphs (coarse ones linearised at the fine
states); its final sweep takes the parameter gradients ``(dPhi_k / dtheta_k)^T
lambda_{k+1}`` in the same autograd calls. Each solve starts as ``fwd_start`` and
``bwd_start`` say: by XBraid's skip, from the previous batch's solution (a warm start,
kept in ``state_dict()`` so a resumed run goes on bit for bit) or cold. With one level,
or enough iterations, the gradient is ordinary backprop's. With ``spatial=`` the coarse
levels run on coarsened states (:mod:`.spatial`).

Distributed (``group=``), each rank holds a slab of the layers (:mod:`.layout`): rank 0
also runs ``open``, the last rank ``close``, and the output is sent to every rank. On a
process grid, D such networks train data-parallel replicas (:mod:`.replicas`).
"""

from __future__ import annotations

import copy
import math
import pickle
import time
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torchpint.common.modules import flat_state, load_flat_state
from torchpint.common.seeds import mix_seed
from torchpint.core import MGRIT
from torchpint.core.grid import Grid, require_int
from torchpint.layerparallel.functions import FromLast, Solve, told
from torchpint.layerparallel.layout import Layout
from torchpint.layerparallel.problems import (
    AdjointProblem,
    ForwardProblem,
    ResidualStep,
    StepGraphs,
    check_layers,
)
from torchpint.layerparallel.replicas import Replicas
from torchpint.layerparallel.report import SolveReport
from torchpint.layerparallel.settings import (
    STARTS,
    StepLayers,
    check_solves,
    relaxation,
    renamed,
    step_layers,
)
from torchpint.layerparallel.spatial import (
    CoarsenedAdjoint,
    CoarsenedForward,
    SpatialLevels,
    Spec,
)
from torchpint.runtime.comm import Comm, GroupComm
from torchpint.trainer import RankAware

_TAG_EDGE = 11
_RANDOM = (nn.modules.dropout._DropoutNd, nn.RReLU)
__all__ = ["STARTS", "LayerParallel", "ResidualStep"]


class LayerParallel(nn.Module, RankAware):
    """``close(Phi_{N-1} o ... o Phi_0(open(x)))`` with the steps solved by MGRIT.

    Args:
        open, close: ordinary modules run before and after the steps (e.g. a conv lifting
            the input to C channels; pooling and a linear classifier).
        steps: the N step layers, or ``make(k) -> layer`` with ``num_steps=N`` (a rank
            then builds only what it holds). ``layer(x)`` gives F in ``x + h F(x)``; a
            layer whose ``forward`` takes ``(x, h)`` returns the new state itself.
        T: the time horizon; ``h = T / N``.
        levels, cfactor: the MGRIT hierarchy (N must be divisible by
            ``cfactor ** (levels - 1)``, so the adjoint's reversed grid has the same
            C-points).
        relax: ``"F"``, ``"FCF"`` or one per level but the coarsest (default
            TorchBraid's: F on the fine level, FCF on the coarse ones; FCF on every level
            whose next one is spatially coarsened, without which it cannot converge).
        fwd_iterations, bwd_iterations: MGRIT iterations per forward and backward pass
            (TorchBraid's defaults 2 and 1; ``fwd_iters``/``bwd_iters`` are their
            deprecated spellings).
        fwd_start, bwd_start: how each solve's first iteration starts: ``"skip"``
            (XBraid's skip: no work on the way down, the coarsest level propagates the
            initial state), ``"warm"`` (from the previous batch's solution; in the
            checkpoint) or ``"cold"`` (zeros).
        group: ``None`` (one process), ``"world"`` or a process group: each rank keeps
            its slab of layers (``self.steps``, global indices ``self.layers``); rank 0
            keeps ``open``, the last rank ``close``. Feed every rank the same batches.
            A :class:`~torchpint.common.process_grid.ProcessGrid` (``process_grid(S, D)``):
            D replicas on S ranks each, each on its rows of every batch (:meth:`shard_batch`),
            gradients averaged by rows at the end of each backward (:mod:`.replicas`).
        replica_bn: batch norm on a grid of replicas: ``"sync"`` (the whole batch's
            statistics: training equals one replica with the whole batch) or
            ``"local"`` (each replica's rows, as DDP; no messages).
        timeout: seconds to wait for a peer rank before raising (default: the grid's,
            else the group's own, else 300).
        keyed_rng: draw each layer's random numbers (dropout masks) from a generator
            keyed by (batch, layer), so every MGRIT iteration sees the same masks;
            ``None``: when a step holds dropout.
        spatial: spatial coarsening (:mod:`.spatial`): ``None`` (off), ``"nearest"`` or
            ``"bilinear"`` (coarse levels on 2x average-pooled ``(B, C, H, W)`` states,
            the corrections interpolated so), a :class:`~.spatial.Transfer`, or one of
            these per coarsening (``None`` where a level keeps the previous one's state).
    """

    def __init__(
        self,
        open: nn.Module,
        steps: StepLayers,
        close: nn.Module,
        *,
        num_steps: int | None = None,
        T: float = 1.0,
        levels: int = 3,
        cfactor: int = 4,
        relax: str | Sequence[str] | None = None,
        fwd_iterations: int = 2,
        bwd_iterations: int = 1,
        fwd_start: str = "warm",
        bwd_start: str = "cold",
        group: Any = None,
        replica_bn: str = "sync",
        timeout: float | None = None,
        keyed_rng: bool | None = None,
        fwd_iters: int | None = None,
        bwd_iters: int | None = None,
        spatial: Spec | Sequence[Spec] = None,
    ) -> None:
        super().__init__()
        fwd_iterations = renamed("fwd_iters", fwd_iters, "fwd_iterations", fwd_iterations)
        bwd_iterations = renamed("bwd_iters", bwd_iters, "bwd_iterations", bwd_iterations)
        n, make = step_layers(steps, num_steps)
        check_solves(n, T, levels, cfactor, fwd_iterations, bwd_iterations, fwd_start,
                     bwd_start)
        self.spatial: SpatialLevels | None = SpatialLevels.of(spatial, levels)
        self.relax = relaxation(relax, levels, self.spatial)
        grid = Grid(n, cfactor, levels)
        spacing = tuple(math.prod(grid.m[:l]) for l in range(grid.num_levels))
        group, timeout, self.replicas = Replicas.of(group, timeout, replica_bn)
        self.comm: Comm = Comm() if group is None else GroupComm(group, timeout)
        self._rcomm: Comm = Comm() if group is None else GroupComm(group, timeout, True)
        rank, size = self.comm.rank, self.comm.size
        self.layout = Layout.of(n, rank, size, spacing)
        owned = self.layout.layers
        get = make if make is not None else (lambda k: steps[k])
        self.open = open if rank == 0 else None
        self.steps = nn.ModuleList([get(k) for k in owned])
        self.close = close if rank == size - 1 else None
        # Copies of the layers on other ranks that this rank's coarse steps use (not
        # parameters of this module: their weights arrive before every forward solve).
        self._edges = {k: copy.deepcopy(get(k)) if make is None else get(k)
                       for r, k in self.layout.edges() if r == rank}
        self.num_steps, self.T, self.levels, self.cfactor = n, float(T), int(levels), int(cfactor)
        self.fwd_iterations, self.bwd_iterations = int(fwd_iterations), int(bwd_iterations)
        self.fwd_start, self.bwd_start = fwd_start, bwd_start
        self._built = (self.fwd_iterations, self.bwd_iterations, self.levels)  # for retune
        self.fwd_residuals: list[float] = []  # of the last forward solve
        self.bwd_residuals: list[float] = []  # of the last adjoint solve
        # seconds of the last batch: each solve's wall time and the part of it spent in
        # the steps (the rest is the solver's bookkeeping and communication)
        self.timings: dict[str, float] = {}
        # steps per level of the last solves (the adjoint's of a zero state cost nothing
        # and are not counted)
        self.step_counts: dict[str, list[int]] = {}
        self._fwd: tuple[ForwardProblem, MGRIT] | None = None
        self._adj: tuple[AdjointProblem, MGRIT] | None = None
        self._meta: dict[Any, tuple[torch.Size, torch.dtype]] = {}
        self._warm: dict[str, torch.Tensor] = {}  # loaded warm starts, for the next solvers
        self.register_load_state_dict_pre_hook(_old_checkpoint)
        # the graphs of the last forward with autograd: their states are views of the
        # forward solver's fine buffer, which the next solve leaves to them while they live
        self._recorded: weakref.ref[StepGraphs] | None = None
        if keyed_rng is None:
            keyed_rng = any(isinstance(m, _RANDOM) for m in self.steps.modules())
            keyed_rng = bool(self._agree(float(keyed_rng), "max"))
        if keyed_rng:  # one seed for all ranks; the batch count makes each batch's masks
            seed = self._agree(float(torch.randint(2**52, ()).item()), "first")
            self.register_buffer("rng_seed", torch.tensor(int(seed)))
            self.register_buffer("batches", torch.zeros((), dtype=torch.int64))
        self.keyed_rng = bool(keyed_rng)
        if self.replicas is not None:  # batch norm over the replicas, their own seeds
            self.replicas.attach(self)

    # -- layout ---------------------------------------------------------------------------
    @property
    def h(self) -> float:
        """The step size ``T / N``."""
        return self.T / self.num_steps

    @property
    def layers(self) -> range:
        """The global indices of this rank's step layers (``self.steps``)."""
        return self.layout.layers

    @property
    def fwd_iters(self) -> int:
        """The old name of :attr:`fwd_iterations`."""
        return self.fwd_iterations

    @property
    def bwd_iters(self) -> int:
        """The old name of :attr:`bwd_iterations`."""
        return self.bwd_iterations

    @property
    def report(self) -> SolveReport:
        """The last batch's forward and adjoint solves, as one result object."""
        return SolveReport(list(self.fwd_residuals), list(self.bwd_residuals),
                           dict(self.timings), {k: list(v) for k, v in self.step_counts.items()})

    # -- how fit sees it (trainer.RankAware) --------------------------------------------
    def fit_comm(self) -> Comm:
        """The ranks holding the slabs of the layers; on a grid, every replica's."""
        return self.comm if self.replicas is None else self.replicas.world

    def sharded_state(self) -> bool:
        """Each rank holds other layers (or another replica's warm starts): every rank
        checkpoints its own part."""
        return self.fit_comm().size > 1

    @property
    def shard_comm(self) -> Comm | None:
        """:meth:`fit_comm` when each rank holds a different part, else ``None``."""
        return self.fit_comm() if self.sharded_state() else None

    def shard_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This replica's rows of the batch on a grid; the whole batch otherwise."""
        if self.replicas is None:
            return x, y
        x, y = self.replicas.grid.shard(x, y)
        return x, y

    def sum_over_replicas(self, values: list[float]) -> list[float]:
        return values if self.replicas is None else self.replicas.grid.sum(values)

    def synchronize(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """On a grid, the replicas' weights and running statistics := replica 0's."""
        if self.replicas is not None:
            self.replicas.synchronize(self)

    def _agree(self, value: float, how: str) -> float:
        """``value`` from rank 0 (``"first"``) or the largest over the ranks."""
        if self.comm.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        what = "the layer-parallel settings"
        out = self.comm.broadcast(t, 0, what) if how == "first" else \
            self.comm.all_reduce(t, "max", what)
        return float(out.item())

    def serial(self) -> nn.Sequential | None:
        """The same network as an ordinary ``nn.Sequential``, for exact serial forward and
        backprop: checking and inference. In one process it shares this module's layers;
        distributed, rank 0 gets a copy of all of them (TorchBraid's buildSequentialOnRoot)
        and the other ranks ``None`` (on a grid: rank 0 of each replica, with batch norm
        local); every rank must call it."""
        if self.comm.size == 1 and self.replicas is None:
            return nn.Sequential(self.open, *(ResidualStep(m, self.h) for m in self.steps),
                                 self.close)
        parts = self._gather((self.open, list(self.steps), self.close))
        if parts is None:
            return None
        layers = [m for _, mods, _ in parts for m in mods]
        return nn.Sequential(parts[0][0], *(ResidualStep(m, self.h) for m in layers),
                             parts[-1][2])

    def gathered_grads(self) -> torch.Tensor | None:
        """All parameter gradients in the order of :meth:`serial`'s parameters, on rank 0
        (``None`` elsewhere); zeros where a gradient is missing. Every rank must call it."""
        mine = [torch.zeros_like(p) if p.grad is None else p.grad.detach()
                for p in self.parameters()]
        local = torch.cat([g.reshape(-1) for g in mine]).cpu() if mine else torch.zeros(0)
        if self.comm.size == 1:
            return local
        parts = self._gather(local)
        return None if parts is None else torch.cat(parts)

    def _gather(self, obj: Any) -> list[Any] | None:
        """``obj`` of every rank, in rank order, on rank 0 (``None`` elsewhere), copied
        as a message copies it (pickled: batch norm over replicas turns local)."""
        if self.comm.size == 1:
            return [pickle.loads(pickle.dumps(obj))]
        return self.comm.gather_object(obj, 0, "the layers' shards")

    # -- the two solves -------------------------------------------------------------------
    def _solver(self, iters: int, problem: Any, comm: Comm, slabs: list[int], start: str
                ) -> MGRIT:
        relax = self.relax if isinstance(self.relax, str) else self.relax[: self.levels - 1]
        return MGRIT(problem, cfactor=self.cfactor, levels=self.levels, relax=relax,
                     iterations=iters, divergence_factor=math.inf, group=comm,
                     slabs=slabs if comm.size > 1 else None, skip=start == "skip")

    @staticmethod
    def _matches(problem: Any, u: torch.Tensor) -> bool:
        """Whether a kept solver's buffers fit state ``u`` (same shape, dtype, device)."""
        ref = problem.initial_state()
        return ref.shape == u.shape and ref.dtype == u.dtype and ref.device == u.device

    def _send_edges(self, ref: torch.Tensor) -> None:
        """Send the current weights of this rank's layers that other ranks' coarse steps
        use, and receive those this rank's use (one message per pair, once per forward;
        the solve's first iteration checks that the sends completed)."""
        if self.comm.size == 1:
            return
        for r, k in self.layout.edges():
            if self.layout.owner(k) == self.comm.rank:
                layer = self.steps[k - self.layers.start]
                self.comm.send(flat_state(layer), r, _TAG_EDGE, f"the weights of layer {k}")
        p = next(iter(self.steps.parameters()), ref)  # where and in what the layers are
        for k, layer in self._edges.items():
            layer.to(device=p.device, dtype=p.dtype).train(self.training)
            buf = flat_state(layer)
            self.comm.recv_into(buf, self.layout.owner(k), _TAG_EDGE, f"the weights of layer {k}")
            load_flat_state(layer, buf)

    def forward_solve(self, u0: torch.Tensor, grad: bool = True) -> StepGraphs:
        """MGRIT on the steps from ``u0``: the batch's step graphs, recorded by the solve's
        final sweep (with ``grad``; else only the last layer's output is kept), at the fine
        states of this rank's layers (views of the solver's fine buffer). The solver is
        kept while the batch shape stays, and starts as ``fwd_start`` says."""
        t0 = time.perf_counter()
        u0 = u0.detach()
        self._send_edges(u0)
        lent = self._recorded is not None and self._recorded() is not None
        self._recorded = None
        if self._fwd is not None and self._matches(self._fwd[0], u0):
            problem, solver = self._fwd
            if lent:  # an earlier forward's graphs, not yet backpropagated, use the buffer:
                solver.release_fine()  # they keep it, the solver goes on in a copy
            problem.prepare(u0)
            warm = self.fwd_start == "warm"
        else:
            layers = {**self._edges, **dict(zip(self.layers, self.steps, strict=True))}
            args = (layers, self.num_steps, self.T, u0)
            problem = ForwardProblem(*args) if self.spatial is None else \
                CoarsenedForward(self.spatial, *args)
            solver = self._solver(self.fwd_iterations, problem, self.comm,
                                  self.layout.forward_slabs(), self.fwd_start)
            self._fwd = (problem, solver)
            warm = self.fwd_start == "warm" and self._load_warm("forward", solver)
        problem.seed = self._batch_seed()
        graphs = problem.recorder = StepGraphs(problem, self.layers, grad)
        try:
            with torch.no_grad():  # (the steps need no context each; the sweep records)
                res = solver.solve(u0, warm_start=warm, copy=False)
        finally:
            problem.recorder = None
        graphs.states = _rows(res)
        self.fwd_residuals = list(res.residuals)
        self.timings = {"forward_solve": time.perf_counter() - t0,
                        "forward_steps": res.timings["step"]}
        self.step_counts = {"forward": list(res.step_counts)}
        return graphs

    def adjoint_solve(self, graphs: StepGraphs, g: torch.Tensor
                      ) -> tuple[torch.Tensor | None, dict[torch.Tensor, torch.Tensor]]:
        """MGRIT on the adjoint from ``g = dL/du_N`` (on the last rank) over the batch's
        recorded step graphs: ``dL/du_0`` (rank 0; ``None`` elsewhere) and the gradients
        of this rank's parameters, which the solve's final sweep gathers. The solver is
        kept while the shape stays, and starts as ``bwd_start`` says."""
        t0 = time.perf_counter()
        g = g.detach()
        if self._adj is not None and self._matches(self._adj[0], g):
            adjoint, solver = self._adj
            adjoint.prepare(graphs, g)
            warm = self.bwd_start == "warm"
        else:
            adjoint = AdjointProblem(graphs, g) if self.spatial is None else \
                CoarsenedAdjoint(self.spatial, graphs, g)
            solver = self._solver(self.bwd_iterations, adjoint, self._rcomm,
                                  self.layout.adjoint_slabs(), self.bwd_start)
            self._adj = (adjoint, solver)
            warm = self.bwd_start == "warm" and self._load_warm("adjoint", solver)
        try:
            res = solver.solve(g, warm_start=warm, copy=False)
            grads = adjoint.param_grads
        finally:
            adjoint.prepare(None, g)  # the kept solver must not keep this batch's graphs
        self.bwd_residuals = list(res.residuals)
        self.timings.update(adjoint_solve=time.perf_counter() - t0,
                            adjoint_steps=res.timings["step"])
        zero = graphs.zero_steps  # steps of a zero adjoint state cost nothing
        self.step_counts["adjoint"] = [c - zero.get(l, 0) for l, c in enumerate(res.step_counts)]
        return (res.u[-1].clone() if self.comm.rank == 0 else None), grads

    def retune(self, *, fwd_iterations: int | None = None, bwd_iterations: int | None = None,
               levels: int | None = None) -> None:
        """Change the solves between two batches (an adaptive schedule: :mod:`.adaptive`):
        the iterations, or fewer levels than built (1: exact solves, backprop's gradient).
        Every rank calls it alike. Warm starts carry over; ``state_dict`` keeps the new
        settings, so a resumed run solves as the uninterrupted one."""
        fwd = self.fwd_iterations if fwd_iterations is None else fwd_iterations
        bwd = self.bwd_iterations if bwd_iterations is None else bwd_iterations
        levels = self.levels if levels is None else levels
        for name, k in (("fwd_iterations", fwd), ("bwd_iterations", bwd), ("levels", levels)):
            require_int(name, k, 1)
        if levels > self._built[2]:
            raise ValueError(f"retune(levels={levels}): this network was built with "
                             f"{self._built[2]} levels, the most it can solve on")
        self._warm = {k: v for k, v in self.get_extra_state().items()
                      if k in ("forward", "adjoint") and v is not None}
        self._fwd = self._adj = None  # the next batch builds solvers with the new settings
        self.fwd_iterations, self.bwd_iterations, self.levels = int(fwd), int(bwd), int(levels)

    def _load_warm(self, which: str, solver: MGRIT) -> bool:
        """Copy a loaded warm start (:meth:`set_extra_state`) into a new solver when its
        shape fits: whether the solve starts from it."""
        warm = self._warm.pop(which, None)
        fits = warm is not None and warm.shape == solver.fine.shape
        if fits:
            solver.fine.copy_(warm)
        return fits

    def get_extra_state(self) -> dict[str, torch.Tensor | None]:
        """This rank's warm starts of the next solves (``"warm"`` starts): the last ones'
        fine iterates (its slab), on the CPU; ``None`` before the first or otherwise; and
        the ``"solves"`` of :meth:`retune`, when retuned."""
        state: dict[str, torch.Tensor | None] = {}
        for which, start, kept in (("forward", self.fwd_start, self._fwd),
                                   ("adjoint", self.bwd_start, self._adj)):
            if start != "warm":
                state[which] = None
            elif kept is None:
                state[which] = self._warm.get(which)
            else:
                state[which] = kept[1].fine.detach().to("cpu", copy=True)
        settings = (self.fwd_iterations, self.bwd_iterations, self.levels)
        if settings != self._built:  # retuned: (fwd_iterations, bwd_iterations, levels)
            state["solves"] = torch.tensor(settings)
        return state

    def set_extra_state(self, state: dict[str, torch.Tensor | None]) -> None:
        """The next solves start from ``state``'s warm starts where their shapes fit the
        batch, else cold, as they would have after the run that saved them."""
        self._fwd = self._adj = None
        state = dict(state)
        fwd, bwd, levels = state.pop("solves", torch.tensor(self._built)).tolist()
        self.fwd_iterations, self.bwd_iterations, self.levels = fwd, bwd, levels
        self._warm = {k: v for k, v in state.items() if v is not None}

    def _batch_seed(self) -> int | None:
        """This batch's mask seed (the batch count moves on with each training forward)."""
        return mix_seed(int(self.rng_seed), int(self.batches)) if self.keyed_rng else None

    # -- the module -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_layers(self.steps)
        rank, last, grad = self.comm.rank, self.comm.size - 1, torch.is_grad_enabled()
        if self.keyed_rng and self.training and grad:
            self.batches += 1
        u0 = self.open(x) if self.open is not None else None
        key = (tuple(x.shape), x.dtype)
        if self.comm.size > 1:  # the others learn the state's shape from rank 0
            shape, dtype = told(self.comm, self._meta, ("state", key), u0, 0)
            if u0 is None:
                u0 = torch.zeros(shape, dtype=dtype, device=x.device)
        if not u0.requires_grad:  # so every rank joins the backward solve
            u0 = u0.detach().requires_grad_(grad)
        params = [p for p in self.steps.parameters() if p.requires_grad]
        y = Solve.apply(self, grad, u0, *params)
        out = self.close(y) if rank == last else y
        if self.comm.size > 1:
            shape, _ = told(self.comm, self._meta, ("output", key),
                            out if rank == last else None, last)
            out = FromLast.apply(self.comm, out, shape)
        if self.replicas is not None:
            out = self.replicas.average.wrap(out, self.parameters, len(x))
        return out


def _old_checkpoint(module: nn.Module, state: dict[str, Any], prefix: str,
                    *_: Any) -> None:
    """A state dict saved before the warm start was in it loads, the next solve cold."""
    state.setdefault(prefix + "_extra_state", {"forward": None})



def _rows(res: Any) -> list[torch.Tensor]:
    """The states of a solve that start this rank's steps: its ghost point (if any) and
    its points but the last."""
    rows = list(res.u[:-1])
    return rows if res.ghost is None else [res.ghost, *rows]
