"""Studies in resumable cells, shared by the long benchmarks (Fashion-MNIST, the GPT).

A cell is one run of a study (a dict with an ``id`` and a ``study``); a finished cell
writes its own JSON, atomically, and a rerun skips the cells whose JSON exists, so a
study resumes after any stop and no session waits on it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import mean_std, write_json  # benchmarks/ on sys.path

Cell = dict[str, Any]


def select(cells: list[Cell], patterns: list[str] | None) -> list[Cell]:
    """The cells whose id matches one of ``patterns`` (a glob, or a substring); all
    without patterns."""
    if not patterns:
        return cells
    pats = [p if any(c in p for c in "*?[") else f"*{p}*" for p in patterns]
    return [c for c in cells if any(fnmatch.fnmatch(c["id"], p) for p in pats)]


def cell_path(out: Path, cell_id: str) -> Path:
    return out / f"{cell_id}.json"


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON at ``path``: written to a temporary name beside it, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stats(xs: list[float]) -> dict[str, Any]:
    """Mean, sd, count and the values themselves."""
    mean, sd = mean_std(xs)
    return {"mean": mean, "sd": sd, "n": len(xs), "values": xs}


def run_cells(cells: list[Cell], out: Path, *, estimate: Callable[[Cell], float],
             spawn: Callable[[Cell], bool], jobs: int, list_only: bool,
             alone: Callable[[Cell], bool], cores: Callable[[Cell], int] = lambda c: 1,
             width: int = 48) -> int:
    """Print the plan with each cell's estimated seconds (``estimate``) and the cost, then
    run the cells without JSON (``spawn``: whether it succeeded): ``jobs`` at a time,
    then those that must run ``alone`` (timings) one at a time; 1 if any failed."""
    todo = [c for c in cells if not cell_path(out, c["id"]).exists()]
    print(f"plan: {len(cells)} cells, {len(cells) - len(todo)} done already, {len(todo)} to "
          f"run in {out}; jobs {jobs}")
    core_s = 0.0
    for c in cells:
        est = estimate(c)
        done = c not in todo
        core_s += 0 if done else est * cores(c)
        print(f"  {c['id']:{width}} {'done' if done else f'~{est / 60:6.1f} min'}")
    # longest first, so that side-by-side slots finish together
    side = sorted((c for c in todo if not alone(c)), key=estimate, reverse=True)
    seq = [c for c in todo if alone(c)]
    wall = sum(map(estimate, side)) / max(1, jobs) + sum(map(estimate, seq))
    print(f"estimated cost (rough): {core_s / 3600:.2f} core-hours, ~{wall / 3600:.2f} h wall "
          f"at --jobs {jobs}", flush=True)
    if list_only:
        return 0
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        ok = dict(zip((c["id"] for c in side), pool.map(spawn, side), strict=True))
    ok.update((c["id"], spawn(c)) for c in seq)
    failed = [cid for cid, good in ok.items() if not good]
    if failed:
        print(f"FAILED cells (rerun to retry): {', '.join(failed)}")
        return 1
    return 0


def run_then_summarize(args: Any, out: Path, run_plan: Callable[[Any, Path], int],
                       summarize: Callable[[Path], dict[str, Any]],
                       show: Callable[[dict[str, Any]], None]) -> int:
    """A study's main: its plan run (unless ``--summary`` alone), then the tables of
    ``out``'s cells printed and written as JSON (``--json``)."""
    if not args.summary or args.quick:
        rc = run_plan(args, out)
        if rc or args.list:
            return rc
    s = summarize(out)
    show(s)
    write_json(args.json, s)
    return 0
