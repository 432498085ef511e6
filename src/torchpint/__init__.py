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
from torchpint.models import MODEL_NAMES, build_model, preact_resnet, vgg16
from torchpint.parareal import PararealNetwork, parareal
from torchpint.training import train_mgrit, verify

__all__ = [
    "MGRIT",
    "MODEL_NAMES",
    "DivergenceError",
    "FunctionProblem",
    "Grid",
    "MGRITResult",
    "Parareal",
    "PararealNetwork",
    "Problem",
    "RankTimeoutError",
    "build_model",
    "init_distributed",
    "parareal",
    "preact_resnet",
    "serial_solve",
    "train_mgrit",
    "verify",
    "vgg16",
]
__version__ = "0.1.0"
