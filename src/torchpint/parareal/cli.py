"""``torchpint train-parareal``: train a parareal network (and optionally the original).

Builds a model, cuts it into a parareal network with N chunks, trains it with SGD on the
chosen data set, and with ``--baseline`` trains the original network with the same recipe
from the same initial weights, then reports accuracy, step time and the speedup.

Under ``torchrun --nproc-per-node N -m torchpint train-parareal --executor distributed``
rank j runs fine chunk j; every rank sees the same batches; only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from datetime import timedelta
from typing import Any

import torch

_EXECUTORS = ("serial", "threads", "devices", "distributed")


def _model_names() -> tuple[str, ...]:
    from torchpint.models import MODEL_NAMES

    return MODEL_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train-parareal`` options."""
    from torchpint.data import DATASET_NAMES

    m = parser.add_argument_group("model and split")
    m.add_argument(
        "--model",
        default="vgg-small",
        choices=_model_names(),
        help="network to train (default: vgg-small)",
    )
    m.add_argument("--depth", type=int, default=None, help="ResNet depth 9n+2 (preset's if unset)")
    m.add_argument("--width", type=int, default=None, help="channels of the first stage")
    m.add_argument(
        "--parts",
        type=int,
        default=None,
        help="chunks N (default 2; the world size under --executor distributed)",
    )
    m.add_argument("--iterations", type=int, default=1, help="parareal iterations k (default 1)")
    m.add_argument(
        "--cut-points", default=None, help="comma-separated block indices where chunks 2..N start"
    )
    m.add_argument(
        "--coarse",
        default="auto",
        choices=("auto", "conv", "pool", "preact"),
        help="kind of the default coarse networks (see torchpint.parareal.default_coarse)",
    )
    m.add_argument(
        "--balance",
        default="flops",
        choices=("flops", "time", "blocks", "tune"),
        help="how automatic cuts balance the chunks (default flops: deterministic; tune: "
        "time the parallel network on candidate cuts and keep the fastest)",
    )
    m.add_argument(
        "--executor",
        default="threads",
        choices=_EXECUTORS,
        help="where the fine chunks run (default threads)",
    )
    m.add_argument(
        "--devices",
        default=None,
        help="comma-separated devices, e.g. cuda:0,cuda:1 (devices executor: one "
        "per chunk; distributed: one per local rank; else the device to use)",
    )
    m.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="distributed executor: seconds a rank waits for the others before it fails "
        "with an error (a peer died or hung; default 300)",
    )
    d = parser.add_argument_group("data")
    d.add_argument(
        "--dataset",
        default="digits",
        choices=DATASET_NAMES,
        help="digits and shapes are embedded; the others are read from --data-root",
    )
    d.add_argument("--data-root", default=None, help="folder holding a torchvision data set")
    d.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size (digits 16, shapes 32, else the data set's own)",
    )
    d.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    t = parser.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument(
        "--schedule",
        default="cosine",
        choices=("cosine", "step"),
        help="per-step cosine decay, or x0.1 at 50%% and 75%% of training",
    )
    t.add_argument("--seed", type=int, default=0, help="fixes data split, init and batches")
    t.add_argument(
        "--baseline",
        action="store_true",
        help="also train the original network with the same recipe and compare",
    )
    o = parser.add_argument_group("output")
    o.add_argument("--checkpoint-dir", default=None, help="write a checkpoint every epoch here")
    o.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    o.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop after this many epochs in this run (continue with --resume)",
    )
    o.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    o.add_argument("--plot", default=None, metavar="PATH", help="loss and accuracy curves")
    o.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def _fail(msg: str) -> int:
    print(f"torchpint train-parareal: error: {msg}", file=sys.stderr)
    return 2


def parse_devices(spec: str | None) -> list[torch.device] | None:
    """``"cuda:0,cuda:1"`` / ``"0,1"`` / ``"cpu"`` -> devices, checked to exist."""
    if spec is None or not spec.strip():
        return None
    out = []
    for item in spec.split(","):
        item = item.strip()
        dev = torch.device(f"cuda:{item}" if item.isdigit() else item)
        if dev.type == "cuda":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            idx = dev.index or 0
            if idx >= n:
                have = f"cuda:0..cuda:{n - 1}" if n else "none"
                raise ValueError(
                    f"device {dev} does not exist: this machine has {n} CUDA device(s) "
                    f"({have}). Use --devices cpu or --executor threads on a CPU."
                )
            dev = torch.device("cuda", idx)
        elif dev.type != "cpu":
            try:
                torch.empty(0, device=dev)
            except Exception as err:
                raise ValueError(f"device {dev} is not usable here: {err}") from err
        out.append(dev)
    return out


