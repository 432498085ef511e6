"""``torchpint train-parareal``: train a parareal network (and optionally the original).

Builds a model, cuts it into a parareal network with N chunks, trains it with SGD on the
chosen data set, and with ``--baseline`` trains the original network with the same recipe
from the same initial weights, then reports accuracy, step time and the speedup.

Under ``torchrun --nproc-per-node N -m torchpint train-parareal --executor distributed``
rank j runs fine chunk j; every rank sees the same batches; only rank 0 prints and writes.
With ``--data-parallel D`` and ``N * D`` ranks, D replicas of the N-chunk network each
train on their share of every batch and average their gradients.
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Any

import torch

from torchpint.cli import _plots as plots
from torchpint.cli._common import (
    COUNT,
    POSITIVE,
    add_data_arguments,
    add_timeout,
    bounded,
    check_outputs,
    data_options,
    data_run_fields,
    deprecated_alias,
    is_main,
    local_rank,
    parse_devices,
    save_outputs,
    say,
)
from torchpint.models import MODEL_NAMES
from torchpint.parareal.coarse import COARSE_KINDS
from torchpint.parareal.executors import EXECUTORS
from torchpint.parareal.factory import BALANCE
from torchpint.parareal.train import SCHEDULES

MEMORY_HINT = "--batch-size or --image-size (or the model's --width/--depth)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train-parareal`` options."""
    m = parser.add_argument_group("model and split")
    a = m.add_argument
    a("--model", default="vgg-small", choices=MODEL_NAMES, help="network (default vgg-small)")
    a("--depth", type=bounded(int, 11), default=None,
      help="ResNet depth 9n+2 (default: the preset's)")
    a("--width", type=COUNT, default=None, help="channels of the first stage (preset's)")
    a("--chunks", type=COUNT, default=None,
      help="fine chunks N (default 2; the world size under --executor distributed)")
    a("--iterations", type=COUNT, default=1, help="parareal iterations k (default 1)")
    a("--cut-points", default=None, help="comma-separated block indices where chunks 2..N start")
    a("--coarse", default="auto", choices=COARSE_KINDS,
      help="kind of the default coarse networks (default auto; see "
      "torchpint.parareal.default_coarse)")
    a("--balance", default="flops", choices=BALANCE,
      help="how automatic cuts balance the chunks (default flops: deterministic; tune: "
      "time the parallel network on candidate cuts and keep the fastest)")
    a("--executor", default="threads", choices=tuple(EXECUTORS),
      help="where the fine chunks run (default threads)")
    a("--devices", default=None,
      help="comma-separated devices, e.g. cuda:0,cuda:1 (devices executor: one per chunk; "
      "distributed: one per local rank; else the device to use)")
    a("--data-parallel", type=COUNT, default=1, metavar="D",
      help="data-parallel replicas of the parareal network (distributed executor: "
      "torchrun --nproc-per-node N*D; each replica trains on 1/D of every batch)")
    a("--replica-bn", default="sync", choices=("sync", "local"),
      help="batch norm with --data-parallel: sync (statistics of the whole batch, as one "
      "replica; default) or local (each replica's share, as DDP; fewer messages)")
    add_timeout(m)
    add_data_arguments(parser.add_argument_group("data"))
    t = parser.add_argument_group("training")
    t.add_argument("--epochs", type=COUNT, default=4, help="training epochs (default 4)")
    t.add_argument("--batch-size", type=COUNT, default=32,
                   help="examples per step (default 32)")
    t.add_argument("--lr", type=POSITIVE, default=0.05, help="base learning rate (default 0.05)")
    t.add_argument("--momentum", type=bounded(float, 0, 1, high_open=True),
                   default=0.9, help="SGD momentum (default 0.9)")
    t.add_argument("--weight-decay", type=bounded(float, 0), default=5e-4,
                   help="SGD weight decay (default 5e-4)")
    t.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                   help="per-step cosine decay, or x0.1 at 50%% and 75%% of training")
    t.add_argument("--seed", type=bounded(int, 0), default=0,
                   help="fixes data split, init and batches (default 0)")
    t.add_argument("--baseline", action="store_true",
                   help="also train the original network with the same recipe and compare")
    o = parser.add_argument_group("output")
    o.add_argument("--checkpoint", dest="checkpoint_dir", default=None, metavar="DIR",
                   help="folder of the checkpoints, written every epoch and when a signal "
                   "stops the run")
    deprecated_alias(o, "--checkpoint-dir", "--checkpoint", "checkpoint_dir")
    o.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    o.add_argument("--stop-after", type=bounded(int, 0), default=None,
                   help="stop after this many epochs in this run (continue with --resume)")
    o.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    o.add_argument("--plot", default=None, metavar="PATH", help="loss and accuracy curves")
    o.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def _parse_cuts(spec: str | None) -> list[int] | None:
    if spec is None:
        return None
    try:
        return [int(c) for c in spec.split(",") if c.strip()]
    except ValueError as err:
        raise ValueError(f"--cut-points must be comma-separated integers, got {spec!r}") from err


