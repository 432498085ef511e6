"""torchpint: parallel-in-time deep learning on PyTorch."""

from torchpint.core import (
    MGRIT,
    DivergenceError,
    FunctionProblem,
    Grid,
    MGRITResult,
    Parareal,
    Problem,
    RankTimeoutError,
    init_distributed,
    serial_solve,
)

__all__ = [
    "MGRIT",
    "DivergenceError",
    "FunctionProblem",
    "Grid",
    "MGRITResult",
    "Parareal",
    "Problem",
    "RankTimeoutError",
    "init_distributed",
    "serial_solve",
]
__version__ = "0.1.0"
