"""Parareal networks vs a pipeline and DDP: one training step on the same 2 Gloo processes.

The two ordinary alternatives a user would pick on the same processes: a
``torch.distributed.pipelining`` pipeline cut at the same place, and DistributedDataParallel.

Rows (one training step: forward + backward + SGD-with-momentum update on one fixed batch,
as ``step_fn`` in common.py; same global batch for every row):

- ``original 1 proc``: the whole network, one process, one intra-op thread (the papers'
  baseline);
- ``original 2 thr``: the same with 2 intra-op threads (the honest baseline on 2 cores);
- ``DDP``: ``DistributedDataParallel``, 2 Gloo processes, each half the batch
  (``gradient_as_bucket_view=True``; buffers broadcast from rank 0, the default);
- ``GPipe M=2/4/8``, ``1F1B M=4``: ``PipelineStage`` + ``ScheduleGPipe`` / ``Schedule1F1B``
  on 2 Gloo processes, M micro-batches of the same batch, stage 0 = P + blocks[:cut], stage
  1 = blocks[cut:] + Q with ``cut`` the parareal network's cut point (balance "flops");
- ``parareal dist``: ``parareal_network(model, 2, executor="distributed", balance="flops")``
  on the same 2 Gloo processes;
- ``parareal thr``: the same network (same cut) on the ``threads`` executor, one process.

Timing. One group of 2 Gloo processes (spawned; one intra-op thread each) builds every
variant and times them all in the same interleaved rounds (the order rotates every
round). Every timed step starts after a barrier; a 2-process step's time is the max over
the ranks. The 1-process rows run on rank 0 while rank 1 waits in a barrier, i.e. with
the other core idle (rank 1's CPU use while it waits is measured and reported). Results:
medians with quartiles of the per-round ratios against ``original 1 proc`` and against
``original 2 thr``, so drift in machine load cancels.

Peak memory per rank. Measured by one extra (untimed) step per variant with
``torchpint.common.memory.track_saved`` (saved-tensor hooks): the peak over the step of the bytes of
distinct tensors (deduplicated by storage) saved for backward and alive at the same time
(activations, the dominant term; parameters saved by an op are not counted there), plus
the parameters the rank holds, plus 2x the bytes of the gradients it gets (gradient and
SGD momentum buffer). The hooks are thread-local, so they are also pushed around every
fine chunk and coarse network (the ``threads`` executor runs them in worker threads).
Applied identically to every row. Not counted: transient buffers of single ops, gradients
in flight in backward, communication buffers, the allocator's slack, Python. GPipe keeps
all M micro-batches' activations until the backward, 1F1B at most N of them; the
``distributed`` executor holds a replica of every chunk's parameters on every rank (it
trains only its own): the JSON also gives the memory if the other chunks were dropped.

Accuracy (same epochs, the small presets of accuracy_parareal.py: digits and shapes,
3 seeds). DDP with equal halves and the pipelines compute the original network's
gradient, except that batch norm normalizes each half / micro-batch by its own
statistics (and DDP keeps rank 0's running statistics, a pipeline updates them once per
micro-batch). That is reproduced in one process by running the model on the M slices of
each batch (``torchpint.common.microbatch.MicroBatchBN``); the checks show it gives DDP's
and the pipeline's loss, gradients and running statistics to rounding in float64. 1F1B
computes the same as GPipe at equal M. The training jobs run on the two processes in
parallel (one thread each).
``--accuracy reuse`` (default) takes original and parareal from
benchmarks/results/accuracy_parareal.json (same recipe, checked; trained on 2 threads, so
not bit-identical to a 1-thread run: the paired differences carry that rounding noise)
and trains ddp, micro4 and micro8 (micro2 with ``--acc-variants``); ``--accuracy
measure`` trains original and parareal too (about 4 minutes more).

Cost model for N = 2..64 devices (``torchpint.parareal.pipeline_costs``), from costs
measured here on one thread: per-block
forward + backward time, per-block activation and parameter bytes, the coarse networks'
time, and the batch-size efficiency of the whole network (per-sample cost is not constant
on small batches). parareal (k = 1, the ``distributed`` executor) = P + Q + sum_j C_j +
max_j F_j + sum_{j>=1} C_j + 2 all-reduces of all chunk interfaces; pipeline (GPipe/1F1B,
the best M dividing the batch) = (M + N - 1) x (max stage time on B/M samples + 2
point-to-point transfers), bubble (N-1)/(M+N-1); DDP = original on B/N samples + ring
all-reduce of the parameters (2(N-1)/N x bytes / bandwidth + 2(N-1) latencies),
overlapped with the backward (2/3 of the step) as far as it fits. Scenarios: this
machine (one core per device, Gloo bandwidth and latency measured here) and two assumed
GPU clusters (a device 50x one core here; InfiniBand 25 GB/s or NVLink 300 GB/s).
Deeper / wider networks scale the measured blocks (ResNet: the blocks of each stage
repeated; width w: time and parameters x (w/w0)^2, activations x w/w0). Every assumption
is printed with the result and stored in the JSON.

Commands (the machine must be quiet: the rows are timed against each other):

    # full: ~5 min timing, ~13 min accuracy (27 trainings on 2 processes), ~1 min cost
    # model, about 20 minutes on 2 cores; writes benchmarks/results/bench_parareal_vs.json
    python benchmarks/bench_parareal_vs.py --plot out/bench_parareal_vs.png
    # the same under torchrun (2 processes; rank 0 prints and writes)
    torchrun --nproc-per-node 2 benchmarks/bench_parareal_vs.py
    # timing, memory and cost model only (~7 minutes)
    python benchmarks/bench_parareal_vs.py --accuracy skip
    # tiny models, 3 rounds, 1-epoch accuracy, the correctness checks (~1 minute)
    python benchmarks/bench_parareal_vs.py --quick
    # the correctness checks alone (float64, seconds)
    python benchmarks/bench_parareal_vs.py --check-only

Layout: this file runs the benchmark and prints; parareal_vs_ranks.py is what the two
Gloo processes do (variants, timing, memory, checks, accuracy jobs); common.py holds what
the benchmarks share.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

import torch

from common import (  # this directory is on sys.path
    CONFIGS,
    PLAN,
    QUICK,
    RESULTS,
    batch,
    build,
    config_arguments,
    fmt_ratio,
    log,
    machine_info,
    mean_std,
    median_quartiles,
    ratios,
    write_json,
)
from parareal_vs_ranks import BASE_1, BASE_2, PIPELINES, ROWS, checks_ok, run_ranks
from torchpint.parareal.pipeline_costs import (
    ASSUMPTIONS,
    CostInputs,
    compare,
    measure_cost_inputs,
    scaled,
)

DEFAULT_JSON = str(RESULTS / "bench_parareal_vs.json")
ACCURACY_JSON = str(RESULTS / "accuracy_parareal.json")
# accuracy variant of each row: which network and batch-norm grouping it trains
ACC_OF_ROW = {
    "original_1p": "original",
    "original_2t": "original",
    "ddp": "ddp",
    "gpipe_m2": "micro2",
    "gpipe_m4": "micro4",
    "gpipe_m8": "micro8",
    "1f1b_m4": "micro4",
    "parareal_dist": "parareal",
    "parareal_thr": "parareal",
}
ACC_VARIANTS = ("original", "parareal", "ddp", "micro2", "micro4", "micro8")
# scenarios of the cost model: name -> (link bytes/s, latency s, compute speed relative to
# one core here); None = this machine (Gloo bandwidth and latency measured, speed 1)
SCENARIOS: dict[str, tuple[float, float, float] | None] = {
    "gloo-here": None,
    "ib-gpu": (25e9, 5e-6, 50.0),  # assumed: NDR 200 Gb/s per device, a GPU = 50 cores
    "nvlink-gpu": (300e9, 3e-6, 50.0),  # assumed: NVLink all-reduce bus bandwidth
}
NS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# cost-model variants: config -> [(label, depth, width)]; depth None = the preset's
SWEEP: dict[str, list[tuple[str, int | None, int]]] = {
    "resnet": [
        ("ResNet-164 w16", 164, 16),
        ("ResNet-164 w64", 164, 64),
        ("ResNet-1001 w16", 1001, 16),
        ("ResNet-1001 w64", 1001, 64),
    ],
    "vgg": [("VGG-16 w16", None, 16), ("VGG-16 w64", None, 64), ("VGG-16 w256", None, 256)],
}


# ----------------------------------------------------------------------------- results


def combine(ranks: list[dict[str, Any]], name: str, cfg: tuple) -> dict[str, Any]:
    """Per-round step times (max over ranks), ratios against both baselines, memory."""
    per = [r["configs"][name] for r in ranks]
    times: dict[str, list[float]] = {}
    for n in ROWS:
        cols = [p["times"][n] for p in per if p["times"][n]]
        times[n] = [max(ts) for ts in zip(*cols, strict=True)]
    bs = cfg[4]
    rows = {}
    for n, (label, procs, threads) in ROWS.items():
        med = statistics.median(times[n])
        q = median_quartiles(times[n])
        mems = [p["mem"][n] for p in per if n in p["mem"]]
        r1 = median_quartiles(ratios(times, BASE_1, n))
        r2 = median_quartiles(ratios(times, BASE_2, n))
        rows[n] = {
            "label": label,
            "processes": procs,
            "threads_per_process": threads,
            "step_s": med,
            "step_quartiles_s": [q[1], q[2]],
            "samples_per_s": bs / med,
            "speedup_vs_original_1p": r1[0],
            "speedup_vs_original_1p_quartiles": [r1[1], r1[2]],
            "speedup_vs_original_2t": r2[0],
            "speedup_vs_original_2t_quartiles": [r2[1], r2[2]],
            "memory_per_rank": mems,
            "peak_memory_per_rank_bytes": max(m["total"] for m in mems),
            "all_s": times[n],
        }
        idle = [x for p in per for x in p["idle_cpu"][n]]
        if idle:
            rows[n]["idle_rank_cpu_share"] = statistics.median(idle)
    best_pipe = min(PIPELINES, key=lambda n: rows[n]["step_s"])
    vs_pipe = median_quartiles(ratios(times, best_pipe, "parareal_dist"))
    vs_ddp = median_quartiles(ratios(times, "ddp", "parareal_dist"))
    mem_ratio = (
        rows["parareal_dist"]["peak_memory_per_rank_bytes"]
        / rows[best_pipe]["peak_memory_per_rank_bytes"]
    )
    return {
        "config": name,
        "model": cfg[0],
        "depth": cfg[1],
        "width": cfg[2],
        "image_size": cfg[3],
        "batch_size": bs,
        "cut_point": per[0]["cut"],
        "rows": rows,
        "best_pipeline": best_pipe,
        "parareal_speedup_vs_best_pipeline": vs_pipe[0],
        "parareal_speedup_vs_best_pipeline_quartiles": [vs_pipe[1], vs_pipe[2]],
        "parareal_speedup_vs_ddp": vs_ddp[0],
        "parareal_speedup_vs_ddp_quartiles": [vs_ddp[1], vs_ddp[2]],
        "parareal_memory_vs_best_pipeline": mem_ratio,
        "parareal_memory_vs_pipelines": {
            n: rows["parareal_dist"]["peak_memory_per_rank_bytes"]
            / rows[n]["peak_memory_per_rank_bytes"]
            for n in PIPELINES
        },
    }


def accuracy_summary(jobs: list[dict[str, Any]], reuse: dict[tuple, float]) -> dict[str, Any]:
    """Mean +- std test accuracy per (data set, model, variant) and the mean paired
    difference to the original over data sets, models and seeds."""
    acc: dict[tuple, float] = dict(reuse)
    for j in jobs:
        acc[(j["dataset"], j["model"], j["seed"], j["variant"])] = j["test_accuracy"]
    keys = sorted({(d, m) for d, m, _, _ in acc})
    seeds = sorted({s for _, _, s, _ in acc})
    out: dict[str, Any] = {"per_task": {}, "mean_difference_vs_original": {}}
    for v in ACC_VARIANTS:
        diffs = []
        for d, m in keys:
            vals = [acc[(d, m, s, v)] for s in seeds if (d, m, s, v) in acc]
            if not vals:
                continue
            mean, std = mean_std(vals)
            out["per_task"].setdefault(f"{d}/{m}", {})[v] = {
                "mean": mean,
                "std": std,
                "seeds": len(vals),
            }
            diffs += [
                acc[(d, m, s, v)] - acc[(d, m, s, "original")]
                for s in seeds
                if (d, m, s, v) in acc and (d, m, s, "original") in acc
            ]
        if diffs:
            out["mean_difference_vs_original"][v] = statistics.fmean(diffs)
    measured = {j["variant"] for j in jobs}
    out["source"] = {
        k: "measured here" if k in measured else "accuracy_parareal.json"
        for k in {k[3] for k in acc}
    }
    return out


def reused_accuracy(plan: list[tuple[str, str]], seeds: list[int]) -> dict[tuple, float]:
    """Original and parareal accuracies from accuracy_parareal.json when its recipe is the
    one trained here (else nothing: measure them with ``--accuracy measure``)."""
    try:
        with open(ACCURACY_JSON) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    s = data.get("settings", {})
    same = (
        s.get("batch_size") == 32
        and s.get("lr") == 0.05
        and s.get("chunks") == 2
        and s.get("iterations") == 1
        and s.get("coarse") == "default"
        and s.get("epochs") is None
        and s.get("width") is None
    )
    if not same:
        log(f"{ACCURACY_JSON} has another recipe: not reused")
        return {}
    out = {}
    for r in data.get("runs", []):
        if (r["dataset"], r["model"]) in plan and r["seed"] in seeds:
            for v in ("original", "parareal"):
                out[(r["dataset"], r["model"], r["seed"], v)] = r[v]["test_accuracy"]
    return out


# ----------------------------------------------------------------------------- cost model


def _ranges(ns: list[int]) -> str:
    """``[2, 3, 4, 8]`` -> ``"2-4, 8"`` (over the grid NS)."""
    if not ns:
        return "none"
    out, start, prev = [], ns[0], ns[0]
    grid = list(NS)
    for n in ns[1:]:
        if grid.index(n) == grid.index(prev) + 1:
            prev = n
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = n
    out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def cost_inputs(cfg: tuple, quick: bool) -> CostInputs:
    """The cost model's inputs of the network of ``cfg``, measured on one thread."""
    torch.set_num_threads(1)
    return measure_cost_inputs(build(cfg), batch(cfg)[0], quick)


