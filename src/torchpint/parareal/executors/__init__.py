"""Executors: how the fine chunks F_j(lambda_j) of one parareal iteration are run.

All executors compute the same thing as ``serial``; they differ in where the chunks run:

- ``serial``: one after the other, plain autograd (the reference);
- ``threads``: one Python thread per chunk on the CPU, forward and backward; in iteration
  0 the coarse sweep overlaps the chunks instead of preceding them;
- ``devices``: chunk j on ``devices[j]`` in one process; kernels launch asynchronously, and
  the autograd engine runs each device's backward on its own thread;
- ``distributed``: rank j of a torch.distributed group runs chunk j; the chunk outputs and
  the gradients of their inputs are exchanged by one all-reduce each way, through the
  floor's communicator (``torchpint.runtime.comm``: every wait has a timeout, and a peer
  that died or hung is a typed ``PeerError``).

``EXECUTORS`` maps each name to its class; ``make_executor`` builds one by name.
"""

from __future__ import annotations

from typing import Any

from torchpint.parareal.executors.base import Executor, Stages
from torchpint.parareal.executors.devices import DevicesExecutor
from torchpint.parareal.executors.distributed import DistributedExecutor
from torchpint.parareal.executors.grid import ProcessGrid, process_grid
from torchpint.parareal.executors.serial import SerialExecutor
from torchpint.parareal.executors.threads import ThreadsExecutor

EXECUTORS: dict[str, type[Executor]] = {
    cls.name: cls for cls in (SerialExecutor, ThreadsExecutor, DevicesExecutor, DistributedExecutor)
}


def make_executor(
    name_or_instance: str | Executor, devices: Any = None, group: Any = None,
    timeout: float | None = None,
) -> Executor:
    """The executor registered under ``name_or_instance`` in ``EXECUTORS``, built with
    ``devices`` / ``group`` / ``timeout`` (seconds a rank waits for its peers) where it
    takes them; an ``Executor`` is passed through."""
    if isinstance(name_or_instance, Executor):
        return name_or_instance
    cls = EXECUTORS.get(name_or_instance)
    if cls is None:
        raise ValueError(
            f"unknown executor {name_or_instance!r}; choose one of {', '.join(EXECUTORS)}"
        )
    if timeout is None:  # an executor whose create() predates the timeout still works
        return cls.create(devices=devices, group=group)
    return cls.create(devices=devices, group=group, timeout=timeout)


__all__ = [
    "EXECUTORS",
    "DevicesExecutor",
    "DistributedExecutor",
    "Executor",
    "ProcessGrid",
    "SerialExecutor",
    "Stages",
    "ThreadsExecutor",
    "make_executor",
    "process_grid",
]
