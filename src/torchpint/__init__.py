"""torchpint: parallel-in-time deep learning on PyTorch."""

from torchpint.core import FunctionProblem, Grid, Problem, serial_solve

__all__ = ["FunctionProblem", "Grid", "Problem", "serial_solve"]
__version__ = "0.1.0"
