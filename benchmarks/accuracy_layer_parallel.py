"""Accuracy kept: layer-parallel training against exact serial training, several seeds.

For every data set and seed, ``torchpint train-layer-parallel --serial-baseline`` trains
``conv_resnet`` (N = 32 steps, 3 levels, cfactor 4, 2 forward / 1 adjoint MGRIT
iterations by default) and the same network with exact forward and backprop, from the same
initial weights on the same batches. Runs go two at a time (one thread each). Prints the
test accuracy of both (mean +- sd over seeds) and the per-seed difference; writes JSON.

    python benchmarks/accuracy_layer_parallel.py \
        --json benchmarks/results/accuracy_layer_parallel.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import mean_std, write_json  # this directory is on sys.path

# dataset -> options of the run (16x16 inputs keep a shapes run within a few minutes)
DATASETS: dict[str, list[str]] = {
    "digits": ["--image-size", "16"],
    "shapes": ["--image-size", "16"],
}


def run_one(dataset: str, seed: int, extra: list[str], folder: str) -> dict[str, Any]:
    """One run of the command line; its JSON."""
    out = os.path.join(folder, f"{dataset}-{seed}.json")
    cmd = [sys.executable, "-m", "torchpint", "train-layer-parallel", "--dataset", dataset,
           "--seed", str(seed), "--serial-baseline", "--no-progress", "--json", out,
           *DATASETS[dataset], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out) as f:
        result = json.load(f)
    result["wall_s"] = time.perf_counter() - t
    return result


def _stats(xs: list[float]) -> dict[str, float]:
    """Mean and standard deviation of ``xs``."""
    mean, sd = mean_std(xs)
    return {"mean": mean, "sd": sd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time")
    ap.add_argument("--json", default=None)
    ap.add_argument("extra", nargs=argparse.REMAINDER,
                    help="after --: more options of train-layer-parallel, e.g. -- --epochs 2")
    args = ap.parse_args()
    extra = [x for x in args.extra if x != "--"]
    cells = [(d, s) for d in args.datasets for s in args.seeds]
    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda c: run_one(*c, extra, folder), cells))
    table: dict[str, Any] = {}
    print(f"\ntest accuracy (%), {len(args.seeds)} seeds, options {extra or 'defaults'}")
    print(f"{'dataset':>8} {'layer-parallel':>16} {'serial':>16} {'diff (LP - serial)':>30}")
    for d in args.datasets:
        rs = [r for (dd, _), r in zip(cells, runs, strict=True) if dd == d]
        lp = [r["layer_parallel"]["test_accuracy"] for r in rs]
        se = [r["serial"]["test_accuracy"] for r in rs]
        diff = [a - b for a, b in zip(lp, se, strict=True)]
        table[d] = {"layer_parallel": _stats(lp), "serial": _stats(se), "diff": _stats(diff),
                    "per_seed": {"layer_parallel": lp, "serial": se},
                    "gradient_check": [r["gradient_check"] for r in rs],
                    "wall_s": [r["wall_s"] for r in rs],
                    "config": rs[0]["config"]}
        t = table[d]
        print(f"{d:>8} {t['layer_parallel']['mean']:>8.2f} +- {t['layer_parallel']['sd']:<4.2f} "
              f"{t['serial']['mean']:>8.2f} +- {t['serial']['sd']:<4.2f} "
              f"{t['diff']['mean']:>+8.2f} +- {t['diff']['sd']:.2f} "
              f"({', '.join(f'{x:+.2f}' for x in diff)})")
    write_json(args.json, {"seeds": args.seeds, "extra": extra, "table": table}, indent=1)


if __name__ == "__main__":
    main()
