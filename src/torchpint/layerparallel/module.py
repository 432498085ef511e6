"""``LayerParallel``: a residual network whose forward and backward passes are MGRIT solves
across its layers (layer-parallel training, Günther et al. 2020; TorchBraid's method).

Forward: ``fwd_iters`` MGRIT iterations on the layers (warm-started from the previous
batch's solution when the shapes match), then one fine sweep from the MGRIT states that
records each step's graph, ``y_k = Phi_k(x_k)``; the output is ``y_{N-1}``. Backward:
``bwd_iters`` MGRIT iterations on the adjoint, whose steps are vector-Jacobian products of
those graphs (coarse ones linearised at the fine states), then the parameter gradients
``(dPhi_k / dtheta_k)^T lambda_{k+1}`` from the recorded graphs in one autograd call.
With one level, or enough iterations, the gradient is ordinary backprop's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torchpint.core import MGRIT
from torchpint.core.grid import require_int
from torchpint.core.mgrit import RELAXATIONS
from torchpint.layerparallel.problems import (
    AdjointProblem,
    ForwardProblem,
    StepGraphs,
    takes_step_size,
)

_TINY = 1e-300  # a fixed iteration count, not a tolerance, ends the solves


class ResidualStep(nn.Module):
    """``x + h layer(x)`` (or ``layer(x, h)``): one step of :meth:`LayerParallel.serial`."""

    def __init__(self, layer: nn.Module, h: float) -> None:
        super().__init__()
        self.layer, self.h = layer, float(h)
        self._with_h = takes_step_size(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, self.h) if self._with_h else x + self.h * self.layer(x)


class LayerParallel(nn.Module):
    """``close(Phi_{N-1} o ... o Phi_0(open(x)))`` with the steps solved by MGRIT.

    Args:
        open, close: ordinary modules run before and after the steps (e.g. a conv lifting
            the input to C channels; pooling and a linear classifier).
        steps: the N step layers; ``layer(x)`` gives F in ``x + h F(x)``, a layer whose
            ``forward`` takes ``(x, h)`` returns the new state itself.
        T: the time horizon; ``h = T / N``.
        levels, cfactor, relax: the MGRIT hierarchy (N must be divisible by
            ``cfactor ** (levels - 1)``, so the adjoint's reversed grid has the same
            C-points).
        fwd_iters, bwd_iters: MGRIT iterations per forward and backward pass (TorchBraid's
            defaults 2 and 1).
    """

    def __init__(
        self,
        open: nn.Module,
        steps: Sequence[nn.Module],
        close: nn.Module,
        *,
        T: float = 1.0,
        levels: int = 3,
        cfactor: int = 4,
        relax: str = "F",
        fwd_iters: int = 2,
        bwd_iters: int = 1,
    ) -> None:
        super().__init__()
        n = len(steps)
        if n < 1:
            raise ValueError("LayerParallel needs at least one step layer")
        if not (isinstance(T, (int, float)) and math.isfinite(T) and T > 0):
            raise ValueError(f"T must be a finite number > 0, got {T!r}")
        if relax not in RELAXATIONS:
            raise ValueError(f"relax must be one of {RELAXATIONS}, got {relax!r}")
        for name, k, least in (("fwd_iters", fwd_iters, 1), ("bwd_iters", bwd_iters, 1),
                               ("levels", levels, 1), ("cfactor", cfactor, 2)):
            require_int(name, k, least)
        if n % cfactor ** (levels - 1):
            raise ValueError(
                f"{n} steps cannot make {levels} levels with cfactor {cfactor}: N must be "
                f"divisible by cfactor^(levels-1) = {cfactor ** (levels - 1)}. Use "
                f"{n - n % cfactor ** (levels - 1) or cfactor ** (levels - 1)} steps, fewer "
                "levels or a smaller cfactor."
            )
        self.open, self.steps, self.close = open, nn.ModuleList(steps), close
        self.T, self.levels, self.cfactor, self.relax = float(T), int(levels), int(cfactor), relax
        self.fwd_iters, self.bwd_iters = int(fwd_iters), int(bwd_iters)
        self.fwd_residuals: list[float] = []  # of the last forward solve
        self.bwd_residuals: list[float] = []  # of the last adjoint solve
        self._fwd: tuple[ForwardProblem, MGRIT] | None = None
        self._adj: tuple[AdjointProblem, MGRIT] | None = None

    @property
    def h(self) -> float:
        """The step size ``T / N``."""
        return self.T / len(self.steps)

    def serial(self) -> nn.Sequential:
        """The same network as an ordinary ``nn.Sequential`` (shared modules), for exact
        serial forward and backprop: checking and inference."""
        return nn.Sequential(self.open, *(ResidualStep(m, self.h) for m in self.steps), self.close)

    def _solver(self, iters: int, problem: Any) -> MGRIT:
        return MGRIT(problem, cfactor=self.cfactor, levels=self.levels, relax=self.relax,
                     tol=_TINY, max_iter=iters, divergence_factor=math.inf)

    @staticmethod
    def _matches(problem: Any, u: torch.Tensor) -> bool:
        """Whether a kept solver's buffers fit state ``u`` (same shape, dtype, device)."""
        ref = problem.initial_state()
        return ref.shape == u.shape and ref.dtype == u.dtype and ref.device == u.device

    def forward_solve(self, u0: torch.Tensor) -> tuple[ForwardProblem, torch.Tensor]:
        """MGRIT on the steps from ``u0``: the problem and the fine states ``x_0..x_{N-1}``.
        The solver is kept, and warm-started from the last solution, while the batch shape
        stays."""
        u0 = u0.detach()
        if self._fwd is not None and self._matches(self._fwd[0], u0):
            problem, solver = self._fwd
            problem.prepare(u0)
            res = solver.solve(u0, warm_start=True)
        else:
            problem = ForwardProblem(self.steps, self.T, u0)
            solver = self._solver(self.fwd_iters, problem)
            self._fwd = (problem, solver)
            res = solver.solve()
        self.fwd_residuals = list(res.residuals)
        return problem, res.u[:-1]

    def adjoint_solve(self, graphs: StepGraphs, g: torch.Tensor) -> torch.Tensor:
        """MGRIT on the adjoint from ``g = dL/du_N`` over the batch's recorded step graphs:
        ``mu_r = lambda_{N-r}`` for r = 0..N (the solver is kept while the shape stays)."""
        g = g.detach()
        if self._adj is not None and self._matches(self._adj[0], g):
            adjoint, solver = self._adj
            adjoint.prepare(graphs, g)
            res = solver.solve(g)
        else:
            adjoint = AdjointProblem(graphs, g)
            solver = self._solver(self.bwd_iters, adjoint)
            self._adj = (adjoint, solver)
            res = solver.solve()
        adjoint.prepare(None, g)  # the kept solver must not keep this batch's graphs
        self.bwd_residuals = list(res.residuals)
        return res.u

    def _check_layers(self) -> None:
        """Refuse what would make a step depend on more than ``(u, layer)``: running
        statistics updated by every MGRIT step, and dropout masks drawn anew each time."""
        for name, mod in self.steps.named_modules():
            stats = isinstance(mod, nn.modules.batchnorm._NormBase) and mod.track_running_stats
            drop = isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0
            if mod.training and (stats or drop):
                what = "updates running statistics" if stats else "draws dropout masks"
                raise ValueError(
                    f"step layer module {name!r} ({type(mod).__name__}) {what} in training "
                    "mode, once per MGRIT step rather than once per batch: not supported yet "
                    "by LayerParallel. Use track_running_stats=False or GroupNorm/LayerNorm, "
                    "no dropout in the steps, or eval mode."
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_layers()
        u0 = self.open(x)
        params = [p for p in self.steps.parameters() if p.requires_grad]
        return self.close(_Solve.apply(self, u0, *params))


class _Solve(torch.autograd.Function):
    """The steps as one autograd node: the forward MGRIT solve and a fine sweep that
    records each step's graph; in backward, the adjoint MGRIT solve over those graphs."""

    @staticmethod
    def forward(ctx: Any, net: LayerParallel, u0: torch.Tensor, *params: torch.Tensor):
        problem, states = net.forward_solve(u0)
        n, h = len(net.steps), net.h
        if not any(ctx.needs_input_grad):  # inference: no graphs to keep
            with torch.no_grad():
                return problem.phi(n - 1, states[n - 1], h)
        graphs = StepGraphs(problem, states)
        ctx.outs = [graphs.record(k, h)[1] for k in range(n)]  # the final fine sweep
        ctx.net, ctx.params, ctx.graphs = net, params, graphs
        return ctx.outs[-1].detach()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):
        net, params, outs = ctx.net, ctx.params, ctx.outs
        n = len(outs)
        mu = net.adjoint_solve(ctx.graphs, g)  # mu_r = lambda_{N - r}
        grads: Sequence[torch.Tensor | None] = ()
        if params:
            lam_next = [mu[n - 1 - k] for k in range(n)]  # lambda_{k+1} for step k
            grads = torch.autograd.grad(outs, params, lam_next, allow_unused=True)
        ctx.graphs = ctx.outs = None  # free the graphs
        return (None, mu[n], *grads)
