"""Helpers for testing distributed code: spawn a Gloo process group on localhost.

The tests and benchmarks compare distributed runs with serial ones through
:func:`spawn_gloo`; users testing their own problems may do the same.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def free_port() -> int:
    """A free TCP port on localhost, for spawning process groups in tests and benchmarks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_entry(rank: int, fn: Callable[..., Any], world: int, port: int, timeout: float,
                 args: tuple, results: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout)
    )
    try:
        results[rank] = fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn_gloo(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 120.0) -> list:
    """Run ``fn(rank, world, *args)`` on ``world`` Gloo processes on localhost.

    Returns the list of the ranks' return values (they must be picklable). Used by the
    tests and benchmarks to compare distributed runs with serial ones.
    """
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(
            _spawn_entry,
            args=(fn, world, free_port(), timeout, args, results),
            nprocs=world,
            join=True,
        )
        return [results[r] for r in range(world)]
