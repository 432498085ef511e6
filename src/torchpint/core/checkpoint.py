"""Checkpoint files written atomically (solver states here, training runs in the
applications): a crash mid-write never leaves a torn file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def atomic_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save(payload)`` to ``path`` through a temporary file and a rename.

    The parent folder is created. Readers see the old file or the new one, never a part.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, p)
