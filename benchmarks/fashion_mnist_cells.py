"""Fashion-MNIST study, cell by cell and resumable: parareal and layer-parallel against the
exact networks (issue 27, item 4).

Cells (a cell = study, model, chunks or settings, epochs, seed; ``--list`` prints them):

- ``parareal-<model>-original-e<epochs>-s<seed>`` and ``parareal-<model>-N<n>-e<epochs>-s<seed>``:
  the model (pre-activation bottleneck ResNet-20 at width 16, or VGG-16-BN at width 16)
  trained as it is, and cut into a parareal network of N chunks (k = 1, coarse nets by
  default, cut points by FLOPs), each in its own cell from the same seed: the same initial
  weights and the same batches, so one original per seed serves every N. Both use the same
  SGD recipe (``torchpint.trainer.fit``, lr 0.05, momentum 0.9, weight decay 5e-4, cosine)
  for the model's epochs (VGG-16 5, ResNet-20 2: the budget; ``--epochs`` sets both).
- ``layer-parallel-conv_resnet-N<layers>C<channels>-e<epochs>-s<seed>``:
  ``torchpint train-layer-parallel --serial-baseline`` (layer-parallel MGRIT training and
  exact serial backprop, same initial weights and batches) at ``--lr 0.01`` (the default
  0.05 collapses to chance on Fashion-MNIST at 28x28).
- ``steptime-<model>-N<n>``: the time of one training step (batch of 32 Fashion-MNIST
  images) of the parareal network against the original, interleaved rounds: on 1 thread,
  and on 2 threads (the original with 2 intra-op threads; parareal with 2 intra-op threads
  on the serial executor, and with the ``threads`` executor). These cells run one at a
  time after the others, never side by side; their 2-thread figures mean something only
  on an otherwise idle machine with 2 free cores (the JSON records the load average).

Every finished cell writes its own JSON to ``--out`` (default
benchmarks/results/fashion_mnist/) atomically (a temporary name, then a rename); a rerun
skips the cells whose JSON exists, so the study resumes after any interruption. Each cell
runs in its own process with one thread (``--jobs`` of them side by side). The epochs are
part of a cell's id; ``--batch-size``, ``--lr`` and ``--augment`` are not (they are in its
JSON): give another ``--out`` when changing them.

    python benchmarks/fashion_mnist_cells.py                     # the whole plan (hours)
    python benchmarks/fashion_mnist_cells.py --cells layer-parallel --seeds 0
    python benchmarks/fashion_mnist_cells.py --summary [--json PATH]
    python benchmarks/fashion_mnist_cells.py --quick             # tiny, a temporary folder
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cells import (
    cell_path,
    run_cells,
    run_then_summarize,
    select,
    stats,
    write_atomic,
)  # benchmarks/ on sys.path
from common import (
    RESULTS,
    fit_record,
    log,
    machine_info,
)

OUT = RESULTS / "fashion_mnist"
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# the parareal study's models: name -> (preset, depth, width)
MODELS: dict[str, tuple[str, int | None, int]] = {
    "vgg16": ("vgg16", None, 16),  # VGG-16-BN, stages of 16-32-64-128-128 channels
    "resnet20": ("resnet", 20, 16),  # pre-activation bottleneck ResNet-20 (6 blocks)
}
CHUNKS = (2, 4)
# epochs per model, within the 4 core-hours: VGG-16 5; ResNet-20, 3x dearer a step, 2
EPOCHS: dict[str, int] = {"vgg16": 5, "resnet20": 2}
LP_EPOCHS = 1
# the layer-parallel settings: name -> (layers N, channels C)
LP_SETTINGS: dict[str, tuple[int, int]] = {"N32C8": (32, 8), "N32C16": (32, 16)}
LP_LR = 0.01

# single-thread seconds per epoch on the full training set (60,000 images, batch 32) of one
# network, measured here: (model, chunks) with chunks 0 the original; for the plan's estimate
EPOCH_S: dict[tuple[str, int], float] = {
    ("resnet20", 0): 280.0, ("resnet20", 2): 380.0, ("resnet20", 4): 550.0,
    ("vgg16", 0): 90.0, ("vgg16", 2): 95.0, ("vgg16", 4): 100.0,
    ("N32C8", 0): 1050.0, ("N32C16", 0): 2400.0,  # layer-parallel and serial together
}  # fmt: skip
STEPTIME_S = 120.0

# published Fashion-MNIST test accuracies (/usr/share/doc/dataset-fashion-mnist/README.md.gz,
# "Benchmark"; submitted, not verified there), for a sense of scale
REFERENCES: tuple[tuple[str, float], ...] = (
    ("2 Conv+pooling (TensorFlow doc)", 91.6),
    ("ResNet18, augmentation", 94.9),
    ("WRN40-4, crops and flips", 96.7),
)
TOLERANCE = 0.5  # points: "within 0.5 pt"


# ----------------------------------------------------------------------------- cells


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every cell of the study with these options, in the order they run."""
    cells = []
    q = "-quick" if args.quick else ""  # quick cells never pass for real ones
    for model in MODELS:
        e = args.epochs or EPOCHS[model]
        for s in args.seeds:
            cells.append({"id": f"parareal-{model}-original-e{e}-s{s}{q}", "study": "original",
                          "model": model, "chunks": 0, "epochs": e, "seed": s})
            for n in args.chunks:
                cells.append({"id": f"parareal-{model}-N{n}-e{e}-s{s}{q}", "study": "parareal",
                              "model": model, "chunks": n, "epochs": e, "seed": s})
    e = args.lp_epochs
    for name in args.lp_settings:
        for s in args.seeds:
            cells.append({"id": f"layer-parallel-conv_resnet-{name}-e{e}-s{s}{q}",
                          "study": "layer-parallel", "model": "conv_resnet",
                          "settings": name, "epochs": e, "seed": s})
    for model in MODELS:
        for n in args.chunks:
            cells.append({"id": f"steptime-{model}-N{n}{q}", "study": "steptime",
                          "model": model, "chunks": n, "seed": 0})
    return select(cells, args.cells)


