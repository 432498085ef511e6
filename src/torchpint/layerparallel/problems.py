"""The two time-stepping problems of layer-parallel training, for the MGRIT core.

Forward: the residual network ``u_{i+1} = Phi_i(u_i) = u_i + h F_i(u_i)`` (or
``F_i(u_i, h)`` itself for a layer whose ``forward`` takes the step size). A step of level
``l`` starting at fine point ``k`` uses layer ``k`` with step size ``m^l h`` (injection of
the fine weights), as TorchBraid does.

Adjoint: ``lambda_i = J_i^T lambda_{i+1}`` backward in time, written forward in a
reversed index (``mu_r = lambda_{N - r}``) so the same solver runs it. Its coarse steps are
the transposes (vector-Jacobian products) of the coarse forward steps, linearised at the
fine forward states (restricted to the level's state with spatial coarsening: the
problems of :mod:`.spatial`).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from torchpint.common.seeds import mix_seed
from torchpint.common.syncbn import SyncBatchNorm
from torchpint.core.grid import Grid
from torchpint.core.problem import Problem, has_transfers, level_states
from torchpint.runtime.comm import Comm


def takes_step_size(layer: nn.Module) -> bool:
    """Whether ``layer.forward`` takes ``(x, h)``: such a layer is the whole step."""
    params = [
        p for p in inspect.signature(layer.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(params) >= 2


class ResidualStep(nn.Module):
    """``x + h layer(x)`` (or ``layer(x, h)``): one step of the forward problem as an
    ordinary module (:meth:`~torchpint.layerparallel.LayerParallel.serial`)."""

    def __init__(self, layer: nn.Module, h: float) -> None:
        super().__init__()
        self.layer, self.h = layer, float(h)
        self._with_h = takes_step_size(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, self.h) if self._with_h else x + self.h * self.layer(x)


def check_layers(steps: nn.Module) -> None:
    """Refuse running statistics that batch norm's final-sweep update does not cover."""
    for name, mod in steps.named_modules():
        if (isinstance(mod, nn.modules.batchnorm._NormBase) and mod.track_running_stats
                and mod.training and not isinstance(mod, nn.modules.batchnorm._BatchNorm)):
            raise ValueError(
                f"step layer module {name!r} ({type(mod).__name__}) updates running "
                "statistics in training mode with every MGRIT step: not supported by "
                "LayerParallel. Use track_running_stats=False, or BatchNorm, GroupNorm "
                "or LayerNorm."
            )


