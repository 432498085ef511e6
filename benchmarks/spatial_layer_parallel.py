"""Spatial coarsening in layer-parallel training, measured against the same solver without.

``conv_resnet`` with N residual steps (C channels, digits at 16x16 or, with ``--dataset
fashion-mnist``, Fashion-MNIST at 28x28 from disk, batch B, 3 levels,
cfactor 4, 2 forward / 1 adjoint iterations, warm / cold starts), one process, 1 thread.
The variants (``--variants``):
  off              no spatial coarsening: F fine / FCF coarse (the default);
  nearest          coarse levels on 2x average-pooled states (8x8, 4x4), corrections
                   interpolated by nearest neighbour; FCF on every level (the default
                   with spatial coarsening: F-relaxation alone cannot converge there);
  bilinear         the same with bilinear interpolation;
  nearest-F        nearest with F on the fine level, as TorchBraid's spatial example
                   runs it (inexact by design: it never converges to backprop).
For each: the training step's time in interleaved rounds (a ratio is the median over
rounds of the two variants' median times in the same round, so drift in machine load
cancels), with the serial network's step (exact backprop, 1 thread) beside; the steps
per level and the steps' share of the solves; the residual after each iteration of a
forward and an adjoint solve run for ``--iterations`` iterations on the first batch
(convergence); the first batch's gradient error against exact backprop
(``gradient_check``, at the training settings); and, with ``--epochs``, test accuracy
after that many epochs of the CLI's recipe for ``--seeds`` (serial backprop beside), for
``--accuracy-variants``, on the first ``--train-images`` training images (default all).

    python benchmarks/spatial_layer_parallel.py \
        --json benchmarks/results/spatial_layer_parallel.json
    python benchmarks/spatial_layer_parallel.py --dataset fashion-mnist --seeds 0 --lr 0.01 \
        --train-images 6000 --accuracy-variants off nearest \
        --json benchmarks/results/spatial_layer_parallel_fashion_mnist.json
    python benchmarks/spatial_layer_parallel.py --quick
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import statistics
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from common import (  # this directory is on sys.path
    digits_batch,
    fit_record,
    log,
    machine_info,
    mean_std,
    median_quartiles,
    ratios,
    timed_step,
    write_json,
)
from torchpint.data import DataBundle, EpochSampler, load_datasets, make_loaders
from torchpint.layerparallel import LayerParallel, conv_resnet, gradient_check
from torchpint.trainer import FitConfig

SOLVER = dict(levels=3, cfactor=4, fwd_iterations=2, bwd_iterations=1)
VARIANTS: dict[str, dict[str, Any]] = {
    "off": {},
    "nearest": {"spatial": "nearest"},
    "bilinear": {"spatial": "bilinear"},
    "nearest-F": {"spatial": "nearest", "relax": ("F", "FCF")},
}
SIZES = {"digits": 16, "fashion-mnist": 28}


@functools.cache
def first_batch(dataset: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``batch`` training rows of ``dataset``, as the CLI normalises them."""
    if dataset == "digits":
        return digits_batch(batch)
    train = load_datasets(dataset, augment=False)[0]
    xs, ys = zip(*(train[i] for i in range(batch)), strict=True)
    return torch.stack(xs), torch.as_tensor(ys)


def build(variant: str, n: int, channels: int, dataset: str, seed: int = 0, **solver: Any
          ) -> LayerParallel:
    """The variant's network for ``dataset``'s images, its weights seeded by ``seed``
    (the same for every variant); ``solver`` overrides :data:`SOLVER`."""
    torch.manual_seed(seed)
    return conv_resnet(n, channels, 1, 10, SIZES[dataset],
                       **{**SOLVER, **VARIANTS[variant], **solver})