def _init_distributed(
    devices: list[torch.device] | None, timeout: float
) -> tuple[int, int, torch.device]:
    """Join the torchrun process group; ``(rank, world, this rank's device)``. Every
    collective fails after ``timeout`` seconds instead of torch's default 30 minutes."""
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ValueError(
            "--executor distributed runs one rank per chunk: launch with "
            "torchrun --nproc-per-node N -m torchpint train-parareal --executor distributed ..."
        )
    local = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    dev = torch.device("cpu")
    if devices:
        dev = devices[local % len(devices)]
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout)
        )
    return dist.get_rank(), dist.get_world_size(), dev


def _parse_cuts(spec: str | None) -> list[int] | None:
    if spec is None:
        return None
    try:
        return [int(c) for c in spec.split(",") if c.strip()]
    except ValueError as err:
        raise ValueError(f"--cut-points must be comma-separated integers, got {spec!r}") from err


def _ckpt(args: argparse.Namespace, label: str) -> str | None:
    return os.path.join(args.checkpoint_dir, f"{label}.pt") if args.checkpoint_dir else None


def _cuts_of(net: Any) -> list[int]:
    return [b for _, b in net.block_ranges[:-1]]


def run(args: argparse.Namespace) -> int:
    """Train as the options say; 0 on success, 2 on bad input."""
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        if isinstance(err, ModuleNotFoundError) and not str(err).startswith("this data set"):
            raise
        return _fail(str(err))
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _run(args: argparse.Namespace) -> int:
    from torchpint.data import make_loaders
    from torchpint.models import build_model
    from torchpint.parareal import parareal
    from torchpint.parareal.train import TrainConfig, fit, load_checkpoint

    if args.resume and not args.checkpoint_dir:
        raise ValueError("--resume needs --checkpoint-dir")
    devices = parse_devices(args.devices)
    rank, world = 0, 1
    if args.executor == "distributed":
        rank, world, home = _init_distributed(devices, args.timeout)
        parts = world if args.parts is None else args.parts
        if parts != world:
            raise ValueError(
                f"--executor distributed runs one chunk per rank: --parts {parts} but "
                f"torchrun started {world} ranks (use --nproc-per-node {parts})"
            )
    else:
        parts = 2 if args.parts is None else args.parts
        if args.executor == "devices":
            if devices is None:
                n = torch.cuda.device_count() if torch.cuda.is_available() else 0
                if n < parts:
                    raise ValueError(
                        f"--executor devices needs {parts} devices, one per chunk, and this "
                        f"machine has {n} CUDA device(s); pass --devices (e.g. "
                        f"--devices {','.join(['cpu'] * parts)} to run it on the CPU)"
                    )
                devices = [torch.device("cuda", j) for j in range(parts)]
            if len(devices) != parts:
                raise ValueError(
                    f"--executor devices needs one device per chunk: --parts {parts}, "
                    f"--devices {args.devices}"
                )
        elif devices is not None and len(devices) != 1:
            raise ValueError(f"--executor {args.executor} uses one device; got {args.devices}")
        home = devices[0] if devices else torch.device("cpu")
    main = rank == 0
    say = print if main else (lambda *a, **k: None)

    cfg = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        seed=args.seed,
    )
    data = make_loaders(
        args.dataset,
        data_root=args.data_root,
        image_size=args.image_size,
        batch_size=args.batch_size,
        seed=args.seed,
        num_workers=args.workers,
    )
    torch.manual_seed(args.seed)
    model = build_model(
        args.model,
        depth=args.depth,
        width=args.width,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
    ).to(home)
    baseline = copy.deepcopy(model) if args.baseline else None  # same initial weights

    cuts = _parse_cuts(args.cut_points)
    ckpt = _ckpt(args, "parareal")
    if args.resume and ckpt and os.path.exists(ckpt):
        cuts = load_checkpoint(ckpt).get("cut_points", cuts)  # the split it was trained with
    example = next(iter(data.train))[0][:8].to(home)
    net = parareal(
        model,
        parts,
        iterations=args.iterations,
        cut_points=cuts,
        balance=args.balance,
        coarse=args.coarse,
        example_input=example,
    )
    net.train()
    net.set_executor(args.executor, devices=devices)
    say(
        f"train-parareal: {args.model} on {data.name} ({len(data.train.dataset)} train, "
        f"{len(data.test.dataset)} test, {data.in_channels}x{data.image_size}x"
        f"{data.image_size}), N={parts} chunks at blocks {_cuts_of(net)}, "
        f"k={args.iterations}, executor {args.executor}"
        + (f" ({world} ranks)" if args.executor == "distributed" else "")
    )
    results: dict[str, Any] = {}
    res = fit(
        net,
        data.train,
        data.test,
        cfg,
        label="parareal",
        checkpoint=ckpt,
        resume=args.resume,
        stop_after=args.stop_after,
        progress=not args.no_progress,
        extra_state={"cut_points": _cuts_of(net)},
    )
    results["parareal"] = {
        **res.to_dict(),
        "parts": parts,
        "iterations": args.iterations,
        "executor": args.executor,
        "cut_points": _cuts_of(net),
        "coarse_params": sum(p.numel() for p in net.coarse.parameters()),
        "cost_report": _cost_report(net, example, args.executor) if main else None,
    }
    base_res = None
    if baseline is not None:
        if args.executor == "distributed" and not main:
            return 0  # rank 0 trains the original alone; the others are done
        if args.executor == "distributed":
            torch.set_num_threads(os.cpu_count() or 1)  # torchrun set 1 thread per rank
        base_res = fit(
            baseline,
            data.train,
            data.test,
            cfg,
            label="baseline",
            checkpoint=_ckpt(args, "baseline"),
            resume=args.resume,
            stop_after=args.stop_after,
            progress=not args.no_progress,
        )
        results["baseline"] = {**base_res.to_dict(), "threads": torch.get_num_threads()}
    else:
        results["baseline"] = None
    if not main:
        return 0
    speedup = base_res.step_time_s / res.step_time_s if base_res is not None else None
    results["speedup"] = speedup
    results["config"] = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    results["dataset"] = {
        "name": data.name,
        "train": len(data.train.dataset),
        "test": len(data.test.dataset),
        "channels": data.in_channels,
        "image_size": data.image_size,
        "classes": data.num_classes,
    }
    p = results["parareal"]
    say(
        f"parareal: test accuracy {p['test_accuracy']:.2f}%  step {1e3 * p['step_time_s']:.1f} ms"
        f"  params {p['params']:,} (coarse {p['coarse_params']:,})"
    )
    if base_res is not None:
        b = results["baseline"]
        say(
            f"baseline: test accuracy {b['test_accuracy']:.2f}%  step "
            f"{1e3 * b['step_time_s']:.1f} ms  params {b['params']:,}  "
            f"({b['threads']} thread{'' if b['threads'] == 1 else 's'})"
        )
        say(f"speedup (baseline step / parareal step): {speedup:.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
        say(f"wrote {args.json}")
    if args.plot:
        plot_curves(results, args.plot)
        say(f"wrote {args.plot}")
    return 0


def _cost_report(net: Any, example: torch.Tensor, executor: str) -> dict[str, Any] | None:
    """``net.cost_report()`` on a training batch; ``None`` where it cannot run here."""
    if executor == "devices":
        return None  # chunks live on several devices; the benchmark measures this case
    try:
        return net.cost_report(example)
    except Exception as err:  # a report is a bonus, never a reason to fail a training run
        return {"error": str(err)}


def plot_curves(results: dict[str, Any], path: str) -> None:
    """Train/test loss and test accuracy per epoch of parareal (and baseline) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for label, style in (("parareal", "-"), ("baseline", "--")):
        r = results.get(label)
        if not r:
            continue
        hist = r["history"]
        ep = [h["epoch"] for h in hist]
        ax_loss.plot(ep, [h["train_loss"] for h in hist], style, label=f"{label} train")
        ax_loss.plot(ep, [h["test_loss"] for h in hist], style, label=f"{label} test")
        ax_acc.plot(ep, [h["test_accuracy"] for h in hist], style, marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
