"""The paper's Fig. 7 recomputed: potential speedup of the adder's Solver 2 cycles.

For Tables 14 (F-cycle), 15 (V-cycle) and 16 (F-cycle, slow growth) of
``mgrit_training_tables.py --problem adder-paper``, the cost model of
``torchpint.core.potential_speedup`` (serial steps over the MGRIT critical path with one
processor per coarse interval, P = N/2, communication free) with our iteration counts
(median over seeds) and with the published ones, for every N.

    python benchmarks/mgrit_potential_speedup.py \\
        --tables benchmarks/results/mgrit_training_tables_adder_paper.json \\
        --json benchmarks/results/mgrit_potential_speedup_adder.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from common import PAPER_ADDER, write_json  # this directory is on sys.path
from torchpint.core import potential_speedup
from torchpint.core.grid import Grid
from torchpint.training.config import solver_options

CASES = ("T15 Solver2 V a=0.025", "T16 Solver2 F a=0.025 g=1.25", "T14 Solver2 F a=0.025")


def speedup(name: str, n: int, iterations: int) -> float:
    """The model's speedup of variant ``name`` at N = ``n`` after ``iterations``."""
    opts = solver_options(PAPER_ADDER[name]["solver"])
    grid = Grid(n, 2, opts.get("levels"), 2, opts.get("max_coarse", 1))
    return potential_speedup(grid, iterations, n // 2, relax="FCF", cycle=opts["cycle"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", default="benchmarks/results/mgrit_training_tables_adder_paper.json")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    records = json.loads(Path(args.tables).read_text())["records"]
    out: dict[str, Any] = {}
    for name in CASES:
        cfg = PAPER_ADDER[name]
        rows = []
        for n, pub in zip(cfg["steps"], cfg["paper"], strict=True):
            its = [r["iterations"] for r in records if r["variant"] == name
                   and r["steps"] == n and r.get("converged")]
            ours = statistics.median(its) if its else None
            rows.append({"steps": n, "ours": ours, "paper": pub,
                         "speedup_ours": speedup(name, n, round(ours)) if ours else None,
                         "speedup_paper": speedup(name, n, pub)})
        out[name] = rows
        print(f"\n{name}: potential speedup (P = N/2), ours [median iterations] vs paper's")
        for r in rows:
            ours = ("-" if r["ours"] is None
                    else f"{r['speedup_ours']:.2f} [{r['ours']:g}]")
            print(f"  N={r['steps']:>6}  ours {ours:>14}   paper "
                  f"{r['speedup_paper']:.2f} [{r['paper']}]")
    write_json(args.json, out, indent=1)


if __name__ == "__main__":
    main()
