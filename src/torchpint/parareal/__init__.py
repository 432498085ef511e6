"""Parareal neural networks: a deep network cut into P, N fine chunks run at the same time,
N cheap coarse networks and Q, wired as k parareal iterations (ALGORITHMS.md section 3).

``parareal(model, parts)`` builds one; ``PararealNetwork.set_executor`` picks where the
fine chunks run (``serial``, ``threads``, ``devices``, ``distributed``).
"""

from torchpint.parareal.coarse import build_coarse, check_coarse, default_coarse
from torchpint.parareal.executors import (
    EXECUTORS,
    DevicesExecutor,
    DistributedExecutor,
    Executor,
    SerialExecutor,
    ThreadsExecutor,
)
from torchpint.parareal.network import PararealNetwork, parareal
from torchpint.parareal.split import balanced_cuts, decompose

__all__ = [
    "EXECUTORS",
    "DevicesExecutor",
    "DistributedExecutor",
    "Executor",
    "PararealNetwork",
    "SerialExecutor",
    "ThreadsExecutor",
    "balanced_cuts",
    "build_coarse",
    "check_coarse",
    "decompose",
    "default_coarse",
    "parareal",
]
