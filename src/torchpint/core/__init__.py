"""The parallel-in-time core: grids, the problem contract, MGRIT and parareal."""

from torchpint.core.grid import Grid
from torchpint.core.problem import FunctionProblem, Problem, serial_solve

__all__ = ["FunctionProblem", "Grid", "Problem", "serial_solve"]