def time_steps(variants: list[str], n: int, channels: int, dataset: str, batch: int,
               rounds: int, k: int) -> dict[str, Any]:
    """Interleaved rounds: per round, ``k`` steps of each variant and of the serial
    network; each variant's median step per round, the per-round ratios to ``off`` and
    to serial, and the last step's counts and timings of each variant."""
    x, y = first_batch(dataset, batch)
    nets = {v: build(v, n, channels, dataset) for v in variants}
    steps = {v: timed_step(net, x, y) for v, net in nets.items()}
    steps["serial"] = timed_step(copy.deepcopy(nets[variants[0]]).serial(), x, y)
    for step in steps.values():  # warm up: solvers, shapes, allocations
        step(), step()
    per_round: dict[str, list[float]] = {v: [] for v in steps}
    for r in range(rounds):
        for v, step in steps.items():
            per_round[v].append(statistics.median(step() for _ in range(k)))
        log(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{v} {1e3 * t[-1]:.1f} ms" for v, t in per_round.items()))
    out: dict[str, Any] = {"per_round_s": per_round, "variants": {}}
    for v in variants:
        net = nets[v]
        solves = net.timings["forward_solve"] + net.timings["adjoint_solve"]
        in_steps = net.timings["forward_steps"] + net.timings["adjoint_steps"]
        out["variants"][v] = {
            "step_s": median_quartiles(per_round[v]),
            "vs_off": median_quartiles(ratios(per_round, v, variants[0])),
            "vs_serial": median_quartiles(ratios(per_round, v, "serial")),
            "relax": list(net.relax) if not isinstance(net.relax, str) else net.relax,
            "step_counts": net.step_counts,
            "steps_share_of_solves": in_steps / solves}
    out["serial_step_s"] = median_quartiles(per_round["serial"])
    return out


def convergence(variant: str, n: int, channels: int, dataset: str, batch: int,
                iterations: int) -> dict[str, list[float]]:
    """The residual after each of ``iterations`` forward and adjoint iterations on the
    first batch (cold starts, untrained weights)."""
    net = build(variant, n, channels, dataset, fwd_iterations=iterations,
                bwd_iterations=iterations)
    x, y = first_batch(dataset, batch)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    return {"forward": net.fwd_residuals, "adjoint": net.bwd_residuals}


def loaders(dataset: str, batch: int, seed: int, train_images: int | None) -> DataBundle:
    """``make_loaders`` without augmentation, its training set cut to the first
    ``train_images`` (``None``: all), shuffled by the same seeded sampler."""
    data = make_loaders(dataset, batch_size=batch, seed=seed, augment=False)
    if train_images is None:
        return data
    head = Subset(data.train.dataset, range(train_images))
    train = DataLoader(head, batch_size=batch, sampler=EpochSampler(train_images, seed),
                       drop_last=True)
    return dataclasses.replace(data, train=train)


def accuracy(variants: list[str], n: int, channels: int, dataset: str, batch: int,
             seeds: list[int], epochs: int, lr: float, train_images: int | None
             ) -> dict[str, Any]:
    """Test accuracy after ``epochs`` of the CLI's recipe (SGD at ``lr``, momentum 0.9),
    per seed, for each variant and for serial backprop from the same initial weights."""
    out: dict[str, dict[str, Any]] = {v: {} for v in ["serial", *variants]}
    for seed in seeds:
        data = loaders(dataset, batch, seed, train_images)
        cfg = FitConfig(epochs=epochs, lr=lr, momentum=0.9, seed=seed)
        for v in out:
            net = build(variants[0] if v == "serial" else v, n, channels, dataset, seed)
            model = net.serial() if v == "serial" else net
            out[v][seed] = fit_record(model, data, cfg, label=v)
            log(f"seed {seed} {v}: test {out[v][seed]['test_accuracy']:.2f}% "
                f"({out[v][seed]['time_s']:.0f} s)")
    return out


def _fmt(xs: list[float], first: int = 8) -> str:
    return ", ".join(f"{x:.1e}" for x in xs[:first]) + (" ..." if len(xs) > first else "")


def report(res: dict[str, Any]) -> None:
    """The tables, as markdown."""
    t, a = res["timing"], res["settings"]
    s, q1, q3 = t["serial_step_s"]
    size = SIZES[a["dataset"]]
    print(f"\nN = {a['layers']}, C = {a['channels']}, batch {a['batch']}, {a['dataset']} "
          f"{size}x{size}, "
          f"{SOLVER['levels']} levels, cfactor {SOLVER['cfactor']}, 2 / 1 iterations, "
          f"1 thread; serial step {1e3 * s:.1f} ms [{1e3 * q1:.1f}-{1e3 * q3:.1f}]\n")
    print("| variant | relaxation | step | / off | / serial | forward steps per level "
          "| adjoint steps per level | steps, % of the solves | first-batch gradient error "
          "| output error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v, r in t["variants"].items():
        e = res["gradient_check"][v]
        relax = r["relax"] if isinstance(r["relax"], str) else "/".join(r["relax"])
        (m, _, _), (o, o1, o3), (w, w1, w3) = r["step_s"], r["vs_off"], r["vs_serial"]
        print(f"| {v} | {relax} | {1e3 * m:.1f} ms | {o:.2f} [{o1:.2f}-{o3:.2f}] | "
              f"{w:.2f} [{w1:.2f}-{w3:.2f}] | {r['step_counts']['forward']} | "
              f"{r['step_counts']['adjoint']} | {100 * r['steps_share_of_solves']:.0f} | "
              f"{e['grad_rel_err']:.2e} | {e['output_rel_err']:.2e} |")
    k = a["iterations"]
    print(f"\nResidual after each iteration ({k} forward and {k} adjoint iterations, first "
          "batch, cold):\n")
    print("| variant | forward | adjoint |")
    print("|---|---|---|")
    for v, c in res["convergence"].items():
        print(f"| {v} | {_fmt(c['forward'])} | {_fmt(c['adjoint'])} |")
    acc = res.get("accuracy")
    if acc:
        images = a["train_images"] or "all"
        print(f"\nTest accuracy after {a['epochs']} epoch(s) on {images} training images, "
              f"lr {a['lr']}, seeds {a['seeds']}:\n")
        print("| variant | per seed | mean +- sd | minus serial, per seed |")
        print("|---|---|---|---|")
        for v, per in acc.items():
            accs = [per[s]["test_accuracy"] for s in a["seeds"]]
            diff = [x - acc["serial"][s]["test_accuracy"] for x, s in zip(accs, a["seeds"],
                                                                          strict=True)]
            m, sd = mean_std(accs)
            print(f"| {v} | {', '.join(f'{x:.2f}' for x in accs)} | {m:.2f} +- {sd:.2f} | "
                  f"{', '.join(f'{d:+.2f}' for d in diff)} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=128, help="residual steps N (default 128)")
    p.add_argument("--channels", type=int, default=4, help="channels C (default 4)")
    p.add_argument("--batch", type=int, default=50, help="batch size (default 50)")
    p.add_argument("--dataset", default="digits", choices=list(SIZES),
                   help="digits (embedded, 16x16) or fashion-mnist (from disk, 28x28)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="what to compare; the first is the reference of the ratios")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--steps", type=int, default=3, help="steps per variant per round (3)")
    p.add_argument("--iterations", type=int, default=6,
                   help="iterations of the convergence solves (default 6)")
    p.add_argument("--epochs", type=int, default=1,
                   help="epochs of the accuracy runs (default 1; 0: none)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--train-images", type=int, default=None,
                   help="train on the first this many training images (default all)")
    p.add_argument("--accuracy-variants", nargs="+", default=["off", "nearest", "nearest-F"],
                   choices=list(VARIANTS), help="the variants trained for accuracy")
    p.add_argument("--quick", action="store_true", help="N = 16, 2 rounds, no accuracy")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.rounds, args.steps, args.epochs = 16, 2, 1, 0
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"settings": vars(args), "solver": SOLVER,
                           "machine": machine_info(threads=1)}
    shape = args.layers, args.channels, args.dataset
    x, y = first_batch(args.dataset, args.batch)
    res["gradient_check"] = {v: gradient_check(build(v, *shape), x, y) for v in args.variants}
    res["convergence"] = {v: convergence(v, *shape, args.batch, args.iterations)
                          for v in args.variants}
    log("timing")
    res["timing"] = time_steps(args.variants, *shape, args.batch, args.rounds, args.steps)
    if args.epochs:
        res["accuracy"] = accuracy(args.accuracy_variants, *shape, args.batch, args.seeds,
                                   args.epochs, args.lr, args.train_images)
    res["seconds"] = time.perf_counter() - t0
    report(res)
    print(f"\n({res['seconds']:.0f} s)")
    write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
