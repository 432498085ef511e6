"""torchpint: parallel-in-time deep learning on PyTorch.

The public API, re-exported here: the MGRIT / parareal core (``MGRIT``, ``Parareal``,
``Problem``), training by MGRIT over optimizer steps (``train_mgrit``), parareal neural
networks (``parareal_network``) and the models they are built from. Names are imported on
first use, so ``import torchpint`` (and ``torchpint --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the subpackage that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ["MGRIT", "CheckpointError", "CheckpointMismatchError", "DivergenceError",
         "FunctionProblem", "Grid", "MGRITResult", "Parareal", "PeerClosedError", "Problem",
         "RankTimeoutError", "init_distributed", "serial_solve"],
        "torchpint.core",
    ),
    **dict.fromkeys(["MODEL_NAMES", "build_model", "preact_resnet", "vgg16"], "torchpint.models"),
    **dict.fromkeys(["PararealNetwork", "parareal_network"], "torchpint.parareal"),
    "LayerParallel": "torchpint.layerparallel",
    **dict.fromkeys(["TrainingConfig", "train_mgrit"], "torchpint.training"),
}

__all__ = [
    "MGRIT",
    "MODEL_NAMES",
    "CheckpointError",
    "CheckpointMismatchError",
    "DivergenceError",
    "FunctionProblem",
    "Grid",
    "LayerParallel",
    "MGRITResult",
    "Parareal",
    "PararealNetwork",
    "PeerClosedError",
    "Problem",
    "RankTimeoutError",
    "TrainingConfig",
    "build_model",
    "init_distributed",
    "parareal_network",
    "preact_resnet",
    "serial_solve",
    "train_mgrit",
    "vgg16",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'torchpint' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from torchpint.core import (
        MGRIT,
        CheckpointError,
        CheckpointMismatchError,
        DivergenceError,
        FunctionProblem,
        Grid,
        MGRITResult,
        Parareal,
        PeerClosedError,
        Problem,
        RankTimeoutError,
        init_distributed,
        serial_solve,
    )
    from torchpint.layerparallel import LayerParallel
    from torchpint.models import MODEL_NAMES, build_model, preact_resnet, vgg16
    from torchpint.parareal import PararealNetwork, parareal_network
    from torchpint.training import TrainingConfig, train_mgrit