def cost_model(
    inputs: dict[str, CostInputs], bandwidth: dict[str, float], quick: bool
) -> dict[str, Any]:
    """The modelled rows for every (config variant, scenario, N), and where parareal is
    faster than the best pipeline and than DDP."""
    out: dict[str, Any] = {"assumptions": [], "scenarios": {}, "variants": []}
    scen = {}
    for k, v in SCENARIOS.items():
        if v is None:
            v = (bandwidth["allreduce_bandwidth_Bps"], bandwidth["allreduce_latency_s"], 1.0)
        scen[k] = v
    out["scenarios"] = {
        k: {"bandwidth_Bps": b, "latency_s": a, "compute_speed": c} for k, (b, a, c) in scen.items()
    }
    for name, ci in inputs.items():
        preset, depth, width, _, _ = (QUICK if quick else CONFIGS)[name]
        n0 = (depth - 2) // 9 if preset == "resnet" and depth else None  # blocks per stage
        sweep = SWEEP[name] if not quick else [(f"{name} (measured)", depth, width)]
        for label, dep, w in sweep:
            n_stage = (dep - 2) // 9 if preset == "resnet" and dep else None
            for sname, (bw, lat, speed) in scen.items():
                var = scaled(ci, n0, n_stage, w / width, speed)
                cmp = compare(var, NS, bw, lat)
                out["variants"].append(
                    {
                        "config": name,
                        "label": label,
                        "depth": dep,
                        "width": w,
                        "measured": dep == depth and w == width,
                        "scenario": sname,
                        "blocks": len(var.cost),
                        **cmp,
                    }
                )
    out["assumptions"] = [
        "compute: forward+backward seconds of every block measured on one CPU thread here; a "
        "device = one such core (gloo-here) or one 50x faster (the -gpu scenarios, an "
        "assumption); per-sample cost on B/M or B/N samples from the batch-size efficiency "
        "of the whole network measured here (a GPU loses more on small batches: this "
        "flatters DDP and many micro-batches there)",
        *ASSUMPTIONS,
    ]
    return out