def _ckpt(args: argparse.Namespace, label: str) -> str | None:
    return os.path.join(args.checkpoint_dir, f"{label}.pt") if args.checkpoint_dir else None


def _placement(args: argparse.Namespace) -> tuple[int, list[torch.device] | None, torch.device]:
    """The number of chunks, the executor's devices and the device of P, C and Q; joins
    the torchrun process group for the distributed executor."""
    from torchpint.core import init_distributed
    from torchpint.runtime.comm import world_size

    devices = parse_devices(args.devices)
    replicas = args.data_parallel
    if args.executor != "distributed" and world_size() > 1:
        raise ValueError(
            f"under torchrun ({world_size()} processes) --executor {args.executor} would "
            "train a full copy on every rank, all writing the same files: use --executor "
            "distributed (one chunk per rank), or run one process")
    if args.executor == "distributed":
        home = devices[local_rank() % len(devices)] if devices else torch.device("cpu")
        if not init_distributed(timeout=args.timeout, device=home):
            raise ValueError(
                "--executor distributed runs one rank per chunk: launch with torchrun "
                "--nproc-per-node N -m torchpint train-parareal --executor distributed ..."
            )
        world = torch.distributed.get_world_size()
        if world % replicas:
            raise ValueError(
                f"--data-parallel {replicas} splits the ranks into {replicas} replicas, but "
                f"torchrun started {world} ranks (use --nproc-per-node N*{replicas})"
            )
        chunks = world // replicas if args.chunks is None else args.chunks
        if chunks * replicas != world:
            raise ValueError(
                f"--executor distributed runs one chunk per rank: --chunks {chunks} x "
                f"--data-parallel {replicas} but torchrun started {world} ranks (use "
                f"--nproc-per-node {chunks * replicas})"
            )
        return chunks, devices, home
    if replicas > 1:
        raise ValueError(
            f"--data-parallel {replicas} needs --executor distributed (one rank per chunk "
            "and replica, under torchrun)"
        )
    chunks = 2 if args.chunks is None else args.chunks
    if args.executor == "devices":
        if devices is None:
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n < chunks:
                raise ValueError(
                    f"--executor devices needs {chunks} devices, one per chunk, and this "
                    f"machine has {n} CUDA device(s); pass --devices (e.g. "
                    f"--devices {','.join(['cpu'] * chunks)} to run it on the CPU)"
                )
            devices = [torch.device("cuda", j) for j in range(chunks)]
        if len(devices) != chunks:
            raise ValueError(
                f"--executor devices needs one device per chunk: --chunks {chunks}, "
                f"--devices {args.devices}"
            )
    elif devices is not None and len(devices) != 1:
        raise ValueError(f"--executor {args.executor} uses one device; got {args.devices}")
    return chunks, devices, devices[0] if devices else torch.device("cpu")


