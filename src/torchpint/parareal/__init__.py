"""Parareal neural networks: a deep network cut into P, N fine chunks run at the same time,
N cheap coarse networks and Q, wired as k parareal iterations (Lee, Lee & Park 2022).

``parareal_network(model, chunks)`` builds one; ``PararealNetwork.set_executor`` picks
where the fine chunks run (a name in ``EXECUTORS``: ``serial``, ``threads``, ``devices``,
``distributed``; or an ``Executor`` such as ``ThreadsExecutor(overlap=False)``).
``process_grid(N, D)`` splits N * D ranks into D data-parallel replicas of an N-chunk
network (pass it as the distributed executor's ``group``).
"""

from torchpint.parareal.coarse import default_coarse
from torchpint.parareal.executors import (
    EXECUTORS,
    Executor,
    ProcessGrid,
    ThreadsExecutor,
    process_grid,
)
from torchpint.parareal.factory import parareal_network
from torchpint.parareal.network import PararealNetwork
from torchpint.parareal.split import balanced_cuts, decompose

__all__ = [
    "EXECUTORS",
    "Executor",
    "PararealNetwork",
    "ProcessGrid",
    "ThreadsExecutor",
    "balanced_cuts",
    "decompose",
    "default_coarse",
    "parareal_network",
    "process_grid",
]
