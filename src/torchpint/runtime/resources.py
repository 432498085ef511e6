"""Memory a run will need, checked against what the machine has before the work.

Where an estimate is cheap (states x points x bytes for an MGRIT solve, the images of a
data set), a run that cannot fit is refused at once with the setting to lower, instead
of an allocator's traceback minutes later.
"""

from __future__ import annotations

import os

import torch


class MemoryLimitError(ValueError):
    """A run would need more memory than the device has (bad input: exit code 2)."""


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory on ``device`` now: CUDA's free bytes, or the host's MemAvailable
    (None where neither can be read)."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def require_memory(nbytes: float, what: str, lower: str,
                   device: torch.device | str = "cpu") -> None:
    """Raise :class:`MemoryLimitError` when ``nbytes`` exceed the free memory of
    ``device``; ``what`` says what needs it, ``lower`` which settings to lower."""
    free = available_bytes(device)
    if free is not None and nbytes > free:
        raise MemoryLimitError(
            f"{what} needs about {_gib(nbytes)}, but {torch.device(device)} has "
            f"{_gib(free)} free; lower {lower}"
        )
