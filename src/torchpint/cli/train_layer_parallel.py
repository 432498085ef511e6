"""``torchpint train-layer-parallel``: train a convolutional ResNet (or, with ``--model gpt``,
a character-level transformer: :mod:`torchpint.cli._gpt`) by layer-parallel MGRIT.

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
from typing import Any, NamedTuple

import torch

from torchpint.cli import _gpt as gpt
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
    a("--spatial-coarsening", nargs="?", const="nearest", default=None,
      choices=("nearest", "bilinear"), metavar="nearest|bilinear",
      help="run the coarse levels on 2x average-pooled states, corrections interpolated "
      "up (nearest when the flag has no value; default off)")
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
    a("--data-parallel", type=COUNT, default=1, metavar="D",
      help="data-parallel replicas of the layer-parallel network (torchrun "
      "--nproc-per-node S*D: S ranks of slabs each; each replica trains on 1/D of every "
      "batch)")
    a("--replica-bn", default="sync", choices=("sync", "local"),
      help="batch norm with --data-parallel: sync (statistics of the whole batch, as one "
      "replica; default) or local (each replica's share, as DDP; fewer messages)")
    a("--adaptive", action="store_true",
      help="raise the iterations, up to exact solves, when the gradient's error outgrows "
      "the gradient: a probe against serial backprop every --adaptive-every batches")
    a("--adaptive-every", type=COUNT, default=20, metavar="B",
      help="batches between two probes of --adaptive (default 20)")
    a("--adaptive-threshold", type=POSITIVE, default=0.5, metavar="RHO",
      help="the relative gradient error above which --adaptive raises, after 2 probes in "
      "a row (default 0.5: the step keeps half an exact step's first-order decrease)")
    add_timeout(parser)
    gpt.add_arguments(parser)  # --model and the GPT's options


def _placement(args: argparse.Namespace) -> tuple[Any, torch.device]:
    """The process group (``"world"`` under torchrun; with ``--data-parallel D`` a
    ``ProcessGrid`` of S slabs x D replicas; else ``None``) and this rank's device."""
    from torchpint.common.process_grid import process_grid
    from torchpint.core import init_distributed
    from torchpint.runtime.comm import world_size

    replicas, world = args.data_parallel, world_size()  # (torchrun's, before joining)
    if replicas > 1 and world == 1:
        raise ValueError(
            f"--data-parallel {replicas} trains {replicas} replicas on ranks of their own: "
            f"launch with torchrun --nproc-per-node S*{replicas} -m torchpint "
            "train-layer-parallel ...")
    if world % replicas:
        raise ValueError(
            f"--data-parallel {replicas} splits the ranks into {replicas} replicas, but "
            f"torchrun started {world} ranks (use --nproc-per-node S*{replicas}, S ranks "
            "of slabs each)")
    devices = parse_devices(args.device) or [torch.device("cpu")]
    device = devices[local_rank() % len(devices)]
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank() if torch.distributed.is_available() and
                              "LOCAL_RANK" in os.environ else 0)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: this machine has no CUDA device")
    group = "world" if init_distributed(timeout=args.timeout, device=device) else None
    if replicas > 1:
        group = process_grid(world // replicas, replicas, timeout=args.timeout)
    return group, device


class Built(NamedTuple):
    """A network to train and what goes with it: its data (``.train``, ``.test``
    loaders), what identifies the run in a checkpoint, a few words for the log, and
    results of its own (e.g. the text's description)."""

    net: Any
    data: Any
    run_id: dict[str, Any]
    what: str
    results: dict[str, Any]


def run(args: argparse.Namespace) -> int:
    """Train as the options say; 0 on success."""
    check_outputs(args)
    gpt.check_options(args)
    group, device = _placement(args)
    options = dict(T=args.T, levels=args.levels, cfactor=args.cfactor, relax=args.relax,
                   fwd_iterations=args.fwd_iterations, bwd_iterations=args.bwd_iterations,
                   fwd_start=args.fwd_start, bwd_start=args.bwd_start, group=group,
                   replica_bn=args.replica_bn, timeout=args.timeout,
                   **({"spatial": args.spatial_coarsening} if args.spatial_coarsening else {}))
    build = gpt.build if args.model == "gpt" else _conv_resnet
    return _train(args, Built(*build(args, options, device)), device)


def _conv_resnet(args: argparse.Namespace, options: dict[str, Any], device: torch.device
                 ) -> Built:
    """The convolutional ResNet on ``--dataset``."""
    from torchpint.data import make_loaders
    from torchpint.layerparallel import conv_resnet

    data = make_loaders(args.dataset, batch_size=args.batch_size, seed=args.seed,
                        **data_options(args))
    torch.manual_seed(args.seed)
    net = conv_resnet(args.layers, args.channels, data.in_channels, data.num_classes,
                      data.image_size, **options).to(device)
    run_id = {"model": "conv_resnet", "steps": args.layers, "channels": args.channels,
              "T": args.T, "dataset": data.name, "image_size": data.image_size,
              "batch_size": args.batch_size, **data_run_fields(args)}
    return Built(net, data, run_id, f"N={args.layers} layers of {args.channels} channels on "
                 f"{data.name}", {})


def _train(args: argparse.Namespace, built: Built, device: torch.device) -> int:
    """Check the first batch's gradient, train the network (and the serial baseline from
    the same initial weights on the same batches), print and write the results."""
    from torchpint.layerparallel import AdaptiveIterations
    from torchpint.trainer import FitConfig, fit

    net, data = built.net, built.data
    cfg = FitConfig(epochs=args.epochs, lr=args.lr, momentum=args.momentum, seed=args.seed)
    world = net.fit_comm().size  # every rank: S slabs x D replicas
    serial = None
    if args.serial_baseline:  # the same initial weights, whole (rank 0 only when distributed)
        serial = copy.deepcopy(net).serial() if world == 1 else net.serial()
    solver_id = {"levels": args.levels, "cfactor": args.cfactor, "relax": net.relax,
                 "fwd_iters": args.fwd_iterations, "bwd_iters": args.bwd_iterations,
                 **{k: getattr(args, k) for k, v in START_DEFAULTS.items()
                    if getattr(args, k) != v},  # (so the older runs' checkpoints resume)
                 **({"data_parallel": args.data_parallel, "replica_bn": args.replica_bn}
                    if args.data_parallel > 1 else {}),
                 **({"adaptive": [args.adaptive_every, args.adaptive_threshold]}
                    if args.adaptive else {}),
                 **({"spatial": args.spatial_coarsening} if args.spatial_coarsening else {})}
    ckpts = {label: os.path.join(args.checkpoint_dir, f"{label}.pt") if args.checkpoint_dir
             else None for label in ("layer_parallel", "serial")}
    x, y = next(iter(data.train))
    dropout = args.dropout > 0
    net.train(not dropout)  # (serial backprop draws other masks: check without them)
    check = gradient_check(net, x.to(device), y.to(device))
    net.train()
    relax = net.relax if isinstance(net.relax, str) else ",".join(net.relax)
    grid = f"{args.data_parallel} replicas x {world // args.data_parallel} slabs, " \
        if args.data_parallel > 1 else ""
    on = f" on {grid}{world} ranks" if world > 1 else ""
    say(f"train-layer-parallel: {built.what}{on}, {args.levels} levels, cfactor "
        f"{args.cfactor}, {relax}-relaxation, {args.fwd_iterations} forward / "
        f"{args.bwd_iterations} backward iterations, {args.fwd_start} / {args.bwd_start} "
        "starts" + (f", adaptive (a probe every {args.adaptive_every} batches, threshold "
                    f"{args.adaptive_threshold:g})" if args.adaptive else ""))
    if check is not None:
        off = ", dropout off" if dropout else ""
        say(f"first batch: output error {check['output_rel_err']:.2e}, gradient error "
            f"{check['grad_rel_err']:.2e} (vs exact backprop{off})")
    results: dict[str, Any] = {"gradient_check": check, **built.results}
    hooks = [AdaptiveIterations(args.adaptive_every, args.adaptive_threshold)] \
        if args.adaptive else []
    common = dict(resume=args.resume, progress=not args.no_progress)
    res = fit(net, data.train, data.test, cfg, label="layer_parallel",
              checkpoint=ckpts["layer_parallel"], run={**built.run_id, **solver_id},
              hooks=hooks, **common)
    results["layer_parallel"] = {
        **_scores(res), "fwd_iters": args.fwd_iterations, "bwd_iters": args.bwd_iterations,
        "fwd_residuals": net.fwd_residuals, "bwd_residuals": net.bwd_residuals,
        **({"adaptive": hooks[0].history, "solves_at_end": {
            "fwd_iterations": net.fwd_iterations, "bwd_iterations": net.bwd_iterations,
            "levels": net.levels}} if hooks else {}),
        **res.to_dict(),
    }
    results["serial"] = None
    if not is_main():
        return 0  # the serial baseline and the outputs are rank 0's
    if serial is not None:
        sres = fit(serial, data.train, data.test, cfg, label="serial",
                   checkpoint=ckpts["serial"], run=built.run_id, **common)
        results["serial"] = {**_scores(sres), **sres.to_dict()}
    results["config"] = {**{k: v for k, v in vars(args).items() if not k.startswith("_")},
                         "relax": relax, "world": world,
                         "layer_slabs": [list(b) for b in net.layout.bounds]}
    per = " nats/char" if args.model == "gpt" else ""
    for label in ("layer_parallel", "serial"):
        r = results[label]
        if r is not None:
            say(f"{label.replace('_', '-')}: test accuracy {r['test_accuracy']:.2f}%  test "
                f"loss {r['test_loss']:.4f}{per}  step {1e3 * r['step_time_s']:.1f} ms")
    if hooks:
        raised = [f"batch {h['step']} to {h['raised_to']}" for h in hooks[0].history
                  if h["raised_to"]]
        say(f"adaptive: {len(hooks[0].history)} probes; raised {', '.join(raised) or 'never'}")
    residuals = {"forward": net.fwd_residuals, "adjoint": net.bwd_residuals}
    save_outputs(args, results, lambda path: plots.plot_training_curves(
        results, path, labels=("layer_parallel", "serial"), residuals=residuals))
    return 0


def _scores(res: Any) -> dict[str, float]:
    return {"test_accuracy": res.test_accuracy, "test_loss": res.history[-1].test_loss,
            "step_time_s": res.step_time_s}
