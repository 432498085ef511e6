"""Device specs (``"cuda:1"``, ``"1"``, ``"cpu"``) to checked ``torch.device`` objects."""

from __future__ import annotations

import torch


def resolve_device(spec: str | int | torch.device) -> torch.device:
    """The device ``spec`` names, checked to exist here; a bare integer means a GPU.

    Raises ``ValueError`` naming the devices this machine has when it does not.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        spec = f"cuda:{int(spec)}"
    try:
        dev = torch.device(spec.strip() if isinstance(spec, str) else spec)
    except RuntimeError as err:
        raise ValueError(f"{spec!r} is not a device name (e.g. cpu, cuda:0): {err}") from err
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        idx = 0 if dev.index is None else dev.index
        if idx >= n:
            have = f"cuda:0..cuda:{n - 1}" if n else "none"
            raise ValueError(
                f"device {dev} does not exist: this machine has {n} CUDA device(s) ({have}). "
                "Use cpu, or the threads executor on a CPU."
            )
        return torch.device("cuda", idx)
    if dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except Exception as err:
            raise ValueError(f"device {dev} is not usable here: {err}") from err
    return dev