def batch_norms(layer: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch norms in ``layer`` that keep running statistics."""
    return [m for m in layer.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def synced_over_ranks(layer: nn.Module) -> bool:
    """Whether ``layer`` holds batch norm synced over several ranks (data-parallel
    replicas): its calls and their vector-Jacobian products are collectives, which every
    replica must take together, whatever its values."""
    return any(isinstance(m, SyncBatchNorm)
               and not (isinstance(m.group, Comm) and m.group.size == 1)
               for m in layer.modules())


@contextlib.contextmanager
def frozen_stats(norms: list[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Batch norm in training mode that normalises by the batch but leaves the running
    statistics alone (they are updated once per batch, by the final fine sweep)."""
    saved = [(m, m.running_mean, m.running_var, m.num_batches_tracked)
             for m in norms if m.training]
    for m, *_ in saved:
        m.running_mean = m.running_var = m.num_batches_tracked = None
    try:
        yield
    finally:
        for m, mean, var, count in saved:
            m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count


class ForwardProblem(Problem):
    """The layers as time steps on ``[0, T]`` with ``h = T / N``; the initial state is the
    current batch's (set by the solve).

    ``layers`` maps a layer index to its module: a rank holds its own layers and the
    few others its coarse steps need. With ``seed`` set (one per batch), every call of
    layer ``k`` draws its random numbers (dropout masks) from a generator seeded by
    ``(seed, k)``, so all MGRIT iterations see the same masks. With ``recorder`` set, the
    solve's final sweep records each step there (:meth:`final_step`).
    """

    divergence_hint = (
        "the coarse steps (m^l h times a layer) are unstable: use a smaller T, a smaller "
        "cfactor or fewer levels"
    )

    def __init__(self, layers: Mapping[int, nn.Module], n: int, T: float,
                 u0: torch.Tensor) -> None:
        super().__init__(n, 0.0, T)
        self.layers = dict(layers)
        self._with_h = {k: takes_step_size(m) for k, m in self.layers.items()}
        self._norms = {k: batch_norms(m) for k, m in self.layers.items()}
        self._synced = {k: synced_over_ranks(m) for k, m in self.layers.items()}
        self._u0 = u0
        self.seed: int | None = None
        self.recorder: StepGraphs | None = None
        self.h = T / n

    def initial_state(self) -> torch.Tensor:
        return self._u0

    def takes_h(self, k: int) -> bool:
        """Whether layer ``k`` is the whole step (its ``forward`` takes ``(x, h)``)."""
        return self._with_h[k]

    def synced(self, k: int) -> bool:
        """Whether layer ``k`` holds batch norm synced over replicas (:func:`synced_over_ranks`)."""
        return self._synced[k]

    def prepare(self, u0: torch.Tensor) -> None:
        """This batch's initial state (the solver checks it against its buffers)."""
        self._u0 = u0

    def branch(self, k: int, u: torch.Tensor, h: float, update_stats: bool = False
               ) -> torch.Tensor:
        """Layer ``k``'s own output at ``u``: ``F_k(u)`` for a residual layer, the whole
        step ``F_k(u, h)`` for one that takes the step size (autograd as the caller has
        it); batch norm updates its running statistics only with ``update_stats``."""
        layer = self.layers.get(k)
        if layer is None:
            raise RuntimeError(f"layer {k} is not on this rank (it holds {sorted(self.layers)})")
        norms = self._norms[k]
        if (norms and not update_stats) or self.seed is not None:
            with self._isolated(k, u, [] if update_stats else norms):
                out = layer(u, h) if self._with_h[k] else layer(u)
        else:  # the common case: no context to enter
            out = layer(u, h) if self._with_h[k] else layer(u)
        if out.shape != u.shape:
            raise ValueError(
                f"step layer {k} maps a state of shape {tuple(u.shape)} to "
                f"{tuple(out.shape)}: a step must keep the state's shape; change shapes in "
                "the open or close module"
            )
        return out

    def combine(self, k: int, u: torch.Tensor, f: torch.Tensor, h: float,
                into: torch.Tensor | None = None) -> torch.Tensor:
        """The step from ``u`` given layer ``k``'s output ``f`` there (:meth:`branch`):
        ``u + h f``, or ``f`` itself for a layer that takes the step size; written into
        ``into`` when given."""
        if self._with_h[k]:
            return f if into is None else into.copy_(f)
        return torch.add(u, f, alpha=h, out=into)

    def phi(self, k: int, u: torch.Tensor, h: float, update_stats: bool = False,
            into: torch.Tensor | None = None) -> torch.Tensor:
        """One step of layer ``k`` with step size ``h`` (autograd as the caller has it),
        written into ``into`` when given; batch norm updates its running statistics only
        with ``update_stats``."""
        return self.combine(k, u, self.branch(k, u, h, update_stats), h, into)

    def _isolated(self, k: int, u: torch.Tensor, norms: list) -> contextlib.ExitStack:
        """Around a call of layer ``k``: batch norms ``norms`` with their statistics frozen,
        and the random numbers keyed by ``(seed, k)``."""
        stack = contextlib.ExitStack()
        stack.enter_context(frozen_stats(norms))
        if self.seed is not None:
            devices = [u.device] if u.device.type == "cuda" else []
            stack.enter_context(torch.random.fork_rng(devices=devices))
            torch.manual_seed(mix_seed(self.seed, k))
        return stack

    def bind(self, grid: Grid) -> None:
        super().bind(grid)
        self.spacing = [math.prod(grid.m[:l]) for l in range(grid.num_levels)]

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        return self._step(u, i, level, None)

    def step_into(self, u: torch.Tensor, i: int, level: int, out: torch.Tensor) -> None:
        self._step(u, i, level, out)

    def _step(self, u: torch.Tensor, i: int, level: int, into: torch.Tensor | None
              ) -> torch.Tensor:
        m = self.spacing[level]  # (the grid is uniform: cfactor^(levels-1) divides N)
        if torch.is_grad_enabled():  # (LayerParallel solves under no_grad: no context)
            with torch.no_grad():
                return self.phi(i * m, u, m * self.h, into=into)
        return self.phi(i * m, u, m * self.h, into=into)

    def final_step(self, u: torch.Tensor, i: int) -> torch.Tensor:
        """Layer ``i`` in the solve's final sweep: recorded (with its graph, and batch
        norm's statistics updated once per batch) when a recorder is set."""
        if self.recorder is None:
            return self.step(u, i, 0)
        return self.recorder.sweep(i, u, self.h)

    def final_step_into(self, u: torch.Tensor, i: int, out: torch.Tensor) -> None:
        if self.recorder is None:
            self.step_into(u, i, 0, out)
        else:
            self.recorder.sweep(i, u, self.h, out)


def _alias(u: torch.Tensor) -> torch.Tensor:
    """``u``'s memory as a tensor of its own: a graph recorded at a row of the solver's
    buffer must not see the solver's later writes to other rows as changes of its input
    (a view would share the buffer's version counter). The solver never writes a recorded
    row again while its graphs live (:meth:`~torchpint.core.MGRIT.release_fine`)."""
    return torch.empty(0, dtype=u.dtype, device=u.device).set_(
        u.untyped_storage(), u.storage_offset(), u.size(), u.stride())


class StepGraphs:
    """The recorded graphs of one batch, for this rank's layers ``first .. last``: the
    forward solve's final sweep records every fine step once (:meth:`sweep`; batch norm
    updates its statistics there), and the adjoint's steps reuse them.

    A residual layer's graph is its own output ``F_k(x_k)``, recorded once: its step on
    any level, ``x + h F_k(x)``, has the vector-Jacobian product ``v + h J^T v`` (``J``:
    ``F_k``'s Jacobian), so every level's adjoint step uses that one graph. A layer that
    takes the step size records the whole step once per level (:meth:`record`, at the
    forward states :attr:`states`). With spatial coarsening a coarse level's steps run on
    a coarsened state: each coarse level records its own graphs, at the forward states
    restricted to it."""

    def __init__(self, forward: ForwardProblem, layers: range, grad: bool = True) -> None:
        self.forward, self.first, self.last, self.grad = forward, layers.start, layers[-1], grad
        self.coarsened = has_transfers(forward)
        self.seed = forward.seed  # this batch's masks (the problem's moves on with a batch)
        self.states: list[torch.Tensor] = []  # detached, set after the forward solve
        self.output: torch.Tensor | None = None  # the last layer's, detached
        self._graphs: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._params: dict[int, list[torch.Tensor]] = {}
        self.zero_steps: dict[int, int] = {}  # adjoint steps of a zero state, by level

    def _key(self, k: int, level: int) -> tuple[int, int]:
        """Where layer ``k``'s graph for ``level`` is kept: one per level only for a layer
        that takes the step size, or for a coarse level of coarsened states."""
        per_level = self.forward.takes_h(k) or (self.coarsened and level > 0)
        return (k, level) if per_level else (k, 0)

    def sweep(self, k: int, u: torch.Tensor, h: float, into: torch.Tensor | None = None
              ) -> torch.Tensor:
        """Fine step ``k`` from ``u`` (a row of the solver's buffer) in the final sweep:
        its value, detached, written into ``into`` when given; its graph kept when
        recording gradients. The last layer's value is also kept, in a tensor of its own
        (:attr:`output`: the solver's buffer changes with the next solve)."""
        forward = self.forward
        last = k == self.last
        if not self.grad:
            with torch.no_grad():
                out = forward.phi(k, u, h, update_stats=True, into=None if last else into)
        else:
            with torch.enable_grad():
                x = _alias(u).requires_grad_(True)
                f = forward.branch(k, x, h, update_stats=True)
            self._graphs[(k, 0)] = (x, f)
            with torch.no_grad():
                out = forward.combine(k, u, f.detach(), h, None if last else into)
        if last:
            self.output = out
            if into is not None:
                into.copy_(out)
        return out

    def record(self, k: int, level: int, h: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_k leaf, layer k's output there)`` (:meth:`ForwardProblem.branch`, with
        level ``level``'s step ``h`` for a layer that takes it), recorded once; ``x_k``
        restricted to ``level`` with spatial coarsening."""
        key = self._key(k, level)
        if key not in self._graphs:
            forward, seed = self.forward, self.forward.seed
            forward.seed = self.seed
            x = self.states[k - self.first].detach()
            if key[1] and self.coarsened:
                with torch.no_grad():
                    x = level_states(forward, x, key[1] + 1)[key[1]]
            try:
                with torch.enable_grad():
                    x = x.requires_grad_(True)
                    self._graphs[key] = (x, forward.branch(k, x, h))
            finally:
                forward.seed = seed
        return self._graphs[key]

    def vjp(self, k: int, level: int, h: float, v: torch.Tensor,
            into: torch.Tensor | None = None) -> torch.Tensor:
        """``(dPhi_k / dx)^T v`` at ``x_k``, for level ``level``'s step ``h``, written into
        ``into`` when given. The adjoint is linear: a zero ``v`` (most of a cold start's
        first iteration) gives zero with no graph recorded or walked (the test reads the
        value: on the CPU only), except through batch norm synced over replicas, whose
        collectives every replica takes whatever its values."""
        if v.device.type == "cpu" and not self.forward.synced(k) and not any(torch.aminmax(v)):
            self.zero_steps[level] = self.zero_steps.get(level, 0) + 1
            return torch.zeros_like(v) if into is None else into.zero_()
        x, f = self.record(k, level, h)
        (g,) = torch.autograd.grad(f, x, v, retain_graph=True, allow_unused=True)
        return self._through(k, h, v, g, into)

    def _through(self, k: int, h: float, v: torch.Tensor, g: torch.Tensor | None,
                 into: torch.Tensor | None) -> torch.Tensor:
        """The step's VJP from its layer's, ``g = J^T v``: ``v + h g`` for a residual
        layer, ``g`` itself for one that takes the step size (``None``: zero)."""
        if g is None:
            g = torch.zeros_like(v)
        if self.forward.takes_h(k):
            return g if into is None else into.copy_(g)
        return torch.add(v, g, alpha=h, out=into)

    def backprop(self, k: int, v: torch.Tensor, grads: dict[torch.Tensor, torch.Tensor],
                 into: torch.Tensor | None = None) -> torch.Tensor:
        """The adjoint's final fine step: ``(dPhi_k / dx)^T v`` (written into ``into``
        when given) and, in the same autograd call, layer ``k``'s parameter gradients
        ``(dPhi_k / dtheta_k)^T v``, added to ``grads`` (by parameter)."""
        h = self.forward.h
        x, f = self.record(k, 0, h)
        params = self._params.get(k)
        if params is None:
            layer = self.forward.layers[k]
            params = self._params[k] = [p for p in layer.parameters() if p.requires_grad]
        g, *gp = torch.autograd.grad(f, [x, *params], v, retain_graph=True,
                                     allow_unused=True)
        scale = 1.0 if self.forward.takes_h(k) else h  # d(x + h F) / dtheta = h dF / dtheta
        for p, d in zip(params, gp, strict=True):
            if d is not None:
                d = d if scale == 1.0 else d.mul_(scale)
                grads[p] = d if p not in grads else grads[p] + d
        return self._through(k, h, v, g, into)


class AdjointProblem(Problem):
    """``mu_{r+1} = J^T mu_r`` on the reversed grid: reversed step ``r`` of level ``l`` is
    the transpose of the forward step of that level from fine point ``N - (r + 1) m^l``,
    linearised at the forward state there. Its final sweep gathers the parameter
    gradients in :attr:`param_grads`."""

    def __init__(self, graphs: StepGraphs, g: torch.Tensor) -> None:
        super().__init__(graphs.forward.nt, 0.0, graphs.forward.t_stop)
        self.prepare(graphs, g)

    def initial_state(self) -> torch.Tensor:
        return self._g

    def prepare(self, graphs: StepGraphs | None, g: torch.Tensor) -> None:
        """This batch: its recorded step graphs and ``g = dL/du_N`` (``None`` after the
        solve, so the graphs are freed with the batch)."""
        self.graphs, self._g = graphs, g
        self.param_grads: dict[torch.Tensor, torch.Tensor] = {}

    def _graphs(self) -> StepGraphs:
        if self.graphs is None:
            raise RuntimeError("the adjoint problem has no batch: call prepare(graphs, g)")
        return self.graphs

    def step(self, mu: torch.Tensor, i: int, level: int) -> torch.Tensor:
        return self._step(mu, i, level, None)

    def step_into(self, mu: torch.Tensor, i: int, level: int, out: torch.Tensor) -> None:
        self._step(mu, i, level, out)

    def _step(self, mu: torch.Tensor, i: int, level: int, into: torch.Tensor | None
              ) -> torch.Tensor:
        graphs = self._graphs()
        m = graphs.forward.spacing[level]
        return graphs.vjp(self.nt - (i + 1) * m, level, m * graphs.forward.h, mu, into)

    def final_step(self, mu: torch.Tensor, i: int) -> torch.Tensor:
        return self._graphs().backprop(self.nt - (i + 1), mu, self.param_grads)

    def final_step_into(self, mu: torch.Tensor, i: int, out: torch.Tensor) -> None:
        self._graphs().backprop(self.nt - (i + 1), mu, self.param_grads, out)
