"""A nonlinear problem for FAS: the 1-D Allen-Cahn equation u_t = eps u_xx + u - u^3."""

from __future__ import annotations

import math
from typing import Any

import torch

from torchpint.problems.heat1d import ImplicitDiffusion1D


class AllenCahn(ImplicitDiffusion1D):
    """u_t = eps u_xx + u - u^3 on [0, 1], u = 0 at the ends, u(0) = 0.9 sin(3 pi x) + 0.1 x(1 - x).

    Semi-implicit Euler (diffusion implicit, reaction explicit): the step
    (I - dt eps L) u_{i+1} = u_i + dt (u_i - u_i^3) is nonlinear in u_i, so MGRIT needs
    its FAS form; the solution develops interfaces between the stable states +-1.
    """

    def __init__(
        self,
        nt: int,
        nx: int = 65,
        t_stop: float = 2.0,
        eps: float = 0.01,
        t_start: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(nt, nx, t_start, t_stop, eps, dtype, device)
        self.eps = float(eps)
        x = self.x
        self._u0 = 0.9 * torch.sin(3 * math.pi * x) + 0.1 * x * (1 - x)
        self._u0[0] = self._u0[-1] = 0.0

    def initial_state(self) -> torch.Tensor:
        return self._u0

    def fingerprint(self) -> dict[str, Any]:
        """The base fingerprint with the interface parameter ``eps``."""
        return {**super().fingerprint(), "eps": self.eps}

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        dt = self.dt(i, level)
        rhs = u + dt * (u - u**3)
        rhs[0] = rhs[-1] = 0.0
        return self._implicit_solve(rhs, dt)
