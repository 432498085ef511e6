"""Beyond TorchBraid: multilevel (nested) initialisation of layer-parallel training.

Per data set and seed, three layer-parallel runs of ``conv_resnet`` (C = 8, the CLI's
SGD recipe, batch 50, 3 levels, cfactor 4, 2 forward / 1 adjoint iterations):
  fine       N = 32 steps from scratch for E epochs,
  fine-short N = 32 from scratch for E_f epochs,
  nested     N/4 = 8 steps (2 levels) for E_c epochs, then ``refine(net, 4)`` and N = 32
             for E_f epochs (Cyr, Günther, Schroder 2019).
Test accuracy and training wall time (the sum of epoch times, one thread per run, two
runs at a time). The question: does nested reach fine's accuracy for less time, and does
the coarse start beat fine-short (the same fine epochs without it)?

    python benchmarks/layer_parallel_nested.py \
        --json benchmarks/results/layer_parallel_nested.json
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from common import mean_std, write_json  # this directory is on sys.path

IMAGE = 16


def _train(net: Any, data: Any, epochs: int, seed: int) -> tuple[float, float]:
    from torchpint.trainer import FitConfig, fit

    cfg = FitConfig(epochs=epochs, lr=0.05, momentum=0.9, seed=seed)
    res = fit(net, data.train, data.test, cfg, progress=False, log=None)
    return res.test_accuracy, sum(h.epoch_time_s for h in res.history)


def run_cell(dataset: str, seed: int, variant: str, epochs: int, coarse_epochs: int,
             fine_epochs: int) -> dict[str, Any]:
    import torch

    from torchpint.data import make_loaders
    from torchpint.layerparallel import conv_resnet, refine

    torch.set_num_threads(1)
    data = make_loaders(dataset, image_size=IMAGE, batch_size=50, seed=seed)
    torch.manual_seed(seed)
    shape = (data.in_channels, data.num_classes, data.image_size)
    if variant == "nested":
        coarse = conv_resnet(8, 8, *shape, levels=2, cfactor=4)
        acc_c, t_c = _train(coarse, data, coarse_epochs, seed)
        fine = refine(coarse, 4, levels=3)
        acc, t = _train(fine, data, fine_epochs, seed)
        return {"test_accuracy": acc, "train_s": t_c + t, "coarse_accuracy": acc_c,
                "coarse_s": t_c}
    net = conv_resnet(32, 8, *shape, levels=3, cfactor=4)
    acc, t = _train(net, data, epochs if variant == "fine" else fine_epochs, seed)
    return {"test_accuracy": acc, "train_s": t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "shapes"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=4, help="E: epochs of the fine run")
    ap.add_argument("--coarse-epochs", type=int, default=2, help="E_c")
    ap.add_argument("--fine-epochs", type=int, default=2, help="E_f")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    variants = ("fine", "fine-short", "nested")
    cells = [(d, s, v) for d in args.datasets for s in args.seeds for v in variants]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_cell, d, s, v, args.epochs, args.coarse_epochs,
                               args.fine_epochs) for d, s, v in cells]
        results = [f.result() for f in futures]
    table: dict[str, Any] = {}
    print(f"\nE = {args.epochs}, E_c = {args.coarse_epochs}, E_f = {args.fine_epochs}; "
          f"seeds {args.seeds}; mean (sd) over seeds")
    print(f"{'dataset':>8} {'variant':>11} {'test accuracy':>15} {'train time':>12}")
    for d in args.datasets:
        table[d] = {}
        for v in variants:
            rs = [r for (dd, _, vv), r in zip(cells, results, strict=True) if (dd, vv) == (d, v)]
            acc = [r["test_accuracy"] for r in rs]
            secs = [r["train_s"] for r in rs]
            mean, sd = mean_std(acc)
            table[d][v] = {"accuracy": acc, "train_s": secs, "runs": rs}
            print(f"{d:>8} {v:>11} {mean:>8.2f} ({sd:.2f}) "
                  f"{statistics.fmean(secs):>10.1f} s")
    write_json(args.json, {"args": vars(args), "table": table}, indent=1)


if __name__ == "__main__":
    main()
