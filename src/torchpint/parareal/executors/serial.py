"""The ``serial`` executor: the reference every other executor is tested against."""

from __future__ import annotations

from torchpint.parareal.executors.base import Executor


class SerialExecutor(Executor):
    """The chunks one after the other, plain autograd."""

    name = "serial"
