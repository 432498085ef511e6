"""A nonlinear problem for FAS: the 1-D Allen-Cahn equation u_t = eps u_xx + u - u^3."""

from __future__ import annotations

import math

import torch

from torchpint.core.problem import Problem
from torchpint.problems.heat1d import laplacian_1d


class AllenCahn(Problem):
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
        super().__init__(nt, t_start, t_stop)
        self.nx, self.eps = int(nx), float(eps)
        x = torch.linspace(0.0, 1.0, self.nx, dtype=dtype, device=device)
        self._lap = laplacian_1d(self.nx, dtype).to(device)
        self._u0 = 0.9 * torch.sin(3 * math.pi * x) + 0.1 * x * (1 - x)
        self._u0[0] = self._u0[-1] = 0.0
        self._lu: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def initial_state(self) -> torch.Tensor:
        return self._u0

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        dt = self.dt(i, level)
        key = round(dt, 15)
        if key not in self._lu:
            eye = torch.eye(self.nx, dtype=self._lap.dtype, device=self._lap.device)
            self._lu[key] = torch.linalg.lu_factor(eye - dt * self.eps * self._lap)
        lu, piv = self._lu[key]
        rhs = u + dt * (u - u**3)
        rhs[0] = rhs[-1] = 0.0
        return torch.linalg.lu_solve(lu, piv, rhs.unsqueeze(-1)).squeeze(-1)
