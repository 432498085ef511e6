"""Accuracy study: the parareal network against the original, same recipe, several seeds.

For every data set (``digits`` and ``shapes`` by default, both made without download), model
and seed: build the model, copy it (same initial weights), cut one copy into a parareal
network with N chunks, and train both with the same SGD recipe on the same batches. The
seed fixes the split (digits) or the drawn images (shapes), the initial weights and the
batch order. Prints mean and spread of the test accuracy, the per-seed difference, and
whether parareal is within ``--tolerance`` points of the original on average; writes JSON.

    python benchmarks/accuracy_parareal.py --json benchmarks/results/accuracy_parareal.json

Runs on the ``serial`` executor: all executors compute the same network (tested), and one
process is the fastest way to train many small models on a shared CPU.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch

from common import (  # this directory is on sys.path
    DATASETS,
    PLAN,
    fit_record,
    mean_std,
    recipe,
    write_json,
)
from torchpint.parareal import default_coarse, parareal_network


def _coarse(variant: str) -> Any:
    """``None`` (the library's default coarse nets) or a builder for a study variant."""
    if variant == "default":
        return None
    if variant == "bn":  # the default coarse nets with batch norm (the pitfall, for comparison)
        return lambda j, fine, x, y: default_coarse(x, y, norm=True)
    return variant  # a kind of the default builder for every chunk: conv, pool or preact


def one_run(
    dataset: str, model_name: str, seed: int, chunks: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Train original and parareal from the same initial weights; their test accuracies."""
    data, cfg, model = recipe(
        dataset, model_name, seed, args.epochs, args.batch_size, args.lr, args.width
    )
    original = copy.deepcopy(model)
    x = next(iter(data.train))[0][:8]
    net = parareal_network(
        model,
        chunks,
        iterations=args.iterations,
        balance="flops",
        example_input=x,
        coarse=_coarse(args.coarse),
    )
    out: dict[str, Any] = {"dataset": dataset, "model": model_name, "seed": seed}
    for label, m in (("original", original), ("parareal", net)):
        out[label] = fit_record(m, data, cfg, label)
    out["difference"] = out["parareal"]["test_accuracy"] - out["original"]["test_accuracy"]
    return out


def _stats(xs: list[float]) -> dict[str, float]:
    """Mean, standard deviation, min and max of ``xs``."""
    mean, std = mean_std(xs)
    return {"mean": mean, "std": std, "min": min(xs), "max": max(xs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        choices=list(DATASETS),
        help="with --models: every pair (default: the plan in PLAN)",
    )
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--width", type=int, default=None, help="override the presets' width")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--chunks", type=int, default=2)
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="override the per-dataset epochs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--coarse", default="default", choices=("default", "bn", "conv", "pool", "preact")
    )
    p.add_argument("--tolerance", type=float, default=1.0, help="allowed gap, points")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    runs, summary = [], []
    t_all = time.perf_counter()
    if args.datasets is None and args.models is None:
        plan = list(PLAN)
    else:
        plan = [
            (d, m)
            for d in (args.datasets or list(DATASETS))
            for m in (args.models or ["vgg-small"])
        ]
    for ds, model_name in plan:
        rs = []
        for seed in args.seeds:
            r = one_run(ds, model_name, seed, args.chunks, args)
            rs.append(r)
            print(
                f"  {ds:7} {model_name:12} seed {seed}: original "
                f"{r['original']['test_accuracy']:6.2f}%  parareal "
                f"{r['parareal']['test_accuracy']:6.2f}%  "
                f"({r['original']['time_s'] + r['parareal']['time_s']:.0f} s)",
                flush=True,
            )
        runs.extend(rs)
        o = _stats([r["original"]["test_accuracy"] for r in rs])
        q = _stats([r["parareal"]["test_accuracy"] for r in rs])
        d = _stats([r["difference"] for r in rs])
        summary.append(
            {
                "dataset": ds,
                "model": model_name,
                "seeds": args.seeds,
                "original": o,
                "parareal": q,
                "difference": d,
                "within_tolerance": q["mean"] >= o["mean"] - args.tolerance,
            }
        )
    print(
        f"\nparareal (N={args.chunks}, k={args.iterations}, coarse {args.coarse}) vs original, "
        f"test accuracy over seeds {args.seeds} (mean +- std, %)"
    )
    print(f"{'dataset':8} {'model':12} {'original':>16} {'parareal':>16} {'diff':>14}  ok")
    for s in summary:
        o, q, d = s["original"], s["parareal"], s["difference"]
        print(
            f"{s['dataset']:8} {s['model']:12} {o['mean']:8.2f} +- {o['std']:4.2f} "
            f"{q['mean']:8.2f} +- {q['std']:4.2f} {d['mean']:+7.2f} +- {d['std']:4.2f}  "
            f"{'yes' if s['within_tolerance'] else 'NO'}"
        )
    total = time.perf_counter() - t_all
    print(f"total {total:.0f} s")
    write_json(
        args.json, {"settings": vars(args), "summary": summary, "runs": runs, "time_s": total}
    )
    return 0 if all(s["within_tolerance"] for s in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
