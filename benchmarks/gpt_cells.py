"""A layer-parallel GPT on a real corpus, cell by cell and resumable (issue 28, item 4).

The network is ``torchpint train-layer-parallel --model gpt``: a character-level
decoder-only transformer (width 64, 4 heads, windows of 64 characters) whose pre-norm
blocks, one per layer, are solved by MGRIT forward and adjoint; the text is the Python
standard library's sources (2,000,000 characters, the last 10% for testing; its sha256 is
in every cell's JSON, so runs on other Pythons can be compared).

Cells (``--list`` prints them):

- ``gpt-N<blocks>-e<epochs>-s<seed>``: ``--serial-baseline`` runs, layer-parallel MGRIT
  training against exact serial backprop from the same initial weights on the same
  batches, equal steps (one epoch: 562 steps of 50 windows); test loss in nats per
  character. Blocks 8, 16 and 32, seeds 0, 1, 2. The hierarchy is the CLI's (3 levels,
  cfactor 4) where N allows it, else 2 levels (N = 8); SGD at lr 0.1, cosine schedule
  (in a 56-step serial check at N = 8 the CLI's default 0.05 reached 2.59 nats/char, 0.2
  2.37, 0.5 2.71, and 1.0 diverged).
- ``gpt-adaptive-N<blocks>-e<epochs>-s0``: the same layer-parallel run with
  ``--adaptive`` (a probe of the gradient's error against serial backprop every 20 steps;
  the iterations raised, up to exact, when it stays above 0.5), at 16 blocks: where, if
  anywhere, the inexact gradient starts to bias training late in the run, beside the
  fixed-iteration and serial runs of the same seed.
- ``gpt-late-<adaptive|fixed>-N<blocks>-e10-s0``: late training. A shorter text
  (200,000 characters, 56 steps an epoch) for 10 epochs, so that training nears its
  plateau within one cell's cost: the layer-parallel run with ``--adaptive`` and the
  serial baseline beside it, and the fixed-iteration run alone, at 16 blocks. Whether the
  gradient's error grows against the gradient as the loss flattens (Jiang et al.'s
  criterion), and whether fixed 2 / 1 iterations then trail backprop.
- ``steptime-gpt-N<blocks>-P<procs>``: the median training step of the layer-parallel GPT
  on 1 process (with the serial baseline's beside it) and on 2 (torchrun, a slab of blocks
  per rank), over 40 steps on a shorter text; ``-P1-T2``: the same on 1 process with 2
  threads, the serial baseline given both cores the ordinary way. They run one at a time
  after the others;
  their figures mean something only on an otherwise idle machine with a free core per
  process (the JSON records the load average).

Every finished cell writes its own JSON to ``--out`` (default benchmarks/results/gpt/)
atomically; a rerun skips the cells whose JSON exists, so the study resumes after any
interruption. Each run has one intra-op thread per process (two in the ``-T2`` cells).

    python benchmarks/gpt_cells.py --list                 # the plan and its estimated cost
    python benchmarks/gpt_cells.py                        # the whole plan (hours)
    python benchmarks/gpt_cells.py --cells N8 --seeds 0   # a part of it
    python benchmarks/gpt_cells.py --summary [--json PATH] [--plot PATH]
    python benchmarks/gpt_cells.py --quick                # tiny, a temporary folder
"""

from __future__ import annotations

import argparse
import json
import os
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
from common import RESULTS, log, machine_info

OUT = RESULTS / "gpt"
BLOCKS = (8, 16, 32)
SEEDS = (0, 1, 2)
EPOCHS = 1
LR = 0.1
PROCS = (1, 2)
# the model and text of the full study and of --quick: the CLI's options
FULL = {"seq_len": 64, "width": 64, "heads": 4, "batch_size": 50, "corpus_chars": 2_000_000}
QUICK = {"seq_len": 16, "width": 16, "heads": 2, "batch_size": 16, "corpus_chars": 6_000}
QUICK_BLOCKS = (4, 8)
LATE = {"corpus_chars": 200_000, "epochs": 10}  # a late-training cell's text and epochs
STEPTIME_STEPS = 40  # training steps of a step-time cell (its text is cut to give them)