# ----------------------------------------------------------------------------- printing


def print_checks(checks: list[dict[str, Any]], ok: bool) -> None:
    """One line per check: the largest difference over both ranks."""
    print(
        "Checks (float64, vgg-small, batch 16; pipelines M=4; max abs difference over both "
        "ranks): " + ("all passed" if ok else "FAILED")
    )
    what = {
        "ddp_no_bn": "DDP grads vs original, no BN",
        "gpipe_m4_no_bn": "GPipe loss & grads vs original, no BN",
        "1f1b_m4_no_bn": "1F1B loss & grads vs original, no BN",
        "ddp_bn": "DDP grads & rank-0 BN stats vs MicroBatchBN(2, first)",
        "gpipe_m4_bn": "GPipe loss, grads & BN stats vs MicroBatchBN(4, all)",
        "1f1b_m4_bn": "1F1B loss, grads & BN stats vs MicroBatchBN(4, all)",
        "bn_halves_vs_full_grad_max_abs_diff": "BN: grads of 2 halves vs full batch (> 0)",
        "parareal_distributed_vs_serial_loss_abs_diff": "parareal distributed vs serial loss",
    }
    for k, label in what.items():
        vals = []
        for c in checks:
            v = c.get(k)
            if isinstance(v, dict):
                vals += [x for kk, x in v.items() if "diff" in kk]
            elif v is not None:
                vals.append(v)
        print(f"  {label:58} {max(vals, default=float('nan')):.1e}")


