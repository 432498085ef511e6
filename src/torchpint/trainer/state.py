"""The checkpoint of :func:`~torchpint.trainer.fit`, in the floor's one dialect.

A checkpoint is written at the end of every epoch, and at the batch where a signal
stopped the run, with the data position: the epoch in progress, the batches done, the
partial sums of its log line and the random-number state, so that a resumed run continues
bit for bit. Its fingerprint (the recipe, what identifies the run, and the number of
ranks for a model whose ranks hold different parts) must match the resuming run's:
``CheckpointMismatchError`` names every field that differs.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import torch

from torchpint.runtime.checkpoint import (
    CheckpointMismatchError,
    atomic_save,
    check_fingerprint,
    load_checkpoint,
    plain,
)
from torchpint.trainer.config import FitConfig

KEYS = ("epoch", "config", "model", "optimizer", "scheduler", "history", "step_times")
UNREADABLE = "delete it, or drop --resume to start from scratch"


def read(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by ``fit`` (onto the CPU; ``load_state_dict`` places it).

    Read safely (``weights_only``; a missing file is ``FileNotFoundError``, a damaged one
    a ``CheckpointError`` naming it), and refused unless it has every key ``fit`` writes.
    """
    state = load_checkpoint(path, hint=UNREADABLE)
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise ValueError(
            f"{os.fspath(path)} is not a torchpint training checkpoint (no "
            f"{', '.join(missing)}); {UNREADABLE}"
        )
    return state


def fingerprint(cfg: FitConfig, run: dict[str, Any] | None, world: int) -> dict[str, Any]:
    """What a checkpoint must share with the run resuming it."""
    fp: dict[str, Any] = {"config": plain(asdict(cfg)), "world": int(world)}
    if run is not None:
        fp["run"] = plain(run)
    return fp


def check(state: dict[str, Any], mine: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a checkpoint of another run, naming each differing field."""
    saved = {"config": plain(state.get("config")), "world": int(state.get("world", 1))}
    if "run" in mine:
        saved["run"] = state.get("run")
        if saved["run"] is None:
            check_fingerprint(None, mine, path)
    try:
        check_fingerprint(saved, mine, path)
    except CheckpointMismatchError as err:
        if saved["world"] != mine["world"]:
            raise CheckpointMismatchError(
                f"{err} Each of its {saved['world']} ranks holds a different part of the "
                f"model: resume on {saved['world']} ranks."
            ) from None
        raise


def rng_state() -> dict[str, Any]:
    """The random-number state a resumed run must continue from."""
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str, **fields: Any) -> None:
    """Write a ``fit`` checkpoint (see the module docstring for its fields)."""
    atomic_save(fields, path)
