"""Checkpoint files: written atomically, read safely, checked against the run resuming them.

A crash mid-write never leaves a torn file, a failed write (disk full, read-only) is a
:class:`~torchpint.runtime.files.WriteError` that keeps the previous file, and two live
runs cannot write one path (:func:`atomic_save`). Reading goes through
``torch.load(weights_only=True)`` (a checkpoint cannot run code), and a file that does
not load is a :class:`CheckpointError` naming it. A checkpoint carries a *fingerprint*
(a JSON-able dict of everything that defines the solution); :func:`check_fingerprint`
refuses one from another run with a :class:`CheckpointMismatchError` naming each field
that differs.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from torchpint.runtime.files import atomic_write_bytes, claim

RESUME_HINT = \
    "delete it (or use another checkpoint path) to start afresh, or run without resume"


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: corrupt, empty, truncated, or an incomplete set."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written by another run (another problem, u_0 or solver settings)."""


def atomic_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save(payload)`` to ``path``, whole or not at all, by one writer.

    The first save claims ``path`` for this process (:func:`~torchpint.runtime.files.claim`:
    another live writer is a ``LockedError``). The bytes are serialised in memory, then
    written under a temporary name unique to this writer and renamed over ``path``; a
    failed write raises ``WriteError`` and leaves the previous checkpoint intact.
    """
    claim(path)
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getbuffer())


def load_checkpoint(path: str | os.PathLike, hint: str = RESUME_HINT) -> dict[str, Any]:
    """The dict saved at ``path``, loaded onto the CPU with ``weights_only=True``.

    A missing file raises ``FileNotFoundError``. A folder, an empty, truncated or corrupt
    file, one holding objects beyond tensors and plain data (a checkpoint must not be able
    to run code), or one that is not a dict raises :class:`CheckpointError` naming the
    file and ending in ``hint`` (what to do instead).
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p} is a folder, not a file; {hint}")
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {p}: {err}") from err
    if size == 0:
        raise CheckpointError(f"checkpoint {p} is empty; {hint}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL \S+", str(err))
        if found is None:  # a torn or foreign pickle
            raise CheckpointError(f"checkpoint {p} cannot be read (corrupt or truncated: "
                                  f"{_first_line(err)}); {hint}") from err
        raise CheckpointError(
            f"checkpoint {p} cannot be read: it holds objects other than tensors and plain "
            f"data ({found.group(0)}), which torchpint does not load (a checkpoint must not "
            f"run code); {hint}"
        ) from err
    except Exception as err:  # torch raises RuntimeError, EOFError, ... on a damaged file
        raise CheckpointError(
            f"checkpoint {p} cannot be read (corrupt, truncated, or not a torchpint "
            f"checkpoint: {_first_line(err)}); {hint}"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {p} holds a {type(state).__name__}, not a torchpint checkpoint; {hint}"
        )
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def tensor_digest(t: torch.Tensor) -> str:
    """``sha256:<hex>`` of a tensor's dtype, shape and bytes (on the CPU, contiguous).

    Device-independent: the same values on a GPU and on the CPU give the same digest.
    """
    c = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{c.dtype}{tuple(c.shape)}".encode())
    if c.numel():
        h.update(c.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def digest_json(obj: Any) -> str:
    """``sha256:<hex>`` of a JSON-able object (keys sorted), e.g. a model's layout."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def plain(obj: Any) -> Any:
    """``obj`` with plain Python types only (NumPy scalars become int/float, tuples lists,
    anything else its ``str``), so a fingerprint saves and loads with ``weights_only``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return str(obj)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, tuple):
        d = list(d)
    return {prefix: d}


def _show(v: Any, missing: object) -> str:
    if v is missing:
        return "(absent)"
    if isinstance(v, str) and v.startswith("sha256:"):
        return v[:19] + "..."  # a digest: its head tells two apart
    return repr(v)


def fingerprint_diff(saved: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    """One line per field that differs: ``"problem.lam: checkpoint -1.0, this run -5.0"``."""
    a, b = _flatten(saved), _flatten(mine)
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, missing), b.get(key, missing)
        if x != y:
            xs, ys = _show(x, missing), _show(y, missing)
            lines.append(f"{key}: checkpoint {xs}, this run {ys}")
    return lines


def check_fingerprint(
    saved: Mapping[str, Any] | None, mine: Mapping[str, Any], path: str | os.PathLike
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``saved`` equals ``mine``.

    The message names every differing field with the checkpoint's and this run's values.
    """
    if saved is None:
        raise CheckpointMismatchError(
            f"checkpoint does not match this run: {path} has no fingerprint (it was written "
            f"by an older torchpint), so it cannot be shown to belong to this run; "
            f"{RESUME_HINT}"
        )
    diff = fingerprint_diff(saved, mine)
    if diff:
        raise CheckpointMismatchError(
            f"checkpoint does not match this run: {path} was written by another run; "
            f"differing fields: " + "; ".join(diff) + f". {RESUME_HINT[0].upper()}"
            f"{RESUME_HINT[1:]}."
        )


def rank_file(path: str | os.PathLike, rank: int, world: int) -> Path:
    """The file rank ``rank`` of ``world`` writes: ``path`` itself on one rank, else
    ``path.rank<r>``."""
    p = Path(path)
    return p if world == 1 else p.with_name(f"{p.name}.rank{rank}")


def rank_files(path: str | os.PathLike) -> dict[int, Path]:
    """The ``path.rank<r>`` files that exist, by rank (temporary files excluded)."""
    p = Path(path)
    pattern = re.compile(re.escape(p.name) + r"\.rank(\d+)$")
    try:  # (iterdir is lazy: a missing folder fails when listed, so list it here)
        entries: Iterable[Path] = list(p.parent.iterdir())
    except OSError:  # no folder yet: no files
        return {}
    found = {}
    for e in entries:
        m = pattern.fullmatch(e.name)
        if m:
            found[int(m.group(1))] = e
    return found
