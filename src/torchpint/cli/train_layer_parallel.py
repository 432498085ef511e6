"""``torchpint train-layer-parallel``: train a convolutional ResNet by layer-parallel MGRIT.

The forward and backward passes are MGRIT solves across the residual layers
(``torchpint.layerparallel``); ``--serial-baseline`` trains the same network with exact
serial forward and backprop from the same initial weights and batches. Under torchrun
each rank holds a slab of the layers (``torchrun --nproc-per-node P -m torchpint
train-layer-parallel``); rank 0 prints and writes the outputs.
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
from torchpint.core.mgrit import RELAXATIONS
from torchpint.layerparallel.check import gradient_check
from torchpint.layerparallel.module import STARTS

START_DEFAULTS = {"fwd_start": "warm", "bwd_start": "cold"}  # LayerParallel's


def _relaxation(text: str) -> str | tuple[str, ...]:
    """``F``, ``FCF`` or one per level but the coarsest, comma-separated."""
    names = tuple(x.strip().upper() for x in text.split(","))
    if not all(n in RELAXATIONS for n in names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give F, FCF or one per level but the coarsest, e.g. F,FCF")
    return names[0] if len(names) == 1 else names


MEMORY_HINT = "--batch-size, --channels or --layers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``torchpint train-layer-parallel``."""
    a = parser.add_argument
    add_data_arguments(parser)
    a("--layers", type=COUNT, default=32, help="residual layers N, one time step each "
      "(default 32)")
    deprecated_alias(parser, "--steps", "--layers", "layers", type=COUNT)
    a("--channels", type=COUNT, default=8, help="channels C of the residual stream (default 8)")
    a("--T", type=POSITIVE, default=1.0, help="time horizon; step size T/N (default 1.0)")
    a("--levels", type=COUNT, default=3, help="MGRIT levels (default 3)")
    a("--cfactor", type=bounded(int, 2), default=4, help="coarsening factor (default 4)")
    a("--relax", type=_relaxation, default=None,
      help="F, FCF, or one per level but the coarsest, e.g. F,FCF (default: F on the fine "
      "level, FCF on coarse ones, as TorchBraid)")
    a("--fwd-iterations", type=COUNT, default=2,
      help="MGRIT iterations per forward (default 2)")
    a("--bwd-iterations", type=COUNT, default=1,
      help="MGRIT iterations per backward, the adjoint (default 1)")
    a("--fwd-start", choices=STARTS, default=START_DEFAULTS["fwd_start"],
      help="how each forward solve starts: from the last batch's solution (warm, default), "
      "by XBraid's skip (no work on the way down), or from zeros (cold)")
    a("--bwd-start", choices=STARTS, default=START_DEFAULTS["bwd_start"],
      help="how each adjoint solve starts (default cold: its steps of zero states cost "
      "nothing, so it costs about what skip does, with a smaller gradient error)")
    deprecated_alias(parser, "--fwd-iters", "--fwd-iterations", "fwd_iterations", type=COUNT)
    deprecated_alias(parser, "--bwd-iters", "--bwd-iterations", "bwd_iterations", type=COUNT)
    a("--epochs", type=COUNT, default=4, help="training epochs (default 4)")
    a("--batch-size", type=COUNT, default=50, help="examples per step (default 50)")
    a("--lr", type=POSITIVE, default=0.05, help="base learning rate (default 0.05)")
    a("--momentum", type=bounded(float, 0, 1, high_open=True), default=0.9,
      help="SGD momentum (default 0.9)")
    a("--seed", type=bounded(int, 0), default=0,
      help="fixes data split, init and batches (default 0)")
    a("--serial-baseline", action="store_true",
      help="also train the same network with exact serial forward and backprop")
    a("--checkpoint", dest="checkpoint_dir", default=None, metavar="DIR",
      help="folder of the checkpoints, written every epoch and when a signal stops the run")
    deprecated_alias(parser, "--checkpoint-dir", "--checkpoint", "checkpoint_dir")
    a("--resume", action="store_true", help="continue from --checkpoint")
    a("--json", default=None, metavar="PATH", help="write the results as JSON")
    a("--plot", default=None, metavar="PATH",
      help="loss and accuracy curves, and the MGRIT residuals of the last batch")
    a("--device", default=None,
      help="cpu or cuda (under torchrun, cuda means each rank's cuda:LOCAL_RANK); a list "
      "gives one per local rank (default cpu)")
    a("--no-progress", action="store_true", help="no tqdm progress bar")
    add_timeout(parser)


def _placement(args: argparse.Namespace) -> tuple[Any, torch.device]:
    """The process group (``"world"`` under torchrun, else ``None``) and this rank's
    device."""
    from torchpint.core import init_distributed

    devices = parse_devices(args.device) or [torch.device("cpu")]
    device = devices[local_rank() % len(devices)]
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank() if torch.distributed.is_available() and
                              "LOCAL_RANK" in os.environ else 0)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: this machine has no CUDA device")
    group = "world" if init_distributed(timeout=args.timeout, device=device) else None
    return group, device


