"""The two time-stepping problems of layer-parallel training, for the MGRIT core.

Forward: the residual network ``u_{i+1} = Phi_i(u_i) = u_i + h F_i(u_i)`` (or
``F_i(u_i, h)`` itself for a layer whose ``forward`` takes the step size). A step of level
``l`` starting at fine point ``k`` uses layer ``k`` with step size ``m^l h`` (injection of
the fine weights), as TorchBraid does.

Adjoint: ``lambda_i = J_i^T lambda_{i+1}`` backward in time, written forward in a
reversed index (``mu_r = lambda_{N - r}``) so the same solver runs it. Its coarse steps are
the transposes (vector-Jacobian products) of the coarse forward steps, linearised at the
fine forward states.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from torchpint.common.seeds import mix_seed
from torchpint.core.problem import Problem


def takes_step_size(layer: nn.Module) -> bool:
    """Whether ``layer.forward`` takes ``(x, h)``: such a layer is the whole step."""
    params = [
        p for p in inspect.signature(layer.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(params) >= 2


def batch_norms(layer: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch norms in ``layer`` that keep running statistics."""
    return [m for m in layer.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


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
    ``(seed, k)``, so all MGRIT iterations see the same masks.
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
        self._u0 = u0
        self.seed: int | None = None

    def initial_state(self) -> torch.Tensor:
        return self._u0

    def prepare(self, u0: torch.Tensor) -> None:
        """This batch's initial state (the solver checks it against its buffers)."""
        self._u0 = u0

    def phi(self, k: int, u: torch.Tensor, h: float, update_stats: bool = False) -> torch.Tensor:
        """One step of layer ``k`` with step size ``h`` (autograd as the caller has it);
        batch norm updates its running statistics only with ``update_stats``."""
        layer = self.layers.get(k)
        if layer is None:
            raise RuntimeError(f"layer {k} is not on this rank (it holds {sorted(self.layers)})")
        with self._isolated(k, u, [] if update_stats else self._norms[k]):
            out = layer(u, h) if self._with_h[k] else layer(u)
        if out.shape != u.shape:
            raise ValueError(
                f"step layer {k} maps a state of shape {tuple(u.shape)} to "
                f"{tuple(out.shape)}: a step must keep the state's shape; change shapes in "
                "the open or close module"
            )
        return out if self._with_h[k] else torch.add(u, out, alpha=h)

    def _isolated(self, k: int, u: torch.Tensor, norms: list) -> contextlib.AbstractContextManager:
        """Around a call of layer ``k``: batch norms ``norms`` with their statistics frozen,
        and the random numbers keyed by ``(seed, k)``; nothing when neither applies (the
        common case costs no context setup)."""
        if not norms and self.seed is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(frozen_stats(norms))
        if self.seed is not None:
            devices = [u.device] if u.device.type == "cuda" else []
            stack.enter_context(torch.random.fork_rng(devices=devices))
            torch.manual_seed(mix_seed(self.seed, k))
        return stack

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        with torch.no_grad():
            return self.phi(self.fine_index(i, level), u, self.dt(i, level))


class StepGraphs:
    """The recorded graphs ``Phi_k(x_k)`` of one batch, at the forward states ``x_k`` of
    this rank's layers ``first, first + 1, ...``: the fine sweep records every step once
    (its outputs give the parameter gradients, and batch norm its statistics), and the
    adjoint's steps reuse them (coarse steps record their own step sizes)."""

    def __init__(self, forward: ForwardProblem, states: list[torch.Tensor], first: int = 0
                 ) -> None:
        self.forward, self.states, self.first = forward, states, first  # detached states
        self.seed = forward.seed  # this batch's masks (the problem's moves on with a batch)
        self._graphs: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}

    def record(self, k: int, h: float, update_stats: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_k leaf, Phi_k(x_k) with step h)``, recorded once and kept."""
        key = (k, round(h, 15))
        if key not in self._graphs:
            forward, seed = self.forward, self.forward.seed
            forward.seed = self.seed
            try:
                with torch.enable_grad():
                    x = self.states[k - self.first].detach().requires_grad_(True)
                    self._graphs[key] = (x, forward.phi(k, x, h, update_stats))
            finally:
                forward.seed = seed
        return self._graphs[key]

    def vjp(self, k: int, h: float, v: torch.Tensor) -> torch.Tensor:
        """``(dPhi_k / dx)^T v`` at ``x_k``."""
        x, out = self.record(k, h)
        (g,) = torch.autograd.grad(out, x, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if g is None else g


class AdjointProblem(Problem):
    """``mu_{r+1} = J^T mu_r`` on the reversed grid: reversed step ``r`` of level ``l`` is
    the transpose of the forward step of that level from fine point ``N - (r + 1) m^l``,
    linearised at the forward state there."""

    def __init__(self, graphs: StepGraphs, g: torch.Tensor) -> None:
        super().__init__(graphs.forward.nt, 0.0, graphs.forward.t_stop)
        self.prepare(graphs, g)

    def initial_state(self) -> torch.Tensor:
        return self._g

    def prepare(self, graphs: StepGraphs | None, g: torch.Tensor) -> None:
        """This batch: its recorded step graphs and ``g = dL/du_N`` (``None`` after the
        solve, so the graphs are freed with the batch)."""
        self.graphs, self._g = graphs, g

    def step(self, mu: torch.Tensor, i: int, level: int) -> torch.Tensor:
        if self.graphs is None:
            raise RuntimeError("the adjoint problem has no batch: call prepare(graphs, g)")
        k = self.nt - self.fine_index(i + 1, level)
        return self.graphs.vjp(k, self.dt(i, level), mu)