# seconds per block and step (batch 50 x 64 characters, width 64, one thread) measured on
# this 2-core machine while other benchmarks ran (load 2 to 7): N = 8 (2 levels) 58 and
# 22 ms, N = 32 (3 levels) 99 and 35 ms; for the plan's estimate only (an idle machine is
# faster)
STEP_S_PER_BLOCK = {"layer_parallel": 0.08, "serial": 0.03}
STARTUP_S = 10.0  # reading the text, the gradient check, the evaluations' share


def hierarchy(blocks: int) -> tuple[int, int]:
    """``(levels, cfactor)``: the CLI's 3 levels of cfactor 4 where ``blocks`` allows it,
    else 2 levels, else 1."""
    for levels in (3, 2):
        if blocks % 4 ** (levels - 1) == 0:
            return levels, 4
    return 1, 4


# ----------------------------------------------------------------------------- cells


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every cell of the study with these options, in the order they run."""
    q = "-quick" if args.quick else ""  # quick cells never pass for real ones
    cells = []
    for n in args.blocks:
        for s in args.seeds:
            cells.append({"id": f"gpt-N{n}-e{args.epochs}-s{s}{q}", "study": "accuracy",
                          "blocks": n, "epochs": args.epochs, "seed": s})
    for n in args.adaptive_blocks:
        cells.append({"id": f"gpt-adaptive-N{n}-e{args.epochs}-s0{q}", "study": "adaptive",
                      "blocks": n, "epochs": args.epochs, "seed": 0})
    chars, epochs = late(args)
    for n in args.late_blocks:
        for variant in ("adaptive", "fixed"):
            cells.append({"id": f"gpt-late-{variant}-N{n}-e{epochs}-s0{q}", "study": "late",
                          "variant": variant, "blocks": n, "epochs": epochs, "seed": 0,
                          "chars": chars})
    for n in args.steptime_blocks:
        for p in args.procs:
            cells.append({"id": f"steptime-gpt-N{n}-P{p}{q}", "study": "steptime",
                          "blocks": n, "procs": p, "epochs": 1, "seed": 0})
        cells.append({"id": f"steptime-gpt-N{n}-P1-T2{q}", "study": "steptime",
                      "blocks": n, "procs": 1, "threads": 2, "epochs": 1, "seed": 0})
    return select(cells, args.cells)


def sizes(args: argparse.Namespace) -> dict[str, int]:
    return QUICK if args.quick else FULL


def late(args: argparse.Namespace) -> tuple[int, int]:
    """``(characters, epochs)`` of a late-training cell (``--quick``: its whole text, 2)."""
    if args.quick:
        return QUICK["corpus_chars"], 2
    return LATE["corpus_chars"], LATE["epochs"]


def steps_per_epoch(chars: int, s: dict[str, int]) -> int:
    """Training steps of one epoch on a text of ``chars`` characters (90% to train)."""
    return int(0.9 * chars - 1) // s["seq_len"] // s["batch_size"]


def steptime_chars(s: dict[str, int]) -> int:
    """A text long enough for :data:`STEPTIME_STEPS` steps (and a test window)."""
    return min(s["corpus_chars"],
               int((STEPTIME_STEPS * s["batch_size"] + 1) * s["seq_len"] / 0.9) + 2)


def estimate_s(cell: dict[str, Any], args: argparse.Namespace) -> float:
    """Rough seconds of ``cell`` on one core (of each process)."""
    s = sizes(args)
    scale = s["width"] ** 2 * s["seq_len"] * s["batch_size"] / (64 ** 2 * 64 * 50)
    per_step = cell["blocks"] * scale
    if cell["study"] != "steptime":
        steps = steps_per_epoch(cell.get("chars", s["corpus_chars"]), s) * cell["epochs"]
        lp, serial = STEP_S_PER_BLOCK["layer_parallel"], STEP_S_PER_BLOCK["serial"]
        # a serial baseline costs a serial step per step; a probe one every 20 steps
        per = lp + serial * (cell["study"] == "accuracy" or cell.get("variant") == "adaptive")
        per += serial / 20 * ("adaptive" in (cell["study"], cell.get("variant")))
        return STARTUP_S + 1.1 * steps * per_step * per
    lp = STEP_S_PER_BLOCK["layer_parallel"] / cell["procs"] / cell.get("threads", 1)
    serial = STEP_S_PER_BLOCK["serial"] if cell["procs"] == 1 else 0.0
    return STARTUP_S + 1.1 * STEPTIME_STEPS * per_step * (lp + serial)


# ----------------------------------------------------------------------------- one cell


def command(cell: dict[str, Any], args: argparse.Namespace, json_path: str) -> list[str]:
    """The ``torchpint train-layer-parallel --model gpt`` command line of ``cell``
    (under torchrun for a step-time cell on several processes), ``--json`` last."""
    s = sizes(args)
    levels, cfactor = hierarchy(cell["blocks"])
    chars = cell.get("chars", s["corpus_chars"]) if cell["study"] != "steptime" \
        else steptime_chars(s)
    opts = ["train-layer-parallel", "--model", "gpt", "--layers", str(cell["blocks"]),
            "--levels", str(levels), "--cfactor", str(cfactor), "--seq-len",
            str(s["seq_len"]), "--width", str(s["width"]), "--heads", str(s["heads"]),
            "--batch-size", str(s["batch_size"]), "--corpus-chars", str(chars),
            "--epochs", str(cell["epochs"]), "--lr", str(args.lr), "--seed",
            str(cell["seed"]), "--no-progress"]
    if args.corpus:
        opts += ["--corpus", str(args.corpus)]
    procs = cell.get("procs", 1)
    if "adaptive" in (cell["study"], cell.get("variant")):
        opts.append("--adaptive")
    if cell["study"] == "accuracy" or cell.get("variant") == "adaptive" or \
            (cell["study"] == "steptime" and procs == 1):
        opts.append("--serial-baseline")
    opts += ["--json", json_path]  # last: the cell's JSON records the command without it
    if procs == 1:
        return [sys.executable, "-m", "torchpint", *opts]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(procs), "-m", "torchpint", *opts]


def run_cell(cell: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run ``cell``'s command (``threads`` per process, default 1); its JSON, with the
    cell's."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "run.json")
        cmd = command(cell, args, path)
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ,
                                   "OMP_NUM_THREADS": str(cell.get("threads", 1))})
        if proc.returncode:
            raise RuntimeError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
        with open(path) as f:
            result = json.load(f)
    lp, se = result["layer_parallel"], result.get("serial")
    chars = result["corpus"]["chars"]
    out: dict[str, Any] = {
        **cell, "quick": bool(args.quick), "lr": args.lr, "command": cmd[1:-2],
        "steps": steps_per_epoch(chars, sizes(args)) * cell["epochs"],
        "corpus": result["corpus"], "gradient_check": result.get("gradient_check"),
        "config": result.get("config"), "layer_parallel": lp, "serial": se,
    }
    if se is not None:
        out["difference"] = lp["test_loss"] - se["test_loss"]
    out.update(wall_s=time.perf_counter() - t0, load_average=os.getloadavg(),
               finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               machine=machine_info())
    return out


def spawn(cell: dict[str, Any], args: argparse.Namespace, out: Path) -> tuple[str, bool]:
    """Run ``cell`` and write its JSON; whether it succeeded."""
    log(f"start {cell['id']}")
    t0 = time.perf_counter()
    try:
        write_atomic(cell_path(out, cell["id"]), run_cell(cell, args))
    except (RuntimeError, OSError, KeyError, json.JSONDecodeError) as err:
        log(f"FAILED {cell['id']}: {err}")
        return cell["id"], False
    log(f"done  {cell['id']} in {time.perf_counter() - t0:.0f} s")
    return cell["id"], True


# ----------------------------------------------------------------------------- summary


def summarize(out: Path) -> dict[str, Any]:
    """Every cell JSON in ``out``: test losses over seeds (mean +- sd, per-seed
    differences) by blocks, and the step times by blocks and processes."""
    records = []
    for p in sorted(out.glob("*.json")):
        try:
            records.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("study") == "accuracy":
            key = (r["blocks"], r["epochs"], r.get("quick", False))
            groups.setdefault(key, []).append(r)
    loss = []
    for (blocks, epochs, quick), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["seed"])
        lp = [r["layer_parallel"]["test_loss"] for r in rs]
        se = [r["serial"]["test_loss"] for r in rs]
        loss.append({
            "blocks": blocks, "epochs": epochs, "quick": quick,
            "seeds": [r["seed"] for r in rs],
            "steps": sorted({r.get("steps") for r in rs}, key=str),
            "layer_parallel": stats(lp), "serial": stats(se),
            "difference": stats([a - b for a, b in zip(lp, se, strict=True)]),
            "corpus_sha256": sorted({r["corpus"]["sha256"] for r in rs}),
            "levels": rs[0]["config"]["levels"], "cfactor": rs[0]["config"]["cfactor"],
        })
    runs: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in records:
        if r.get("study") == "steptime":
            key = r["blocks"], r.get("quick", False)
            runs.setdefault(key, {})[f"P{r['procs']}-T{r.get('threads', 1)}"] = r
    steptime = [steptime_row(blocks, quick, rs) for (blocks, quick), rs in sorted(runs.items())]
    adaptive = []
    for r in records:
        if r.get("study") != "adaptive":
            continue
        lp = r["layer_parallel"]
        fixed = groups.get((r["blocks"], r["epochs"], r.get("quick", False)), [])
        same = [x for x in fixed if x["seed"] == r["seed"]]
        adaptive.append({
            "blocks": r["blocks"], "epochs": r["epochs"], "seed": r["seed"],
            "quick": r.get("quick", False), "test_loss": lp["test_loss"],
            "fixed_test_loss": same[0]["layer_parallel"]["test_loss"] if same else None,
            "serial_test_loss": same[0]["serial"]["test_loss"] if same else None,
            "probes": [[p["step"], p["grad_rel_err"]] for p in lp["adaptive"]],
            "raised": [[p["step"], p["raised_to"]] for p in lp["adaptive"] if p["raised_to"]],
            "solves_at_end": lp["solves_at_end"],
        })
    return {"folder": str(out), "cells": len(records), "loss": loss, "steptime": steptime,
            "adaptive": adaptive, "late": summarize_late(records),
            "unit": "test loss in nats per character"}


def steptime_row(blocks: int, quick: bool, rs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One N's step times (``rs`` by ``P<procs>-T<threads>``): the layer-parallel step on
    each, serial backprop's on 1 and 2 threads, and the 2-process step's speedup over 1
    process and over both serial baselines (below 1: slower)."""
    lp = {k: r["layer_parallel"]["step_time_s"] for k, r in rs.items()}
    serial = {f"T{r.get('threads', 1)}": r["serial"]["step_time_s"] for r in rs.values()
              if r["procs"] == 1 and r.get("serial")}
    two = lp.get("P2-T1")

    def over(base: float | None) -> float | None:
        return base / two if base and two else None

    return {"blocks": blocks, "quick": quick, "layer_parallel_s": lp, "serial_s": serial,
            "speedup_2_vs_1_process": over(lp.get("P1-T1")),
            "speedup_vs_serial_1_thread": over(serial.get("T1")),
            "speedup_vs_serial_2_threads": over(serial.get("T2")),
            "load_average": {k: r.get("load_average") for k, r in rs.items()}}


