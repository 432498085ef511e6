"""The 1-D heat equation u_t = a u_xx on [0, 1], a linear system of ODEs in time."""

from __future__ import annotations

import math
from typing import Any

import torch

from torchpint.core.problem import Problem
from torchpint.problems.checks import state_device, state_dtype

SOLVE_DTYPES = (torch.float32, torch.float64)  # what torch's LU factorization supports


def laplacian_1d(nx: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Second-order central differences on nx points (both boundaries included, kept 0)."""
    if nx < 3:
        raise ValueError(f"nx must be >= 3 (two boundary points and an interior), got {nx}")
    h = 1.0 / (nx - 1)
    lap = torch.zeros((nx, nx), dtype=dtype)
    idx = torch.arange(1, nx - 1)
    lap[idx, idx] = -2.0 / h**2
    lap[idx[1:], idx[1:] - 1] = 1.0 / h**2
    lap[idx[:-1], idx[:-1] + 1] = 1.0 / h**2
    return lap


class ImplicitDiffusion1D(Problem):
    """Shared part of the 1-D problems: grid, Laplacian, and (I - dt c L) solves.

    The LU factorization is cached per step size, so every level (step size m^l dt)
    costs one triangular solve pair per step. The solve needs float32 or float64 and a
    device this machine has: anything else is a ``ValueError`` at construction, naming
    the fix (not an error inside the solver later).
    """

    def __init__(self, nt: int, nx: int, t_start: float, t_stop: float, coef: float,
                 dtype: torch.dtype, device: str | torch.device) -> None:
        super().__init__(nt, t_start, t_stop)
        owner = type(self).__name__
        dtype = state_dtype(owner, dtype, SOLVE_DTYPES, "the implicit solve needs")
        dev = state_device(owner, device)
        self.nx, self.coef = int(nx), float(coef)
        self.x = torch.linspace(0.0, 1.0, self.nx, dtype=dtype, device=dev)
        self._lap = laplacian_1d(self.nx, dtype).to(dev)
        self._lu: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def fingerprint(self) -> dict[str, Any]:
        """The base fingerprint with the space grid and the dtype."""
        return {**super().fingerprint(), "nx": self.nx, "dtype": str(self.x.dtype)}

    def _implicit_solve(self, rhs: torch.Tensor, dt: float) -> torch.Tensor:
        """Solve (I - dt coef L) u = rhs."""
        key = round(dt, 15)
        if key not in self._lu:
            eye = torch.eye(self.nx, dtype=self._lap.dtype, device=self._lap.device)
            self._lu[key] = torch.linalg.lu_factor(eye - dt * self.coef * self._lap)
        lu, piv = self._lu[key]
        return torch.linalg.lu_solve(lu, piv, rhs.unsqueeze(-1)).squeeze(-1)


class Heat1D(ImplicitDiffusion1D):
    """u_t = a u_xx, homogeneous Dirichlet, u(0, x) = sin(pi x); backward Euler in time.

    The state has ``nx`` entries, boundaries included (they stay 0).
    """

    def __init__(
        self,
        nt: int,
        nx: int = 65,
        t_stop: float = 1.0,
        a: float = 1.0,
        t_start: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(nt, nx, t_start, t_stop, a, dtype, device)
        self.a = float(a)
        self._u0 = torch.sin(math.pi * self.x)
        self._u0[0] = self._u0[-1] = 0.0

    def initial_state(self) -> torch.Tensor:
        return self._u0

    def fingerprint(self) -> dict[str, Any]:
        """The base fingerprint with the diffusion coefficient ``a``."""
        return {**super().fingerprint(), "a": self.a}

    def exact(self, t: float) -> torch.Tensor:
        """The PDE's solution at time t (for discretization-error checks)."""
        return math.exp(-self.a * math.pi**2 * t) * self._u0

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        return self._implicit_solve(u, self.dt(i, level))