def estimate_s(cell: dict[str, Any], fraction: float) -> float:
    """Rough seconds of ``cell`` (``fraction``: the share of the training set used)."""
    if cell["study"] == "steptime":
        return STEPTIME_S * (0.1 if fraction < 1 else 1.0)
    key = (cell["settings"], 0) if cell["study"] == "layer-parallel" else (
        cell["model"], cell["chunks"])
    return EPOCH_S[key] * cell["epochs"] * fraction


def tiny_fashion(folder: Path, num_train: int, num_test: int) -> Path:
    """The first ``num_train`` / ``num_test`` images of the installed Fashion-MNIST as IDX
    files in ``folder`` (for ``--quick``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        with gzip.open(Path(FASHION_ROOT) / f"{name}.gz", "rb") as f:
            raw = f.read()
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
        keep = num_train if name.startswith("train") else num_test
        item = 1
        for d in dims[1:]:
            item *= d
        head = raw[:4] + keep.to_bytes(4, "big") + raw[8:4 + 4 * ndim]
        body = raw[4 + 4 * ndim:4 + 4 * ndim + keep * item]
        (folder / name).write_bytes(head + body)
    return folder


# ----------------------------------------------------------------------------- one cell


def build(model: str, in_channels: int = 1) -> Any:
    from torchpint.models import build_model

    preset, depth, width = MODELS[model]
    return build_model(preset, depth=depth, width=width, num_classes=10,
                       in_channels=in_channels)


def run_parareal(cell: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The original (``chunks`` 0) or its parareal network, trained from the seed's initial
    weights on the seed's batches: an original cell and a parareal cell of one seed start
    from the same weights and see the same batches."""
    import torch

    from torchpint.data import make_loaders
    from torchpint.parareal import parareal_network
    from torchpint.trainer import FitConfig

    seed = cell["seed"]
    data = make_loaders("fashion-mnist", data_root=args.data_root, batch_size=args.batch_size,
                        seed=seed, augment=args.augment)
    cfg = FitConfig(epochs=cell["epochs"], lr=args.lr, momentum=0.9, weight_decay=5e-4,
                    seed=seed)
    torch.manual_seed(seed)
    model = build(cell["model"], data.in_channels)
    out: dict[str, Any] = {}
    if cell["chunks"]:
        x = next(iter(data.train))[0][:8]
        model = parareal_network(model, cell["chunks"], iterations=1, balance="flops",
                                 example_input=x)
        out["cut_points"] = list(getattr(model, "cut_points", []) or [])
    label = "parareal" if cell["chunks"] else "original"
    out[label] = fit_record(model, data, cfg, label, history=True)
    out["recipe"] = {"lr": args.lr, "momentum": 0.9, "weight_decay": 5e-4,
                     "schedule": "cosine", "batch_size": args.batch_size,
                     "augment": args.augment, "iterations": 1, "balance": "flops",
                     "coarse": "default"}
    return out


