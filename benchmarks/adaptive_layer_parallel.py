"""Adaptive iterations against fixed ones and against exact training, on a run long enough
to plateau (issue 28, item 3).

For every seed, ``torchpint train-layer-parallel`` trains the issue-26 network
(``conv_resnet``, N = 32 steps of 4 channels, digits at 16x16, batch 50) several ways from
the same initial weights on the same batches:

- ``fixed``: 2 forward / 1 adjoint MGRIT iterations, 3 levels, cfactor 4 (the defaults);
- ``adaptive@RHO``: the same start, with ``--adaptive`` (a probe of the gradient error
  every ``--every`` batches; iterations doubled, then exact solves, when it stays above
  RHO), for each of ``--thresholds``;
- ``exact``: ``--levels 1``, layer-parallel's exact solves (backprop's gradient through the
  solver);
- ``serial``: ordinary backprop (the fixed run's ``--serial-baseline``).

Runs go ``--jobs`` at a time, one thread each, so wall times compare only within a row of
equal load; the JSON records each epoch's time. Prints final test accuracy and loss (mean
+- sd over seeds), the wall time of training, and where the adaptive runs raised.

    python benchmarks/adaptive_layer_parallel.py \
        --json benchmarks/results/adaptive_layer_parallel.json
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

from common import RESULTS, mean_std, write_json  # this directory is on sys.path

NETWORK = ["--dataset", "digits", "--image-size", "16", "--layers", "32", "--channels", "4",
           "--batch-size", "50"]


def variants(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each variant's options: fixed (with the serial baseline), adaptive at each
    threshold, exact."""
    return {"fixed": ["--serial-baseline"],
            **{f"adaptive@{t:g}": ["--adaptive", "--adaptive-every", str(args.every),
                                   "--adaptive-threshold", str(t)] for t in args.thresholds},
            "exact": ["--levels", "1"]}


def run_one(variant: str, seed: int, args: argparse.Namespace, folder: str) -> dict[str, Any]:
    """One run of the command line; its JSON."""
    out = os.path.join(folder, f"{variant}-{seed}.json")
    extra = variants(args)[variant]
    cmd = [sys.executable, "-m", "torchpint", "train-layer-parallel", *NETWORK, "--epochs",
           str(args.epochs), "--lr", str(args.lr), "--seed", str(seed), "--no-progress",
           "--json", out, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise RuntimeError(f"{variant} seed {seed}: exit {proc.returncode}: "
                           f"{proc.stderr[-2000:]}")
    with open(out) as f:
        result = json.load(f)
    result["wall_s"] = time.perf_counter() - t0
    return result


def _record(r: dict[str, Any]) -> dict[str, Any]:
    """What the table needs of one trained network's results."""
    last = r["history"][-1]
    return {"test_accuracy": r["test_accuracy"], "test_loss": last["test_loss"],
            "train_s": sum(h["epoch_time_s"] for h in r["history"]),
            "step_time_s": r["step_time_s"],
            "test_loss_per_epoch": [h["test_loss"] for h in r["history"]]}


def _stats(xs: list[float]) -> dict[str, Any]:
    mean, sd = mean_std(xs)
    return {"mean": mean, "sd": sd, "values": xs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--every", type=int, default=20, help="batches between probes")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.02],
                   help="relative gradient errors of the adaptive variants (default: the "
                   "CLI's 0.5, and 0.02, near the errors these runs start from)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--plot", default=str(RESULTS / "adaptive_layer_parallel.png"))
    args = p.parse_args()
    t0 = time.perf_counter()
    jobs = [(v, s) for s in args.seeds for v in variants(args)]
    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda job: run_one(*job, args, folder), jobs))
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in (*variants(args), "serial")}
    probes: dict[str, list[list[dict[str, Any]]]] = {}
    for (variant, _), r in zip(jobs, done, strict=True):
        runs[variant].append(_record(r["layer_parallel"]))
        if variant == "fixed":
            runs["serial"].append(_record(r["serial"]))
        if variant.startswith("adaptive"):
            probes.setdefault(variant, []).append(r["layer_parallel"]["adaptive"])
    table = {v: {k: _stats([x[k] for x in rs]) for k in ("test_accuracy", "test_loss",
                                                         "train_s", "step_time_s")}
             for v, rs in runs.items()}
    print(f"\n{args.epochs} epochs, seeds {args.seeds}; mean +- sd over seeds "
          f"({args.jobs} runs side by side, one thread each)")
    print(f"{'variant':14} {'test acc %':>16} {'test loss':>18} {'train s':>14} "
          f"{'step ms':>14}")
    for v, t in table.items():
        a, lo, s, st = (t[k] for k in ("test_accuracy", "test_loss", "train_s", "step_time_s"))
        print(f"{v:14} {a['mean']:8.2f} +- {a['sd']:4.2f} {lo['mean']:9.4f} +- {lo['sd']:.4f} "
              f"{s['mean']:7.1f} +- {s['sd']:4.1f} {1e3 * st['mean']:7.1f} +- "
              f"{1e3 * st['sd']:4.1f}")
    for variant, per_seed in probes.items():
        for seed, ps in zip(args.seeds, per_seed, strict=True):
            raised = [f"batch {h['step']} -> {h['raised_to']}" for h in ps if h["raised_to"]]
            errs = [h["grad_rel_err"] for h in ps]
            print(f"{variant} seed {seed}: {len(ps)} probes, gradient error "
                  f"{min(errs):.1e}..{max(errs):.1e}; raised: {', '.join(raised) or 'never'}")
    _plot(runs, args.plot)
    write_json(args.json, {"epochs": args.epochs, "seeds": args.seeds, "lr": args.lr,
                           "every": args.every, "thresholds": args.thresholds,
                           "jobs": args.jobs, "network": NETWORK, "table": table,
                           "runs": runs, "probes": probes,
                           "wall_s": time.perf_counter() - t0})


def _plot(runs: dict[str, list[dict[str, Any]]], path: str) -> None:
    """Test loss per epoch, each variant's mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for v, rs in runs.items():
        curves = [r["test_loss_per_epoch"] for r in rs]
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(len(curves[0]))]
        ax.plot(range(1, len(mean) + 1), mean, label=v)
    ax.set(xlabel="epoch", ylabel="test loss (mean over seeds)", yscale="log",
           title="layer-parallel: fixed, adaptive and exact iterations")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