def _cell(x: float | None, width: int, digits: int = 2, suffix: str = "") -> str:
    """``x`` right-aligned in ``width`` characters, ``-`` for None / NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>{width}}"
    return f"{f'{x:.{digits}f}{suffix}':>{width}}"


def print_measured(r: dict[str, Any], acc: dict[str, Any] | None) -> None:
    """The measured table of one config."""
    print(
        f"\n{r['config']}: {r['model']} depth {r['depth'] or 16} width {r['width']}, "
        f"{r['image_size']}px, batch {r['batch_size']}; cut before block {r['cut_point']}"
    )
    diff = (acc or {}).get("mean_difference_vs_original", {})
    print(
        f"{'variant':15} {'procs':>5} {'step ms':>8} {'[quartiles]':>13} {'samples/s':>9} "
        f"{'vs orig 1 proc':>19} {'vs orig 2 thr':>19} {'MiB/rank':>8} {'acc diff':>8}"
    )
    for n, row in r["rows"].items():
        q = row["step_quartiles_s"]
        quart = f"[{1e3 * q[0]:.0f}-{1e3 * q[1]:.0f}]"
        v1 = fmt_ratio(row["speedup_vs_original_1p"], row["speedup_vs_original_1p_quartiles"])
        v2 = fmt_ratio(row["speedup_vs_original_2t"], row["speedup_vs_original_2t_quartiles"])
        print(
            f"{row['label']:15} {row['processes']:>3}x{row['threads_per_process']} "
            f"{1e3 * row['step_s']:>8.1f} {quart:>13} {row['samples_per_s']:>9.1f} "
            f"{v1:>19} {v2:>19} {row['peak_memory_per_rank_bytes'] / 2**20:>8.1f} "
            f"{_cell(diff.get(ACC_OF_ROW[n]), 8, 2)}"
        )
    idle = [
        row["idle_rank_cpu_share"] for row in r["rows"].values() if "idle_rank_cpu_share" in row
    ]
    if idle:
        print(
            f"  1-process rows ran on rank 0 while rank 1 waited in a barrier, using "
            f"{100 * max(idle):.0f}% of a core at most"
        )


def print_goals(r: dict[str, Any], acc: dict[str, Any] | None) -> None:
    """The goals of the issue, plainly, for one config."""
    rows = r["rows"]
    bp = r["best_pipeline"]
    sp = r["parareal_speedup_vs_best_pipeline"]
    q = r["parareal_speedup_vs_best_pipeline_quartiles"]
    verdict = "no slower" if sp >= 1.0 else ("slower, within noise" if q[1] >= 1.0 else "SLOWER")
    print(
        f"  goal, step: parareal dist vs the best pipeline ({rows[bp]['label']}) "
        f"{fmt_ratio(sp, q)} (> 1: parareal faster): {verdict}"
    )
    mr = r["parareal_memory_vs_best_pipeline"]
    pm = rows["parareal_dist"]["memory_per_rank"]
    own = max(m.get("total_if_own_chunk_only", m["total"]) for m in pm)
    own_ratio = own / rows[bp]["peak_memory_per_rank_bytes"]
    others = ", ".join(
        f"{rows[n]['label']} {r['parareal_memory_vs_pipelines'][n]:.2f}" for n in PIPELINES
    )
    print(
        f"  goal, memory: parareal / {rows[bp]['label']} per rank {mr:.2f} "
        f"({'within' if mr <= 1.1 else 'NOT within'} 10%); {own_ratio:.2f} if each rank "
        f"dropped the parameters of the chunk it does not run (vs each: {others})"
    )
    d = (acc or {}).get("mean_difference_vs_original", {}).get("parareal")
    if d is not None:
        print(
            f"  goal, accuracy: parareal - original {d:+.2f} points "
            f"({'within' if d >= -1 else 'NOT within'} 1 point)"
        )
    sd, qd = r["parareal_speedup_vs_ddp"], r["parareal_speedup_vs_ddp_quartiles"]
    ddp_mem = rows["ddp"]["peak_memory_per_rank_bytes"]
    par_mem = rows["parareal_dist"]["peak_memory_per_rank_bytes"]
    who = "DDP is faster" if sd < 1 else "parareal is faster"
    print(
        f"  vs DDP: parareal {fmt_ratio(sd, qd)}: {who}; per rank parareal "
        f"{par_mem / 2**20:.1f} MiB, DDP {ddp_mem / 2**20:.1f} MiB"
    )
    half = rows[BASE_1]["step_s"] / 2
    print(
        "  what parareal trades: no bubble (2 stages idle (N-1)/(M+N-1) = 1/3, 1/5, 1/9 at "
        "M = 2, 4, 8) and no gradient all-reduce, for P, Q and every C_j run on every rank; "
        f"step over half the original's: parareal {rows['parareal_dist']['step_s'] / half:.2f}"
        f", {rows[bp]['label']} {rows[bp]['step_s'] / half:.2f}, DDP "
        f"{rows['ddp']['step_s'] / half:.2f}"
    )


def print_accuracy(acc: dict[str, Any]) -> None:
    """Test accuracy per task and variant, and the mean difference to the original."""
    src = ", ".join(f"{k}: {v}" for k, v in sorted(acc["source"].items()))
    print(f"\nAccuracy after the same epochs (test %, mean +- std over seeds; {src})")
    tasks = list(acc["per_task"])
    print(f"{'variant':9} " + " ".join(f"{t:>20}" for t in tasks) + f" {'mean diff':>9}")
    for v in ACC_VARIANTS:
        cells = []
        for t in tasks:
            c = acc["per_task"][t].get(v)
            cells.append("n/m" if c is None else f"{c['mean']:.2f} +- {c['std']:.2f}")
        d = acc["mean_difference_vs_original"].get(v)
        print(f"{v:9} " + " ".join(f"{c:>20}" for c in cells) + " " + _cell(d, 9, 2))
    print(
        "  ddp: batch norm per half, rank 0's running statistics; microM: per micro-batch, "
        "running statistics updated by each (GPipe and 1F1B with M micro-batches); n/m: not "
        "measured"
    )


def _print_model_rows(v: dict[str, Any]) -> None:
    print(f"\n{v['label']} ({v['blocks']} blocks), scenario {v['scenario']}")
    print(
        f"{'N':>3} {'parareal':>9} {'MiB':>6} {'pipeline':>9} {'M':>3} {'bubble':>6} "
        f"{'MiB GPipe':>9} {'MiB 1F1B':>8} {'DDP':>7} {'MiB':>6}"
    )
    for r in v["rows"]:
        if all(math.isnan(r[f"{k}_s"]) for k in ("parareal", "pipeline", "ddp")):
            continue
        mib = {
            k: r[k] / 2**20
            for k in ("parareal_memory", "gpipe_memory", "onefoneb_memory", "ddp_memory")
        }
        print(
            f"{r['N']:>3} {_cell(r['parareal_speedup'], 9, 2, 'x')} "
            f"{_cell(mib['parareal_memory'], 6, 0)} {_cell(r['pipeline_speedup'], 9, 2, 'x')} "
            f"{r['pipeline_M'] or '-':>3} {_cell(r['pipeline_bubble'], 6, 2)} "
            f"{_cell(mib['gpipe_memory'], 9, 0)} {_cell(mib['onefoneb_memory'], 8, 0)} "
            f"{_cell(r['ddp_speedup'], 7, 2, 'x')} {_cell(mib['ddp_memory'], 6, 0)}"
        )


def print_cost_model(cm: dict[str, Any]) -> None:
    """The assumptions, the per-N rows of the measured networks, and the crossovers."""
    print("\nCost model: speedup of a step over 1 device, memory per device (MiB).")
    for a in cm["assumptions"]:
        print(f"  - {a}")
    for k, sc in cm["scenarios"].items():
        print(
            f"  scenario {k}: {sc['bandwidth_Bps'] / 1e9:.2f} GB/s, "
            f"{1e6 * sc['latency_s']:.0f} us latency, compute {sc['compute_speed']:g}x "
            "one core here"
        )
    for v in cm["variants"]:
        if v["measured"] and v["scenario"] in ("gloo-here", "nvlink-gpu"):
            _print_model_rows(v)
    print(
        "\nWhere parareal is faster (N of " + ",".join(map(str, NS)) + " where both run; "
        "best speedup@N; N max: the most devices each can use)"
    )
    print(
        f"{'network':17} {'scenario':10} {'> pipeline':>11} {'> DDP':>9} {'parareal':>10} "
        f"{'pipeline':>10} {'DDP':>10} {'N max p/pipe/DDP':>17}"
    )
    for v in cm["variants"]:
        b = v["best_speedup"]

        def bs(k: str, b: dict = b) -> str:
            return "-" if b[k]["N"] is None else f"{b[k]['speedup']:.1f}x@{b[k]['N']}"

        nmax = "/".join(str(v["max_N"][k] or "-") for k in ("parareal", "pipeline", "ddp"))
        print(
            f"{v['label']:17} {v['scenario']:10} "
            f"{_ranges(v['parareal_faster_than_pipeline_at_N']):>11} "
            f"{_ranges(v['parareal_faster_than_ddp_at_N']):>9} {bs('parareal'):>10} "
            f"{bs('pipeline'):>10} {bs('ddp'):>10} {nmax:>17}"
        )


def plot_cost_model(cm: dict[str, Any], path: str) -> None:
    """Speedup over one device against N for every network and scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(v["label"] for v in cm["variants"]))
    scen = list(cm["scenarios"])
    fig, axes = plt.subplots(
        len(labels), len(scen), figsize=(4 * len(scen), 3 * len(labels)), squeeze=False
    )
    for v in cm["variants"]:
        ax = axes[labels.index(v["label"])][scen.index(v["scenario"])]
        for k, style in (("parareal", "o-"), ("pipeline", "s--"), ("ddp", "^:")):
            ax.plot(
                [r["N"] for r in v["rows"]],
                [r[f"{k}_speedup"] for r in v["rows"]],
                style,
                label=k,
                ms=3,
            )
        ax.set_xscale("log", base=2)
        ax.set_title(f"{v['label']}, {v['scenario']}", fontsize=8)
        ax.set_xlabel("N devices")
        ax.set_ylabel("speedup")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    config_arguments(p, reps=12)
    p.add_argument(
        "--balance",
        default="flops",
        choices=("flops", "blocks"),
        help="cut of the parareal network, and so of the pipeline (default flops)",
    )
    p.add_argument(
        "--accuracy",
        default="reuse",
        choices=("reuse", "measure", "skip"),
        help="reuse: original and parareal from accuracy_parareal.json, train the "
        "DDP and micro-batch variants; measure: train all; skip",
    )
    p.add_argument(
        "--acc-variants",
        nargs="+",
        default=None,
        choices=ACC_VARIANTS,
        help="accuracy variants to train (default: ddp micro4 micro8, plus "
        "original and parareal with --accuracy measure)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="override the per-dataset epochs")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny models, 3 rounds, 1-epoch accuracy on digits, the checks",
    )
    p.add_argument("--check", action="store_true", help="run the correctness checks too")
    p.add_argument("--check-only", action="store_true", help="only the correctness checks")
    p.add_argument("--no-cost-model", action="store_true")
    p.add_argument("--plot", default=None, metavar="PNG", help="cost-model curves")
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="default benchmarks/results/bench_parareal_vs.json; none with --quick",
    )
    args = p.parse_args(argv)
    args.check = args.check or args.check_only
    if args.json is None and not (args.quick or args.check_only):
        args.json = DEFAULT_JSON
    if args.quick:
        args.reps, args.warmup = 3, 1
        args.seeds, args.epochs = [0], args.epochs or 1
        args.plan = [("digits", "vgg-small")]
    else:
        args.plan = list(PLAN)
    if args.acc_variants is None:
        extra = ("original", "parareal") if args.accuracy == "measure" or args.quick else ()
        args.acc_variants = [*extra, "ddp", "micro4", "micro8"]
        if args.quick:
            args.acc_variants = list(ACC_VARIANTS)
    if args.accuracy == "skip":
        args.acc_variants = []
    configs = QUICK if args.quick else CONFIGS
    t_all = time.perf_counter()
    out: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "plan"},
        "plan": args.plan,
    }
    ranks = run_ranks(args)
    if ranks is None:
        return 0
    ok = True
    if "checks" in ranks[0]:
        checks = [r["checks"] for r in ranks]
        ok = checks_ok(checks)
        out["checks"] = {"ok": ok, "rank0": checks[0], "rank1": checks[1]}
        print_checks(checks, ok)
    if args.check_only:
        write_json(args.json, out, strict=True)
        return 0 if ok else 1
    acc = None
    if args.acc_variants or args.accuracy == "reuse":
        same_recipe = args.accuracy == "reuse" and args.epochs is None and not args.quick
        reuse = reused_accuracy(args.plan, args.seeds) if same_recipe else {}
        jobs = [j for r in ranks for j in r.get("accuracy", [])]
        if jobs or reuse:
            acc = accuracy_summary(jobs, reuse)
            acc["jobs"] = jobs
            out["accuracy"] = acc
    out["bandwidth"] = ranks[0]["bandwidth"]
    out["maxrss_kib"] = [r["maxrss_kib"] for r in ranks]
    out["measured"] = [combine(ranks, name, configs[name]) for name in args.configs]
    print(
        f"\nOne training step, {args.reps} interleaved rounds: median [quartiles] of step "
        "time and of the per-round ratios (speedup > 1 = faster than the baseline); 2-process "
        "rows on 2 Gloo processes x 1 thread (max over ranks); 1-process rows on rank 0 with "
        "the other core idle. MiB/rank: peak saved activations + parameters held + 2x "
        "gradients. acc diff: mean test-accuracy difference to the original (points)."
    )
    for r in out["measured"]:
        print_measured(r, acc)
        print_goals(r, acc)
    if acc:
        print_accuracy(acc)
    bw = out["bandwidth"]
    print(
        f"\nGloo here: all-reduce {bw['allreduce_bandwidth_Bps'] / 1e9:.2f} GB/s, "
        f"{1e6 * bw['allreduce_latency_s']:.0f} us; send/recv "
        f"{bw['p2p_bandwidth_Bps'] / 1e9:.2f} GB/s, {1e6 * bw['p2p_latency_s']:.0f} us"
    )
    if not args.no_cost_model:
        log("cost model: measuring block costs on one thread")
        inputs = {name: cost_inputs(configs[name], args.quick) for name in args.configs}
        cm = cost_model(inputs, bw, args.quick)
        out["cost_model"] = cm
        print_cost_model(cm)
        if args.plot:
            plot_cost_model(cm, args.plot)
    out["time_s"] = time.perf_counter() - t_all
    print(f"\ntotal {out['time_s']:.0f} s")
    write_json(args.json, out, strict=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
