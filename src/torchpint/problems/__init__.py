"""Model problems shipped with torchpint: linear (Dahlquist, heat) and nonlinear (Allen-Cahn)."""

from torchpint.problems.allen_cahn import AllenCahn
from torchpint.problems.dahlquist import Dahlquist
from torchpint.problems.heat1d import Heat1D

PROBLEMS = {"dahlquist": Dahlquist, "heat1d": Heat1D, "allen-cahn": AllenCahn}

__all__ = ["PROBLEMS", "AllenCahn", "Dahlquist", "Heat1D"]