def run(args: argparse.Namespace) -> int:
    """Train as the options say; 0 on success."""
    from torchpint.data import make_loaders
    from torchpint.layerparallel import conv_resnet
    from torchpint.trainer import FitConfig, fit

    check_outputs(args)
    group, device = _placement(args)
    cfg = FitConfig(epochs=args.epochs, lr=args.lr, momentum=args.momentum, seed=args.seed)
    data = make_loaders(args.dataset, batch_size=args.batch_size, seed=args.seed,
                        **data_options(args))
    torch.manual_seed(args.seed)
    net = conv_resnet(args.layers, args.channels, data.in_channels, data.num_classes,
                      data.image_size, T=args.T,
                      levels=args.levels, cfactor=args.cfactor, relax=args.relax,
                      fwd_iterations=args.fwd_iterations,
                      bwd_iterations=args.bwd_iterations, fwd_start=args.fwd_start,
                      bwd_start=args.bwd_start, group=group,
                      timeout=args.timeout).to(device)
    world = net.comm.size
    serial = None
    if args.serial_baseline:  # the same initial weights, whole (rank 0 only when distributed)
        serial = copy.deepcopy(net).serial() if world == 1 else net.serial()
    run_id = {"model": "conv_resnet", "steps": args.layers, "channels": args.channels,
              "T": args.T, "dataset": data.name, "image_size": data.image_size,
              "batch_size": args.batch_size, **data_run_fields(args)}
    solver_id = {"levels": args.levels, "cfactor": args.cfactor, "relax": net.relax,
                 "fwd_iters": args.fwd_iterations, "bwd_iters": args.bwd_iterations,
                 **{k: getattr(args, k) for k, v in START_DEFAULTS.items()
                    if getattr(args, k) != v}}  # (so the older runs' checkpoints resume)
    ckpts = {label: os.path.join(args.checkpoint_dir, f"{label}.pt") if args.checkpoint_dir
             else None for label in ("layer_parallel", "serial")}
    x, y = next(iter(data.train))
    check = gradient_check(net, x.to(device), y.to(device))
    relax = net.relax if isinstance(net.relax, str) else ",".join(net.relax)
    on = f" on {world} ranks" if world > 1 else ""
    say(f"train-layer-parallel: N={args.layers} layers of {args.channels} channels on "
        f"{data.name}{on}, {args.levels} levels, cfactor {args.cfactor}, {relax}-relaxation, "
        f"{args.fwd_iterations} forward / {args.bwd_iterations} backward iterations, "
        f"{args.fwd_start} / {args.bwd_start} starts")
    if check is not None:
        say(f"first batch: output error {check['output_rel_err']:.2e}, gradient error "
            f"{check['grad_rel_err']:.2e} (vs exact backprop)")
    results: dict[str, Any] = {"gradient_check": check}
    common = dict(resume=args.resume, progress=not args.no_progress)
    res = fit(net, data.train, data.test, cfg, label="layer_parallel",
              checkpoint=ckpts["layer_parallel"], run={**run_id, **solver_id}, **common)
    results["layer_parallel"] = {
        "test_accuracy": res.test_accuracy, "step_time_s": res.step_time_s,
        "fwd_iters": args.fwd_iterations, "bwd_iters": args.bwd_iterations,
        "fwd_residuals": net.fwd_residuals, "bwd_residuals": net.bwd_residuals,
        **res.to_dict(),
    }
    results["serial"] = None
    if not is_main():
        return 0  # the serial baseline and the outputs are rank 0's
    if serial is not None:
        sres = fit(serial, data.train, data.test, cfg, label="serial",
                   checkpoint=ckpts["serial"], run=run_id, **common)
        results["serial"] = {"test_accuracy": sres.test_accuracy,
                             "step_time_s": sres.step_time_s, **sres.to_dict()}
    results["config"] = {**{k: v for k, v in vars(args).items() if not k.startswith("_")},
                         "relax": relax, "world": world,
                         "layer_slabs": [list(b) for b in net.layout.bounds]}
    lp = results["layer_parallel"]
    say(f"layer-parallel: test accuracy {lp['test_accuracy']:.2f}%  step "
        f"{1e3 * lp['step_time_s']:.1f} ms")
    if results["serial"] is not None:
        s = results["serial"]
        say(f"serial: test accuracy {s['test_accuracy']:.2f}%  step "
            f"{1e3 * s['step_time_s']:.1f} ms")
    residuals = {"forward": net.fwd_residuals, "adjoint": net.bwd_residuals}
    save_outputs(args, results, lambda path: plots.plot_training_curves(
        results, path, labels=("layer_parallel", "serial"), residuals=residuals))
    return 0
