"""What the subcommands share: rank-0 output, JSON files, devices, the process group,
and the one-line failure message of the exit-code contract."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def is_main() -> bool:
    """Rank 0 of the default process group, or the only process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def say(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only (every rank runs the same command under torchrun)."""
    if is_main():
        print(*args, **kwargs, flush=True)


def fail(command: str, what: str, err: BaseException | str, code: int,
         args: argparse.Namespace | None = None) -> int:
    """Print ``torchpint COMMAND: WHAT: message`` (rank 0) and return ``code``; a diverged
    run with ``--json`` also records the error there. ``TORCHPINT_TRACEBACK=1`` re-raises
    an exception, for debugging."""
    if os.environ.get("TORCHPINT_TRACEBACK") and isinstance(err, BaseException):
        raise err
    if is_main():
        print(f"torchpint {command}: {what}: {err}", file=sys.stderr, flush=True)
        path = getattr(args, "json", None)
        if path and what == "diverged":
            write_json(path, {"diverged": True, "error": str(err)})
    return code


def _finite(obj: Any) -> Any:
    """``obj`` with non-finite floats as None, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, strict JSON (NaN/inf become null), creating the parent
    folder; an unwritable path is a ``ValueError`` that names it."""
    p = Path(path)
    text = json.dumps(_finite(data), indent=1, default=str, allow_nan=False)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    except OSError as err:
        raise ValueError(f"cannot write {p}: {err.strerror or err}") from err


def save_outputs(args: argparse.Namespace, data: Any, plot: Callable[[str], None]) -> None:
    """Rank 0 writes ``data`` to ``--json`` and calls ``plot(path)`` for ``--plot``."""
    if not is_main():
        return
    if getattr(args, "json", None):
        write_json(args.json, data)
        say(f"wrote {args.json}")
    if getattr(args, "plot", None):
        plot(args.plot)
        say(f"wrote {args.plot}")


def bounded(kind: type = float, low: float | None = None, high: float | None = None, *,
            low_open: bool = False, high_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` that parses ``kind`` (int or a finite float) within bounds, so a
    value that would be replaced, ignored or poison a run is refused at parse time."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    want = " and ".join(x for x in (lo, hi) if x)
    noun = "a whole number" if kind is int else "a finite number"
    need = f"{noun} {want}".strip()

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}") from None
        bad = kind is float and not math.isfinite(value)
        if low is not None:
            bad = bad or value < low or (low_open and value == low)
        if high is not None:
            bad = bad or value > high or (high_open and value == high)
        if bad:
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
        return value

    return parse


POSITIVE = bounded(float, 0, low_open=True)
COUNT = bounded(int, 1)  # a count of steps, iterations, epochs, threads...


def check_writable(path: str | os.PathLike | None, folder: bool = False) -> None:
    """Fail now, not after the work, when ``path`` (a file, or a ``folder``) cannot be
    written: its folder cannot be created, a file or folder is in the way, or the file
    system refuses a new file there. Creates the folders, as writing would."""
    if path is None:
        return
    import tempfile

    p = Path(path)
    where = p if folder else p.parent
    try:
        if not folder and p.is_dir():
            raise ValueError(f"cannot write {p}: it is a folder; give a file name")
        if where.exists() and not where.is_dir():
            raise ValueError(f"cannot write {p}: {where} is a file, not a folder")
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".torchpint-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"cannot write {p}: {err.strerror or err}") from err


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: every output option of the subcommand can be written, and
    ``--resume`` has a checkpoint to continue."""
    saved = getattr(args, "checkpoint", None) or getattr(args, "checkpoint_dir", None)
    if getattr(args, "resume", False) and not saved:
        flag = "--checkpoint PATH" if hasattr(args, "checkpoint") else "--checkpoint-dir DIR"
        raise ValueError(f"--resume needs {flag} (the run to continue)")
    for name in ("json", "plot", "checkpoint"):
        check_writable(getattr(args, name, None))
    for name in ("checkpoint_dir", "out"):
        check_writable(getattr(args, name, None), folder=True)


def add_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=POSITIVE, default=300.0,
        help="seconds a rank waits for its peers before it fails with an error (a peer "
        "died or hung; default 300)",
    )


def parse_devices(spec: str | None) -> list[torch.device] | None:
    """``"cuda:0,cuda:1"`` / ``"0,1"`` / ``"cpu"`` -> devices, checked to exist."""
    from torchpint.common.devices import resolve_device

    if spec is None or not spec.strip():
        return None
    return [resolve_device(item) for item in spec.split(",")]


def local_rank() -> int:
    """This process's rank on its machine under torchrun (0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0)))
