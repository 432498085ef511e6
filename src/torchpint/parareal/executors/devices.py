"""The ``devices`` executor: chunk j on device j, all in one process."""

from __future__ import annotations

from typing import Any

import torch

from torchpint.common.devices import resolve_device
from torchpint.parareal.executors.base import Executor, Stages


class DevicesExecutor(Executor):
    """Fine chunk j on ``devices[j]``; P, the coarse networks and Q on ``devices[0]``.

    Forward: each chunk's input is copied to its device and all chunks are launched before
    any result is copied back, so the devices compute at the same time. Backward: PyTorch's
    autograd engine has one thread per device, so the chunks' backward passes overlap too.
    ``devices=["cpu", "cpu"]`` runs the same code path on the CPU (without overlap).
    """

    name = "devices"

    def __init__(self, devices: list | tuple | None = None) -> None:
        if not devices:
            raise ValueError(
                "executor 'devices' needs devices=[...], one per chunk, e.g. ['cuda:0', 'cuda:1']"
            )
        self.devices = [resolve_device(d) for d in devices]

    @classmethod
    def create(cls, devices: Any = None, group: Any = None,
               timeout: float | None = None) -> Executor:
        return cls(devices)

    def clone(self) -> Executor:
        return DevicesExecutor(self.devices)

    def bind(self, stages: Stages) -> None:
        if len(self.devices) != stages.num_chunks:
            raise ValueError(
                f"executor 'devices' needs one device per chunk: {stages.num_chunks} chunks, "
                f"{len(self.devices)} devices given ({[str(d) for d in self.devices]})"
            )
        main = self.devices[0]
        stages.pre.to(main)
        stages.post.to(main)
        for c in stages.coarse:
            c.to(main)
        for f, dev in zip(stages.fine, self.devices, strict=True):
            f.to(dev)

    def run(
        self, stages: Stages, inputs: dict[int, torch.Tensor], like: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        outs = {}
        home = {}
        for j, x in inputs.items():  # launch everything first
            home[j] = x.device
            outs[j] = stages.fine[j](x.to(self.devices[j], non_blocking=True))
        # non-blocking only towards a GPU: a CPU result must be complete when returned
        return {j: o.to(home[j], non_blocking=home[j].type == "cuda") for j, o in outs.items()}