def summarize_late(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The late-training pairs: per epoch, the train and test loss of the adaptive run,
    the fixed-iteration run and serial backprop; the adaptive run's probes."""
    pairs: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in records:
        if r.get("study") == "late":
            key = (r["blocks"], r["epochs"], r["seed"], r.get("quick", False))
            pairs.setdefault(key, {})[r["variant"]] = r
    out = []
    for (blocks, epochs, seed, quick), rs in sorted(pairs.items()):
        runs = {"adaptive": rs.get("adaptive", {}).get("layer_parallel"),
                "fixed": rs.get("fixed", {}).get("layer_parallel"),
                "serial": rs.get("adaptive", {}).get("serial")}
        curves = {name: [[h["train_loss"], h["test_loss"]] for h in run["history"]]
                  for name, run in runs.items() if run}
        probes = runs["adaptive"]["adaptive"] if runs["adaptive"] else []
        out.append({
            "blocks": blocks, "epochs": epochs, "seed": seed, "quick": quick,
            "steps": next(iter(rs.values()))["steps"],
            "chars": next(iter(rs.values()))["corpus"]["chars"],
            "curves": curves,
            "probes": [[p["step"], p["grad_rel_err"]] for p in probes],
            "raised": [[p["step"], p["raised_to"]] for p in probes if p["raised_to"]],
            "train_s": {name: run["train_time_s"] for name, run in runs.items()
                        if run and name != "serial"},
        })
    return out


def print_late(s: dict[str, Any]) -> None:
    print("\nlate training (a short text for many epochs): train / test loss per epoch")
    for r in s["late"]:
        names = list(r["curves"])
        print(f"  N={r['blocks']} seed {r['seed']}, {r['chars']} characters, {r['steps']} "
              f"steps{' (quick)' if r['quick'] else ''}; columns: {', '.join(names)}")
        for e in range(max(len(c) for c in r["curves"].values())):
            row = "  ".join(f"{c[e][0]:.4f} / {c[e][1]:.4f}" if e < len(c) else "-"
                            for c in r["curves"].values())
            print(f"    epoch {e + 1:>2}: {row}")
        if r["probes"]:
            per = max(1, len(r["probes"]) // 8)
            errs = ", ".join(f"{st}: {e:.2f}" for st, e in r["probes"][::per])
            print(f"    gradient error by step: {errs}; raised {r['raised'] or 'never'}")
        print("    training seconds: " + ", ".join(f"{k} {v:.0f}"
                                                   for k, v in r["train_s"].items()))
    if not s["late"]:
        print("  (no late-training cells yet)")


def plot_late(s: dict[str, Any], path: str) -> None:
    """The late-training cells: train and test loss per epoch of each run (left), and the
    adaptive run's gradient error against the gradient by step (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in s["late"] if not r["quick"]] or s["late"]
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.6 * len(rows)), squeeze=False)
    for (loss, err), r in zip(axes, rows, strict=True):
        for i, (name, curve) in enumerate(r["curves"].items()):
            colour = f"C{i}"
            epochs = range(1, len(curve) + 1)
            loss.plot(epochs, [c[0] for c in curve], "--", color=colour, label=f"{name} train")
            loss.plot(epochs, [c[1] for c in curve], "-", color=colour, label=f"{name} test")
        loss.set(xlabel="epoch", ylabel="loss (nats/char)",
                 title=f"GPT, {r['blocks']} blocks, {r['chars']:,} characters")
        loss.legend(fontsize=7)
        if r["probes"]:
            err.plot(*zip(*r["probes"], strict=True), "o-", ms=3)
            err.axhline(0.5, color="grey", ls=":", label="threshold 0.5")
            err.set(xlabel="step", ylabel="|g_lp - g| / |g|", yscale="log",
                    title="adaptive run: gradient error at each probe")
            err.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def print_summary(s: dict[str, Any]) -> None:
    print(f"GPT cells in {s['folder']} ({s['cells']} cells)")
    print("\ntest loss (nats/char), mean +- sd over seeds; diff = layer-parallel - serial "
          "per seed (equal steps, same initial weights and batches)")
    print(f"{'blocks':>6} {'hier':>6} {'ep':>3} {'layer-parallel':>17} {'serial':>17} "
          f"{'diff':>17}  per-seed diffs")
    for r in s["loss"]:
        a, b, d = r["layer_parallel"], r["serial"], r["difference"]
        tag = " (quick)" if r["quick"] else ""
        print(f"{r['blocks']:>6} {r['levels']}L/c{r['cfactor']} {r['epochs']:>3} "
              f"{a['mean']:8.4f} +- {a['sd']:.4f} {b['mean']:8.4f} +- {b['sd']:.4f} "
              f"{d['mean']:+8.4f} +- {d['sd']:.4f}  "
              f"{', '.join(f'{x:+.4f}' for x in d['values'])} (seeds {r['seeds']}){tag}")
    if not s["loss"]:
        print("  (no loss cells yet)")
    print("\nadaptive iterations (--adaptive: a probe every 20 steps, threshold 0.5)")
    for r in s["adaptive"]:
        errs = [e for _, e in r["probes"]]
        ref = "" if r["fixed_test_loss"] is None else \
            f"; fixed {r['fixed_test_loss']:.4f}, serial {r['serial_test_loss']:.4f}"
        print(f"  N={r['blocks']} seed {r['seed']}: test loss {r['test_loss']:.4f}{ref}; "
              f"gradient error {min(errs):.1e}..{max(errs):.1e} over {len(errs)} probes; "
              f"raised {r['raised'] or 'never'}{' (quick)' if r['quick'] else ''}")
    if not s["adaptive"]:
        print("  (no adaptive cells yet)")
    print_late(s)
    print("\ntraining step (median, ms): layer-parallel on P processes x T threads, serial "
          "backprop on T threads; the 2-process step's speedup over each (below 1: slower)")
    print(f"{'blocks':>6} {'LP P1-T1':>9} {'LP P2-T1':>9} {'LP P1-T2':>9} {'serial T1':>10} "
          f"{'serial T2':>10} {'2 vs 1 proc':>11} {'vs ser T1':>9} {'vs ser T2':>9}")

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{1e3 * x:.1f}"

    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}x"

    for r in s["steptime"]:
        lp, se = r["layer_parallel_s"], r["serial_s"]
        print(f"{r['blocks']:>6} {ms(lp.get('P1-T1')):>9} {ms(lp.get('P2-T1')):>9} "
              f"{ms(lp.get('P1-T2')):>9} {ms(se.get('T1')):>10} {ms(se.get('T2')):>10} "
              f"{ratio(r['speedup_2_vs_1_process']):>11} "
              f"{ratio(r['speedup_vs_serial_1_thread']):>9} "
              f"{ratio(r['speedup_vs_serial_2_threads']):>9}{' (quick)' if r['quick'] else ''}")
    if not s["steptime"]:
        print("  (no step-time cells yet)")


# ----------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", default=None, metavar="PATTERN",
                   help="run only cells whose id matches (substring or glob), e.g. N8, "
                        "steptime, 'gpt-N16-*-s0'")
    p.add_argument("--jobs", type=int, default=1,
                   help="loss cells side by side (default 1; step-time cells run alone)")
    p.add_argument("--blocks", type=int, nargs="+", default=list(BLOCKS))
    p.add_argument("--steptime-blocks", type=int, nargs="+", default=list(BLOCKS))
    p.add_argument("--adaptive-blocks", type=int, nargs="*", default=[16],
                   help="blocks of the adaptive-iterations cells (seed 0; default 16)")
    p.add_argument("--late-blocks", type=int, nargs="*", default=[16],
                   help="blocks of the late-training cells (seed 0; default 16)")
    p.add_argument("--procs", type=int, nargs="+", default=list(PROCS))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--epochs", type=int, default=EPOCHS,
                   help=f"epochs of a loss cell (default {EPOCHS})")
    p.add_argument("--lr", type=float, default=LR, help=f"SGD learning rate (default {LR})")
    p.add_argument("--corpus", default=None, metavar="PATH",
                   help="a text file instead of the standard library's sources")
    p.add_argument("--out", default=None, help=f"cell JSON folder (default {OUT})")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny: width 16, windows of 16, {QUICK['corpus_chars']} characters, "
                        f"blocks {QUICK_BLOCKS}, seed 0, step time at N=8; a temporary folder "
                        "unless --out")
    p.add_argument("--list", action="store_true", help="print the plan and stop")
    p.add_argument("--summary", action="store_true", help="print the tables of --out's cells")
    p.add_argument("--json", default=None, metavar="PATH", help="write the summary as JSON")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="draw the late-training cells (loss curves, gradient error) here")
    return p.parse_args(argv)


def run_plan(args: argparse.Namespace, out: Path) -> int:
    """The plan and its cost, then the cells without JSON: loss cells ``--jobs`` at a
    time, then the step-time cells one at a time."""
    return run_cells(plan(args), out, estimate=lambda c: estimate_s(c, args),
                     spawn=lambda c: spawn(c, args, out)[1], jobs=args.jobs,
                     list_only=args.list, alone=lambda c: c["study"] == "steptime",
                     cores=lambda c: c.get("procs", 1) * c.get("threads", 1), width=34)


def show(s: dict[str, Any], plot: str | None) -> None:
    print_summary(s)
    if plot:
        plot_late(s, plot)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    tmp = None
    if args.quick:
        args.blocks, args.seeds, args.steptime_blocks = list(QUICK_BLOCKS), [0], [8]
        args.adaptive_blocks = args.late_blocks = [8]
        if args.out is None:
            tmp = tempfile.TemporaryDirectory(prefix="gpt-quick-")
            args.out = tmp.name
    out = Path(args.out) if args.out else OUT
    try:
        return run_then_summarize(args, out, run_plan, summarize,
                                  lambda s: show(s, args.plot))
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
