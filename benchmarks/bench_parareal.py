"""Wall time of one training step (forward + backward + SGD update): original vs parareal.

CPU (always): the original network on 1 thread (the paper's comparison: one device per
chunk against one device) and on all cores as intra-op threads (the honest comparison on
this machine), against its parareal version with N chunks on the ``threads`` executor (one
intra-op thread per chunk; cut points from ``balance="tune"`` by default). Repetitions
are interleaved (A, B, C, B, C, A, ...); times are medians, and a speedup is the median
(with quartiles) of the ratios of the two variants' times in the same round, so drift in
machine load cancels. Beside the measured speedup: the ideal one from the measured
chunk costs (Amdahl, with the serial coarse sweeps: ``PararealNetwork.cost_report``), the
gain of overlapping the coarse sweep with the chunks (the same network with
``ThreadsExecutor(overlap=False)`` timed in the same rounds) and the parameter overhead of
the coarse nets.

GPU (when available): N = 1..#GPUs with the ``devices`` executor against the original on
one GPU, with the peak memory of each.

    python benchmarks/bench_parareal.py --json benchmarks/results/bench_parareal.json
    python benchmarks/bench_parareal.py --quick        # a short check that it runs
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from common import (  # this directory is on sys.path
    CONFIGS,
    QUICK,
    batch,
    build,
    config_arguments,
    fmt_ratio,
    machine_info,
    median_quartiles,
    ratios,
    step_fn,
    write_json,
)
from torchpint.parareal import ThreadsExecutor, parareal_network


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(step: Callable[[], None], threads: int | None) -> float:
    if threads is not None:
        torch.set_num_threads(threads)
    _sync()
    t0 = time.perf_counter()
    step()
    _sync()
    return time.perf_counter() - t0


def _interleaved(
    variants: dict[str, tuple[Callable[[], None], int | None]], reps: int, warmup: int
) -> dict[str, list[float]]:
    """Time each variant ``reps`` times, rotating the order every round."""
    names = list(variants)
    for _ in range(warmup):
        for n in names:
            _time(*variants[n])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            times[n].append(_time(*variants[n]))
    return times


def _summary(ts: list[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(ts),
        "min_s": min(ts),
        "max_s": max(ts),
        "reps": len(ts),
        "all_s": ts,
    }


def _speedups(times: dict[str, list[float]], cores: int) -> dict[str, Any]:
    """Parareal against the original on 1 thread and on all cores (per-round ratios)."""
    r1 = ratios(times, "original_1_thread", "parareal")
    vs1 = median_quartiles(r1)
    vsall = median_quartiles(ratios(times, f"original_{cores}_threads", "parareal"))
    return {
        "speedup_vs_1_thread": vs1[0],
        "speedup_vs_1_thread_quartiles": vs1[1:],
        "speedup_vs_all_cores": vsall[0],
        "speedup_vs_all_cores_quartiles": vsall[1:],
        "share_at_least_1.6x": sum(x >= 1.6 for x in r1) / len(r1),
    }


def _pooled(rows: list[dict[str, Any]], name: str, cores: int) -> dict[str, Any]:
    """The per-round ratios of every run of config ``name`` taken together."""
    times: dict[str, list[float]] = {}
    for r in rows:
        if r["config"] == name:
            for k, v in r["times"].items():
                times.setdefault(k, []).extend(v["all_s"])
    rounds = len(times["parareal"])
    return {"config": name, "rounds": rounds, **_speedups(times, cores)}


def _ratio_text(row: dict[str, Any], key: str) -> str:
    """A speedup of ``row`` with its quartiles."""
    return fmt_ratio(row[key], row[f"{key}_quartiles"])


def bench_cpu(
    name: str,
    cfg: tuple,
    chunks: int,
    reps: int,
    warmup: int,
    cores: int,
    balance: str,
    coarse: str = "auto",
) -> dict[str, Any]:
    """Original (1 thread, all cores) vs parareal on the threads executor."""
    preset, depth, width, size, bs = cfg
    model = build(cfg)
    x, y = batch(cfg)
    orig1 = copy.deepcopy(model)
    origall = copy.deepcopy(model)
    torch.set_num_threads(1)  # chunk costs and balance as each chunk will run: one thread
    net = parareal_network(
        model, chunks, balance=balance, coarse=coarse, example_input=x, executor="threads"
    )
    report = net.cost_report(x)
    torch.set_num_threads(cores)
    sweep_first = copy.deepcopy(net)  # the ablation: iteration 0 waits for the coarse sweep
    sweep_first.set_executor(ThreadsExecutor(overlap=False))
    variants = {
        "original_1_thread": (step_fn(orig1, x, y), 1),
        f"original_{cores}_threads": (step_fn(origall, x, y), cores),
        "parareal": (step_fn(net, x, y), cores),  # threads executor: cores // N per chunk
        "parareal_sweep_first": (step_fn(sweep_first, x, y), cores),
    }
    times = _interleaved(variants, reps, warmup)
    torch.set_num_threads(cores)
    return {
        "config": name,
        "model": preset,
        "depth": depth,
        "width": width,
        "image_size": size,
        "batch_size": bs,
        "chunks": chunks,
        "cores": cores,
        "balance": balance,
        "coarse": coarse,
        "cut_points": net.cut_points,
        "tuning": [{"cut_points": c, "pass_s": t} for c, t in net.tuning],
        "times": {k: _summary(v) for k, v in times.items()},
        **_speedups(times, cores),
        "overlap_gain": statistics.median(ratios(times, "parareal_sweep_first", "parareal")),
        "ideal_speedup": report["ideal_speedup"],
        "ideal_speedup_flops": report["ideal_speedup_flops"],
        "coarse_param_overhead": report["coarse_param_overhead"],
        "params_original": sum(p.numel() for p in orig1.parameters()),
        "params_parareal": report["params"],
        "coarse_relative_time": [c["relative_time"] for c in report["chunks"]],
    }


def bench_gpu(
    name: str, cfg: tuple, reps: int, warmup: int, balance: str, coarse: str = "auto"
) -> list[dict]:
    """The devices executor on N = 1..#GPUs against the original on one GPU."""
    n_gpu = torch.cuda.device_count()
    rows = []
    preset, depth, width, size, bs = cfg
    x, y = batch(cfg, device="cuda:0")
    base = build(cfg)
    orig = copy.deepcopy(base).to("cuda:0")
    torch.cuda.reset_peak_memory_stats()
    t_orig = _interleaved({"o": (step_fn(orig, x, y), None)}, reps, warmup)["o"]
    mem_orig = torch.cuda.max_memory_allocated(0)
    del orig
    for n in range(1, n_gpu + 1):
        model = copy.deepcopy(base).to("cuda:0")
        devs = [f"cuda:{j}" for j in range(n)]
        net = parareal_network(
            model,
            n,
            balance=balance,
            coarse=coarse,
            example_input=x,
            executor="devices",
            devices=devs,
        )
        report = net.cost_report(x)
        for j in range(n_gpu):
            torch.cuda.reset_peak_memory_stats(j)
        t = _interleaved({"p": (step_fn(net, x, y), None)}, reps, warmup)["p"]
        mem = [torch.cuda.max_memory_allocated(j) for j in range(n)]
        rows.append(
            {
                "config": name,
                "chunks": n,
                "devices": devs,
                "original": _summary(t_orig),
                "parareal": _summary(t),
                "speedup": statistics.median(t_orig) / statistics.median(t),
                "ideal_speedup": report["ideal_speedup"],
                "coarse_param_overhead": report["coarse_param_overhead"],
                "memory_original_bytes": mem_orig,
                "memory_parareal_bytes": mem,
                "memory_overhead": sum(mem) / max(mem_orig, 1) - 1.0,
            }
        )
        del net, model
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    config_arguments(p, reps=7)
    p.add_argument("--chunks", type=int, default=2, help="chunks N on the CPU (default 2)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--balance", default="tune", choices=("tune", "time", "flops", "blocks"))
    p.add_argument(
        "--coarse",
        default="auto",
        choices=("auto", "conv", "pool", "preact"),
        help="kind of the default coarse networks",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="repeat each CPU config (cut tuning included) and also report the ratios of "
        "all rounds pooled (default 1)",
    )
    p.add_argument("--quick", action="store_true", help="tiny models, 3 reps: checks it runs")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU part")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    configs = QUICK if args.quick else CONFIGS
    reps, warmup = (3, 1) if args.quick else (args.reps, args.warmup)

    out: dict[str, Any] = {
        "machine": machine_info(
            gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0
        ),
        "cpu": [],
        "gpu": [],
    }
    hdr = (
        f"{'config':8} {'N':>2} {'orig 1 thr':>11} {'orig all':>10} {'parareal':>10} "
        f"{'vs 1 thr [IQR]':>20} {'vs all [IQR]':>20} {'ideal':>6} {'overlap':>8} "
        f"{'coarse params':>14}  cuts"
    )
    print(
        f"CPU, one training step, median of {reps} interleaved repetitions (ms); speedups: "
        "median [quartiles] of the per-round ratios"
    )
    print(hdr)
    runs = [(name, i) for name in args.configs for i in range(max(1, args.runs))]
    for name, i in runs:
        r = bench_cpu(
            name, configs[name], args.chunks, reps, warmup, args.cores, args.balance, args.coarse
        )
        r["run"] = i
        out["cpu"].append(r)
        t = {k: 1e3 * v["median_s"] for k, v in r["times"].items()}
        print(
            f"{name:8} {args.chunks:>2} {t['original_1_thread']:>11.1f} "
            f"{t[f'original_{args.cores}_threads']:>10.1f} {t['parareal']:>10.1f} "
            f"{_ratio_text(r, 'speedup_vs_1_thread'):>20} "
            f"{_ratio_text(r, 'speedup_vs_all_cores'):>20} "
            f"{r['ideal_speedup']:>5.2f}x {r['overlap_gain']:>7.2f}x "
            f"{100 * r['coarse_param_overhead']:>13.1f}%  "
            f"{r['cut_points']} ({r['balance']})"
        )
    if args.runs > 1:
        out["cpu_pooled"] = [_pooled(out["cpu"], name, args.cores) for name in args.configs]
        print(f"\nAll {args.runs} runs pooled: median [quartiles] of the per-round ratios")
        for r in out["cpu_pooled"]:
            print(
                f"{r['config']:8} {r['rounds']:>3} rounds  vs 1 thr "
                f"{_ratio_text(r, 'speedup_vs_1_thread')}  vs all "
                f"{_ratio_text(r, 'speedup_vs_all_cores')}  share of rounds >= 1.6x vs 1 thr: "
                f"{r['share_at_least_1.6x']:.0%}"
            )
    if torch.cuda.is_available() and not args.no_gpu:
        print("\nGPU, devices executor (ms, peak memory MiB)")
        for name in args.configs:
            for r in bench_gpu(name, configs[name], reps, warmup, args.balance, args.coarse):
                out["gpu"].append(r)
                print(
                    f"{name:8} N={r['chunks']} original {1e3 * r['original']['median_s']:.1f} "
                    f"parareal {1e3 * r['parareal']['median_s']:.1f} speedup "
                    f"{r['speedup']:.2f}x ideal {r['ideal_speedup']:.2f}x memory "
                    f"{r['memory_original_bytes'] / 2**20:.0f} -> "
                    f"{sum(r['memory_parareal_bytes']) / 2**20:.0f} "
                    f"(+{100 * r['memory_overhead']:.0f}%)"
                )
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
