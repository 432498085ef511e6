"""Results files and plots: checked before the work, written whole.

A run that would fail only at its end, after hours, because ``--plot out.xyz`` names a
format matplotlib lacks or ``--json`` points at a read-only disk, fails before it starts
(:func:`check_writable`, :func:`plot_path`). JSON is strict (NaN and inf become null) and
written atomically, so a full disk keeps the previous results and readers never see a
torn file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from torchpint.runtime.files import atomic_write, atomic_write_text, write_error

PLOT_FORMATS = ("eps", "jpeg", "jpg", "pdf", "pgf", "png", "ps", "raw", "rgba", "svg",
                "svgz", "tif", "tiff", "webp")  # matplotlib's Agg backend


def finite(obj: Any) -> Any:
    """``obj`` with non-finite floats as None, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented strict JSON, atomically, creating the parent folder; a
    failed write is a ``WriteError`` that names the path and keeps the old file."""
    text = json.dumps(finite(data), indent=1, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def check_writable(path: str | os.PathLike | None, folder: bool = False) -> None:
    """Fail now, not after the work, when ``path`` (a file, or a ``folder``) cannot be
    written: its folder cannot be created, a file or folder is in the way, or the file
    system refuses a new file there. Creates the folders, as writing would."""
    if path is None:
        return
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
        raise write_error(p, err) from err


def plot_path(path: str | os.PathLike) -> Path:
    """The file a plot will be written to: ``path`` with ``.png`` added when it has no
    suffix; a suffix matplotlib cannot write is a ``ValueError`` naming the formats."""
    p = Path(path)
    if not p.suffix:
        return p.with_name(p.name + ".png")
    fmt = p.suffix[1:].lower()
    if fmt not in PLOT_FORMATS:
        raise ValueError(
            f"cannot plot to {p}: matplotlib does not write .{fmt} files; use one of "
            + ", ".join(f".{f}" for f in PLOT_FORMATS)
        )
    return p


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """``fig.savefig`` to ``path`` atomically (format from the suffix)."""
    p = plot_path(path)
    fmt = p.suffix[1:].lower()
    return atomic_write(p, lambda f: fig.savefig(f, format=fmt))
