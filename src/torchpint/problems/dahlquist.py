"""Dahlquist's test equation u' = lambda u: the scalar problem MGRIT theory is built on."""

from __future__ import annotations

from typing import Any

import torch

from torchpint.core.problem import Problem
from torchpint.problems.checks import state_device, state_dtype

_METHODS = ("BE", "FE", "CN")


class Dahlquist(Problem):
    """u' = lam u, u(0) = u0, with backward Euler (BE), forward Euler (FE) or trapezoidal (CN).

    Every level uses the same method with its own step size, so the coarse propagator is
    one step of m^l times the fine step (the usual rediscretization). ``dtype`` must be
    real floating point (half precision included) and ``device`` one this machine has,
    else ``ValueError`` at construction, naming the fix.
    """

    def __init__(
        self,
        nt: int,
        t_stop: float = 5.0,
        lam: float = -1.0,
        u0: float = 1.0,
        method: str = "BE",
        t_start: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(nt, t_start, t_stop)
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        dtype, dev = state_dtype("Dahlquist", dtype), state_device("Dahlquist", device)
        self.lam, self.method = float(lam), method
        self._u0 = torch.tensor([float(u0)], dtype=dtype, device=dev)

    def initial_state(self) -> torch.Tensor:
        return self._u0

    def fingerprint(self) -> dict[str, Any]:
        """The base fingerprint with lambda, the method and the dtype."""
        return {**super().fingerprint(), "lam": self.lam, "method": self.method,
                "dtype": str(self._u0.dtype)}

    def amplification(self, dt: float) -> float:
        """The factor one step multiplies u by (the eigenvalue of the propagator)."""
        z = self.lam * dt
        if self.method == "BE":
            return 1.0 / (1.0 - z)
        if self.method == "FE":
            return 1.0 + z
        return (1.0 + z / 2) / (1.0 - z / 2)

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        return u * self.amplification(self.dt(i, level))