def run(args: argparse.Namespace) -> int:
    """Train as the options say; 0 on success."""
    import torch.distributed as dist

    try:
        return _train(args)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _train(args: argparse.Namespace) -> int:
    from torchpint.common.syncbn import convert_sync_batchnorm
    from torchpint.data import make_loaders
    from torchpint.models import build_model
    from torchpint.parareal import parareal_network, process_grid
    from torchpint.runtime.checkpoint import check_fingerprint
    from torchpint.trainer import FitConfig, fit, load_checkpoint

    check_outputs(args)
    chunks, devices, home = _placement(args)
    cfg = FitConfig(epochs=args.epochs, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed)
    data = make_loaders(args.dataset, batch_size=args.batch_size, seed=args.seed,
                        **data_options(args))
    torch.manual_seed(args.seed)
    model = build_model(args.model, depth=args.depth, width=args.width,
                        num_classes=data.num_classes, in_channels=data.in_channels).to(home)
    baseline = copy.deepcopy(model) if args.baseline else None  # same initial weights

    # what defines a run beyond the recipe (fit compares that): a checkpoint of another
    # model, data set or batch size is refused, not resumed
    run = {"model": args.model, "depth": args.depth, "width": args.width, "dataset": data.name,
           "image_size": data.image_size, "batch_size": args.batch_size,
           **data_run_fields(args)}
    para_run = {**run, "chunks": chunks, "iterations": args.iterations, "coarse": args.coarse}
    cuts = _parse_cuts(args.cut_points)
    ckpt = _ckpt(args, "parareal")
    if args.resume and ckpt and os.path.exists(ckpt):  # the split it was trained with
        state = load_checkpoint(ckpt)
        check_fingerprint(state.get("run"), para_run, ckpt)  # before using its cut points
        cuts = state.get("cut_points", cuts)
    example = next(iter(data.train))[0][:8].to(home)
    grid = None
    if args.executor == "distributed" and args.data_parallel > 1:
        grid = process_grid(chunks, args.data_parallel, timeout=args.timeout)
    net = parareal_network(model, chunks, iterations=args.iterations, cut_points=cuts,
                           balance=args.balance, coarse=args.coarse, example_input=example,
                           executor=args.executor, devices=devices, group=grid,
                           timeout=args.timeout)
    report = _cost_report(net, example) if is_main() else None  # before BN syncs ranks
    if grid is not None and args.replica_bn == "sync":
        convert_sync_batchnorm(net, grid.data_group)
    world = torch.distributed.get_world_size() if args.executor == "distributed" else 1
    layout = f"{args.data_parallel} replicas x {chunks} chunks, " if grid is not None else ""
    say(f"train-parareal: {args.model} on {data.name} ({len(data.train.dataset)} train, "
        f"{len(data.test.dataset)} test, {data.in_channels}x{data.image_size}x"
        f"{data.image_size}), N={chunks} chunks at blocks {net.cut_points}, "
        f"k={args.iterations}, executor {args.executor}"
        + (f" ({layout}{world} ranks)" if world > 1 else ""))
    results: dict[str, Any] = {}
    res = fit(net, data.train, data.test, cfg, label="parareal", checkpoint=ckpt,
              resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress,
              extra_state={"cut_points": net.cut_points}, run=para_run)
    results["parareal"] = {
        **res.to_dict(),
        "chunks": chunks,
        "iterations": args.iterations,
        "executor": args.executor,
        "cut_points": net.cut_points,
        "coarse_params": sum(p.numel() for p in net.coarse.parameters()),
        "data_parallel": args.data_parallel,
        "cost_report": report,
    }
    base_res = None
    if baseline is not None:
        if world > 1 and not is_main():
            return 0  # rank 0 trains the original alone; the others are done
        if world > 1:
            torch.set_num_threads(os.cpu_count() or 1)  # torchrun set 1 thread per rank
        base_res = fit(baseline, data.train, data.test, cfg, label="baseline",
                       checkpoint=_ckpt(args, "baseline"), resume=args.resume,
                       stop_after=args.stop_after, progress=not args.no_progress, run=run)
        results["baseline"] = {**base_res.to_dict(), "threads": torch.get_num_threads()}
    else:
        results["baseline"] = None
    if not is_main():
        return 0
    speedup = base_res.step_time_s / res.step_time_s if base_res is not None else None
    results["speedup"] = speedup
    results["config"] = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    results["dataset"] = {
        "name": data.name, "train": len(data.train.dataset), "test": len(data.test.dataset),
        "channels": data.in_channels, "image_size": data.image_size,
        "classes": data.num_classes,
    }
    p = results["parareal"]
    say(f"parareal: test accuracy {p['test_accuracy']:.2f}%  step {1e3 * p['step_time_s']:.1f} ms"
        f"  params {p['params']:,} (coarse {p['coarse_params']:,})")
    if base_res is not None:
        b = results["baseline"]
        say(f"baseline: test accuracy {b['test_accuracy']:.2f}%  step "
            f"{1e3 * b['step_time_s']:.1f} ms  params {b['params']:,}  "
            f"({b['threads']} thread{'' if b['threads'] == 1 else 's'})")
        say(f"speedup (baseline step / parareal step): {speedup:.2f}x")
    save_outputs(args, results, lambda path: plots.plot_training_curves(results, path))
    return 0


def _cost_report(net: Any, example: torch.Tensor) -> dict[str, Any]:
    """``net.cost_report()`` on a training batch, or the reason it could not run."""
    try:
        return net.cost_report(example)
    except Exception as err:  # a report is a bonus, never a reason to fail a training run
        return {"error": str(err)}