def run_layer_parallel(cell: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``torchpint train-layer-parallel --serial-baseline`` (one thread); its JSON."""
    layers, channels = LP_SETTINGS[cell["settings"]]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "run.json")
        cmd = [sys.executable, "-m", "torchpint", "train-layer-parallel",
               "--dataset", "fashion-mnist", "--layers", str(layers),
               "--channels", str(channels), "--epochs", str(cell["epochs"]),
               "--lr", str(LP_LR), "--seed", str(cell["seed"]), "--serial-baseline",
               "--no-progress"]
        if args.data_root:
            cmd += ["--data-root", str(args.data_root)]
        cmd += ["--json", path]  # last: the cell's JSON records the command without it
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        with open(path) as f:
            result = json.load(f)
    lp = result["layer_parallel"]["test_accuracy"]
    se = result["serial"]["test_accuracy"]
    return {"layer_parallel": result["layer_parallel"], "serial": result["serial"],
            "difference": lp - se, "gradient_check": result.get("gradient_check"),
            "config": result.get("config"), "command": cmd[1:-2]}


def run_steptime(cell: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved timed steps of the original and the parareal network on one batch."""
    import copy

    import torch

    from common import median_quartiles, step_fn
    from torchpint.data import make_loaders
    from torchpint.parareal import parareal_network

    data = make_loaders("fashion-mnist", data_root=args.data_root, batch_size=32, seed=0,
                        augment=False)
    x, y = next(iter(data.train))
    torch.manual_seed(0)
    model = build(cell["model"], data.in_channels)
    original = copy.deepcopy(model)
    net = parareal_network(model, cell["chunks"], iterations=1, balance="flops",
                           example_input=x[:8])
    reps, warmup = (3, 1) if args.quick else (args.reps, 2)
    variants: dict[str, tuple[int, Any, str | None]] = {
        "original 1 thread": (1, original, None),
        "parareal serial 1 thread": (1, net, "serial"),
        "original 2 threads": (2, original, None),
        "parareal serial 2 threads": (2, net, "serial"),
        "parareal threads-executor 2 threads": (2, net, "threads"),
    }
    steps = {name: step_fn(copy.deepcopy(m) if ex is None else m, x, y)
             for name, (_, m, ex) in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for threads in (1, 2):  # one thread count at a time: no pool rebuilt between steps
        torch.set_num_threads(threads)
        names = [k for k, v in variants.items() if v[0] == threads]
        for r in range(warmup + reps):  # interleaved rounds: drifting load cancels in ratios
            for name in names:
                ex = variants[name][2]
                if ex is not None:
                    net.set_executor(ex)
                t0 = time.perf_counter()
                steps[name]()
                dt = time.perf_counter() - t0
                if r >= warmup:
                    times[name].append(dt)
    net.set_executor("serial")

    def ratio(a: str, b: str) -> dict[str, float]:
        med, q1, q3 = median_quartiles([p / q for p, q in zip(times[a], times[b], strict=True)])
        return {"median": med, "q1": q1, "q3": q3}

    return {
        "batch_size": 32, "reps": reps, "warmup": warmup, "load_average": os.getloadavg(),
        "step_s": {k: statistics.median(v) for k, v in times.items()},
        "times_s": times,
        "ratios": {
            "parareal/original, 1 thread": ratio("parareal serial 1 thread",
                                                 "original 1 thread"),
            "parareal serial/original, 2 threads": ratio("parareal serial 2 threads",
                                                         "original 2 threads"),
            "parareal threads-executor/original, 2 threads":
                ratio("parareal threads-executor 2 threads", "original 2 threads"),
        },
    }


def run_cell(cell: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One cell in this process (single-threaded, except a step-time cell's 2 threads)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    fn = {"original": run_parareal, "parareal": run_parareal,
          "layer-parallel": run_layer_parallel,
          "steptime": run_steptime}[cell["study"]]
    result = fn(cell, args)
    return {**cell, **result, "quick": bool(args.quick),
            "data_root": str(args.data_root or FASHION_ROOT), "wall_s": time.perf_counter() - t0,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_info()}


def spawn(cell: dict[str, Any], args: argparse.Namespace, out: Path) -> tuple[str, int, float]:
    """Run ``cell`` in a fresh process (``--run-cell``), one intra-op thread."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-cell", cell["id"],
           "--out", str(out), "--lp-epochs", str(args.lp_epochs), "--seeds",
           *map(str, args.seeds), "--chunks", *map(str, args.chunks), "--lp-settings",
           *args.lp_settings, "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--augment", args.augment, "--reps", str(args.reps)]
    if args.data_root:
        cmd += ["--data-root", str(args.data_root)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.quick:
        cmd += ["--quick-cell"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    log(f"start {cell['id']}")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode:
        log(f"FAILED {cell['id']} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    else:
        log(f"done  {cell['id']} in {dt:.0f} s")
    return cell["id"], proc.returncode, dt


# ----------------------------------------------------------------------------- summary


def summarize(out: Path) -> dict[str, Any]:
    """Every cell JSON in ``out`` grouped over seeds: mean +- sd, per-seed differences."""
    records = []
    for p in sorted(out.glob("*.json")):
        try:
            records.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    originals = {(r["model"], r["epochs"], r["seed"], r.get("quick", False)): r
                 for r in records if r.get("study") == "original"}
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("study") == "parareal":  # paired with its seed's original, once it ran
            o = originals.get((r["model"], r["epochs"], r["seed"], r.get("quick", False)))
            if o is None:
                continue
            r = {**r, "original": o["original"]}
        if r.get("study") in ("parareal", "layer-parallel"):
            key = (r["study"], r["model"], r.get("chunks") or r.get("settings"), r["epochs"],
                   r.get("quick", False))
            groups.setdefault(key, []).append(r)
    accuracy = []
    for (study, model, setting, epochs, quick), rs in sorted(groups.items(), key=str):
        rs.sort(key=lambda r: r["seed"])
        a, b = ("parareal", "original") if study == "parareal" else ("layer_parallel", "serial")
        xa = [r[a]["test_accuracy"] for r in rs]
        xb = [r[b]["test_accuracy"] for r in rs]
        diffs = [p - q for p, q in zip(xa, xb, strict=True)]
        d = stats(diffs)
        accuracy.append({
            "study": study, "model": model,
            "setting": f"N={setting}" if study == "parareal" else setting,
            "epochs": epochs, "quick": quick, "seeds": [r["seed"] for r in rs],
            "method": stats(xa), "baseline": stats(xb), "difference": d,
            "method_name": a, "baseline_name": b,
            "within_tolerance": abs(d["mean"]) <= TOLERANCE,
        })
    steptime = [
        {"model": r["model"], "chunks": r["chunks"], "quick": r.get("quick", False),
         "step_s": r["step_s"], "ratios": r["ratios"]}
        for r in records if r.get("study") == "steptime"
    ]
    return {"folder": str(out), "cells": len(records), "tolerance_points": TOLERANCE,
            "accuracy": accuracy, "steptime": steptime,
            "references": [{"model": m, "test_accuracy": a} for m, a in REFERENCES],
            "references_note": "published results trained for far more epochs (and most "
                               "with augmentation); ours are short runs"}


def print_summary(s: dict[str, Any]) -> None:
    print(f"Fashion-MNIST cells in {s['folder']} ({s['cells']} cells)")
    print("\ntest accuracy (%), mean +- sd over seeds; diff = method - baseline per seed; "
          f"ok = |mean diff| <= {TOLERANCE} pt")
    print(f"{'study':15} {'model':12} {'setting':8} {'ep':>3} {'method':>15} "
          f"{'baseline':>15} {'diff':>14}  ok   per-seed diffs")
    for r in s["accuracy"]:
        m, b, d = r["method"], r["baseline"], r["difference"]
        tag = " (quick)" if r["quick"] else ""
        print(f"{r['study']:15} {r['model']:12} {r['setting']:8} {r['epochs']:>3} "
              f"{m['mean']:8.2f} +- {m['sd']:4.2f} {b['mean']:8.2f} +- {b['sd']:4.2f} "
              f"{d['mean']:+7.2f} +- {d['sd']:4.2f}  {'yes' if r['within_tolerance'] else 'NO':4} "
              f"{', '.join(f'{x:+.2f}' for x in d['values'])} "
              f"(seeds {r['seeds']}){tag}")
    if not s["accuracy"]:
        print("  (no accuracy cells yet)")
    print("  method/baseline: parareal/original, layer_parallel/serial")
    print("\nstep time, 1 batch of 32 (median ratio [quartiles] over interleaved rounds)")
    for r in s["steptime"]:
        tag = " (quick)" if r["quick"] else ""
        print(f"  {r['model']} N={r['chunks']}{tag}: original "
              f"{r['step_s']['original 1 thread'] * 1e3:.1f} ms (1 thread), "
              f"{r['step_s']['original 2 threads'] * 1e3:.1f} ms (2 threads)")
        for k, v in r["ratios"].items():
            print(f"    {k:48} {v['median']:.2f}x [{v['q1']:.2f}-{v['q3']:.2f}]")
    if not s["steptime"]:
        print("  (no step-time cells yet)")
    print("\npublished test accuracies (README of dataset-fashion-mnist), for scale only: "
          "those ran for far more epochs, most with augmentation; ours are short runs")
    for m, a in REFERENCES:
        print(f"  {m:34} {a:.1f}%")


# ----------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", default=None, metavar="PATTERN",
                   help="run only cells whose id matches (substring or glob), e.g. "
                        "layer-parallel, 'parareal-resnet20-N2-*-s0'")
    p.add_argument("--jobs", type=int, default=2, help="cells side by side (default 2)")
    p.add_argument("--epochs", type=int, default=None,
                   help="the parareal study's epochs for every model (default: VGG-16 5, "
                        "ResNet-20 2)")
    p.add_argument("--lp-epochs", type=int, default=LP_EPOCHS,
                   help=f"the layer-parallel study's epochs (default {LP_EPOCHS})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--chunks", type=int, nargs="+", default=list(CHUNKS))
    p.add_argument("--lp-settings", nargs="+", default=["N32C8"],
                   choices=list(LP_SETTINGS))
    p.add_argument("--batch-size", type=int, default=32, help="parareal study (default 32)")
    p.add_argument("--lr", type=float, default=0.05, help="parareal study (default 0.05)")
    p.add_argument("--augment", default="none",
                   choices=("none", "standard", "crop", "flip", "crop+flip"),
                   help="parareal study's training augmentation (default none)")
    p.add_argument("--reps", type=int, default=20, help="timed rounds of a step-time cell")
    p.add_argument("--data-root", default=None, help=f"default {FASHION_ROOT}")
    p.add_argument("--out", default=None, help=f"cell JSON folder (default {OUT})")
    p.add_argument("--quick", action="store_true",
                   help="tiny: 1 epoch on 384 training / 256 test images, seed 0, N=2, "
                        "layer-parallel N32C8; a temporary folder unless --out")
    p.add_argument("--list", action="store_true", help="print the plan and stop")
    p.add_argument("--summary", action="store_true", help="print the tables of --out's cells")
    p.add_argument("--json", default=None, metavar="PATH", help="write the summary as JSON")
    p.add_argument("--run-cell", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quick-cell", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.quick = args.quick or args.quick_cell
    if args.run_cell:  # a worker: one cell, its JSON
        out = Path(args.out)
        cells = {c["id"]: c for c in plan(args)}
        cell = cells[args.run_cell]
        write_atomic(cell_path(out, cell["id"]), run_cell(cell, args))
        return 0

    tmp = None
    if args.quick:
        args.epochs, args.lp_epochs, args.seeds, args.chunks = 1, 1, [0], [2]
        args.lp_settings, args.reps = ["N32C8"], 3
        tmp = tempfile.TemporaryDirectory(prefix="fashion-quick-")
        if args.data_root is None:
            args.data_root = str(tiny_fashion(Path(tmp.name) / "data", 384, 256))
        if args.out is None:
            args.out = str(Path(tmp.name) / "cells")
    out = Path(args.out) if args.out else OUT
    try:
        return run_then_summarize(args, out, run_plan, summarize, print_summary)
    finally:
        if tmp is not None:
            tmp.cleanup()


def run_plan(args: argparse.Namespace, out: Path) -> int:
    """The plan and its cost, then the cells without JSON: accuracy cells ``--jobs`` at a
    time, then the step-time cells one at a time."""
    fraction = 384 / 60000 if args.quick else 1.0
    print(f"seeds {args.seeds}")
    return run_cells(plan(args), out, estimate=lambda c: estimate_s(c, fraction),
                     spawn=lambda c: spawn(c, args, out)[1] == 0, jobs=args.jobs,
                     list_only=args.list, alone=lambda c: c["study"] == "steptime")


if __name__ == "__main__":
    raise SystemExit(main())
