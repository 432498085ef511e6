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

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from torchpint.core.problem import Problem


def takes_step_size(layer: nn.Module) -> bool:
    """Whether ``layer.forward`` takes ``(x, h)``: such a layer is the whole step."""
    params = [
        p for p in inspect.signature(layer.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(params) >= 2


class ForwardProblem(Problem):
    """The layers as time steps on ``[0, T]`` with ``h = T / N``; the initial state is the
    current batch's (set by the solve)."""

    divergence_hint = (
        "the coarse steps (m^l h times a layer) are unstable: use a smaller T, a smaller "
        "cfactor or fewer levels"
    )

    def __init__(self, layers: Sequence[nn.Module], T: float, u0: torch.Tensor) -> None:
        super().__init__(len(layers), 0.0, T)
        self.layers = list(layers)
        self._with_h = [takes_step_size(m) for m in self.layers]
        self._u0 = u0

    def initial_state(self) -> torch.Tensor:
        return self._u0

    def prepare(self, u0: torch.Tensor) -> None:
        """This batch's initial state (the solver checks it against its buffers)."""
        self._u0 = u0

    def phi(self, k: int, u: torch.Tensor, h: float) -> torch.Tensor:
        """One step of layer ``k`` with step size ``h`` (autograd as the caller has it)."""
        layer = self.layers[k]
        out = layer(u, h) if self._with_h[k] else layer(u)
        if out.shape != u.shape:
            raise ValueError(
                f"step layer {k} maps a state of shape {tuple(u.shape)} to "
                f"{tuple(out.shape)}: a step must keep the state's shape; change shapes in "
                "the open or close module"
            )
        return out if self._with_h[k] else u + h * out

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        with torch.no_grad():
            return self.phi(self.fine_index(i, level), u, self.dt(i, level))


class StepGraphs:
    """The recorded graphs ``Phi_k(x_k)`` of one batch, at the forward states ``x_k``:
    the fine sweep records every step once (its outputs give the parameter gradients),
    and the adjoint's steps reuse them (coarse steps record their own step sizes)."""

    def __init__(self, forward: ForwardProblem, states: torch.Tensor) -> None:
        self.forward, self.states = forward, states  # x_0 .. x_{N-1}, detached
        self._graphs: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}

    def record(self, k: int, h: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_k leaf, Phi_k(x_k) with step h)``, recorded once and kept."""
        key = (k, round(h, 15))
        if key not in self._graphs:
            with torch.enable_grad():
                x = self.states[k].detach().requires_grad_(True)
                self._graphs[key] = (x, self.forward.phi(k, x, h))
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
