"""What the benchmarks share: their configs and plans, the timed training step, the
statistics of interleaved timings, and JSON output. Not a benchmark (no ``main``).

A benchmark run as ``python benchmarks/<name>.py`` has this directory on ``sys.path`` and
imports it as ``common``. Nothing here imports torch at import time, so a benchmark's
``--help`` stays fast and a worker process can set its threads before torch loads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"

# ----------------------------------------------------------------------------- configs

# the timed networks of bench_parareal.py and bench_parareal_vs.py:
# name -> (model preset, depth, width, image size, batch size)
Config = tuple[str, int | None, int, int, int]
CONFIGS: dict[str, Config] = {
    "resnet": ("resnet", 164, 16, 32, 32),  # ResNet-164 (bottleneck, 54 blocks)
    "vgg": ("vgg16", None, 64, 32, 64),  # VGG-16-BN at the paper's (full) width
}
QUICK: dict[str, Config] = {
    "resnet": ("resnet", 20, 8, 16, 16),
    "vgg": ("vgg16", None, 8, 16, 16),
}

# the accuracy study of accuracy_parareal.py, reused by bench_parareal_vs.py:
# dataset -> (image size, extra loader options, epochs)
DATASETS: dict[str, tuple[int, dict[str, Any], int]] = {
    "digits": (16, {}, 8),
    "shapes": (16, {"num_train": 4000, "num_test": 1000}, 12),
}
# the default plan (dataset, model): ResNet only on digits to stay within ~10 minutes
PLAN: tuple[tuple[str, str], ...] = (
    ("digits", "vgg-small"),
    ("digits", "resnet-small"),
    ("shapes", "vgg-small"),
)

# the MGRIT training tables (mgrit_training_tables.py, read by mgrit_sensitivity.py and
# mgrit_potential_speedup.py): the N of each problem's columns
XOR_STEPS = [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600]
ADDER_STEPS = [40, 100, 200, 400, 800, 1600, 3200, 6400, 12800]
# The paper's adder Tables 8-16 on Trask's adder (``variant="trask"``); N as published;
# name -> settings and the published counts (Schroder 2017); None = 50+.
PAPER_FULL = [40, 80, 160, 320, 640, 1280]
PAPER_LONG = [100, 200, 400, 800, 1600, 3200, 6400, 12800]
PAPER_ADDER: dict[str, dict[str, Any]] = {
    "T8 naive two-level a=0.1": dict(
        solver="two-level", lr=0.1, lr_rule="naive", lr_max=math.inf, data="full",
        steps=PAPER_FULL, paper=[9, 13, 19, 36, 48, 50]),
    "T9 Solver1 two-level a=0.1": dict(
        solver="two-level", lr=0.1, lr_rule="geometric", lr_max=0.2, data="full",
        steps=PAPER_FULL, paper=[9, 50, 50, 50, 50, 50]),
    "T10 naive two-level a=0.025": dict(
        solver="two-level", lr=0.025, lr_rule="naive", lr_max=math.inf, data="full",
        steps=PAPER_FULL, paper=[8, 12, 17, 23, 31, 43]),
    "T11 Solver1 two-level a=0.025": dict(
        solver="two-level", lr=0.025, lr_rule="geometric", lr_max=0.2, data="full",
        steps=PAPER_FULL, paper=[5, 7, 11, 16, 25, 37]),
    "T12 Solver1 two-level a=0.025 50 pairs": dict(
        solver="two-level", lr=0.025, lr_rule="geometric", lr_max=0.2, data="full",
        pairs=50, steps=PAPER_LONG, paper=[4, 5, 7, 11, 14, 13, 14, 14]),
    # Readings of the full batch, to find why Table 11 differs (Solver 1, a=0.025):
    # Trask's minibatches of 10 pairs (one per step, in turn), and the loss averaged over
    # the 500 pairs instead of summed (the same as every rate divided by 500).
    "(reading) T11 minibatch 10": dict(
        solver="two-level", lr=0.025, lr_rule="geometric", lr_max=0.2, data="minibatch",
        batch_size=10, steps=PAPER_FULL, paper=None),
    "(reading) T11 mean loss": dict(
        solver="two-level", lr=0.025 / 500, lr_rule="geometric", lr_max=0.2 / 500,
        data="full", steps=PAPER_FULL, paper=None),
    "T13 Solver2 two-level a=0.025": dict(
        solver="two-level", lr=0.025, lr_rule="geometric", lr_max=0.2, data="serial",
        steps=PAPER_LONG, paper=None),
    "T14 Solver2 F a=0.025": dict(
        solver="F", lr=0.025, lr_rule="geometric", lr_max=0.2, data="serial",
        steps=PAPER_LONG, paper=[4, 4, 5, 5, 6, 6, 8, 13]),
    "T15 Solver2 V a=0.025": dict(
        solver="V", lr=0.025, lr_rule="geometric", lr_max=0.2, data="serial",
        steps=PAPER_LONG, paper=[4, 5, 6, 7, 8, 9, 11, 20]),
    "T16 Solver2 F a=0.025 g=1.25": dict(
        solver="F", lr=0.025, lr_rule="geometric", lr_growth=1.25, lr_max=0.2,
        data="serial", steps=PAPER_LONG, paper=[4, 4, 4, 5, 6, 6, 7, 10]),
}  # fmt: skip


def config_arguments(p: argparse.ArgumentParser, reps: int, warmup: int = 2) -> None:
    """``--configs`` (of ``CONFIGS``), ``--reps`` and ``--warmup`` of a timing benchmark."""
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--reps", type=int, default=reps, help=f"timed rounds (default {reps})")
    p.add_argument(
        "--warmup", type=int, default=warmup, help=f"untimed rounds first (default {warmup})"
    )


# ----------------------------------------------------------------------------- models


def build(cfg: Config) -> nn.Module:
    """The benchmark model of ``cfg`` (10 classes, 3 channels; the same weights in every
    process: seeded with 0)."""
    import torch

    from torchpint.models import build_model

    preset, depth, width, _, _ = cfg
    torch.manual_seed(0)
    return build_model(preset, depth=depth, width=width, num_classes=10, in_channels=3)


def batch(cfg: Config, in_channels: int = 3, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """The fixed random batch ``(x, y)`` of ``cfg`` (seeded: the same in every process)."""
    import torch

    _, _, _, size, bs = cfg
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bs, in_channels, size, size, generator=g)
    y = torch.randint(0, 10, (bs,), generator=g)
    return x.to(device), y.to(device)


def step_fn(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 1e-3
) -> Callable[[], None]:
    """One SGD-with-momentum training step of ``model`` on the fixed batch ``(x, y)``
    (cross entropy; the optimizer is built once, here)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()

    def step() -> None:
        out = model(x)
        loss = F.cross_entropy(out, y.to(out.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    """:func:`step_fn`'s training step on ``(x, y)``, returning its seconds."""
    step = step_fn(model, x, y)

    def timed() -> float:
        t = time.perf_counter()
        step()
        return time.perf_counter() - t

    return timed


def digits_batch(batch: int, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``index`` of ``batch`` rows of the digits training set at 16x16."""
    from torchpint.data import digits_datasets

    x, y = digits_datasets(16, 1)[0].tensors
    return x[index * batch:(index + 1) * batch], y[index * batch:(index + 1) * batch]


def recipe(
    dataset: str,
    model_name: str,
    seed: int,
    epochs: int | None = None,
    batch_size: int = 32,
    lr: float = 0.05,
    width: int | None = None,
) -> tuple[Any, Any, nn.Module]:
    """The accuracy study's data loaders, ``FitConfig`` (SGD ``lr``, momentum 0.9, weight
    decay 5e-4, the data set's epochs unless ``epochs``) and freshly seeded model."""
    import torch

    from torchpint.data import make_loaders
    from torchpint.models import build_model
    from torchpint.trainer import FitConfig

    size, extra, default_epochs = DATASETS[dataset]
    data = make_loaders(dataset, image_size=size, batch_size=batch_size, seed=seed, **extra)
    cfg = FitConfig(
        epochs=epochs or default_epochs, lr=lr, momentum=0.9, weight_decay=5e-4, seed=seed
    )
    torch.manual_seed(seed)
    model = build_model(
        model_name, width=width, num_classes=data.num_classes, in_channels=data.in_channels
    )
    return data, cfg, model


def fit_record(model: nn.Module, data: Any, cfg: Any, label: str, history: bool = False
               ) -> dict[str, Any]:
    """``fit`` ``model`` on ``data``'s loaders with ``cfg``, quietly: its test and last
    training accuracy, parameter count and seconds (``history``: every epoch's stats)."""
    from dataclasses import asdict

    from torchpint.trainer import fit

    t0 = time.perf_counter()
    res = fit(model, data.train, data.test, cfg, label=label, progress=False, log=None)
    out = {"test_accuracy": res.test_accuracy,
           "train_accuracy": res.history[-1].train_accuracy,
           "params": res.params, "time_s": time.perf_counter() - t0}
    if history:
        out["history"] = [asdict(h) for h in res.history]
    return out


# ----------------------------------------------------------------------------- statistics


def ratios(times: dict[str, list[float]], num: str, den: str) -> list[float]:
    """The per-round ratios ``num / den``: both were timed in the same round, so load that
    drifts between rounds cancels."""
    return [a / b for a, b in zip(times[num], times[den], strict=True)]


def median_quartiles(xs: list[float], method: str = "exclusive") -> tuple[float, float, float]:
    """``(median, first quartile, third quartile)`` of ``xs`` (``statistics.quantiles``
    with ``method``); all three the value itself for a single one."""
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, _, q3 = statistics.quantiles(xs, n=4, method=method)
    return statistics.median(xs), q1, q3


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def fmt_ratio(v: float, q: list[float] | tuple[float, ...]) -> str:
    """``1.23x [1.10-1.40]``: a median ratio and its quartiles."""
    return f"{v:.2f}x [{q[0]:.2f}-{q[1]:.2f}]"


# ----------------------------------------------------------------------------- MGRIT tables


def table_cell(records: list[dict[str, Any]], problem: str, variant: str,
               n: int) -> list[dict[str, Any]]:  # fmt: skip
    """The records of one cell of mgrit_training_tables.py: every seed's run of
    ``variant`` at ``N = n``."""
    return [r for r in records
            if r["problem"] == problem and r["variant"] == variant and r["steps"] == n]  # fmt: skip


def cell_text(recs: list[dict[str, Any]], max_iter: int) -> str:
    """A cell as the tables print it: ``median [min-max]`` iterations over the seeds,
    ``50+`` not converged, ``div`` diverged, ``-`` not run."""
    if not recs:
        return "-"
    vals = []
    for r in recs:
        if r.get("diverged"):
            vals.append(math.inf)
        elif not r["converged"]:
            vals.append(float(max_iter + 1))
        else:
            vals.append(float(r["iterations"]))

    def fmt(v: float) -> str:
        if v == math.inf:
            return "div"
        return f"{max_iter}+" if v > max_iter else str(int(v))

    med = statistics.median_low(vals)
    if min(vals) == max(vals):
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(vals))}-{fmt(max(vals))}]"


def ping_pong(rank: int, t: torch.Tensor, rounds: int = 100) -> float:
    """One-way seconds of a message between ranks 0 and 1 of the default process group:
    ``rounds`` round trips of ``t``, halved (other ranks only join the barrier)."""
    import torch.distributed as dist

    dist.barrier()
    start = time.perf_counter()
    for _ in range(rounds):
        if rank == 0:
            dist.send(t, 1)
            dist.recv(t, 1)
        elif rank == 1:
            dist.recv(t, 0)
            dist.send(t, 0)
    return (time.perf_counter() - start) / rounds / 2


# ----------------------------------------------------------------------------- output


def log(msg: str) -> None:
    """Progress on stderr, with the time of day (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_info(**extra: Any) -> dict[str, Any]:
    """The machine a result was measured on: CPU cores, platform, torch version."""
    import torch

    return {
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        **extra,
    }


def json_safe(x: Any) -> Any:
    """``x`` with NaN and inf as None and tuples as lists (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def write_json(
    path: str | Path | None,
    data: Any,
    indent: int = 2,
    strict: bool = False,
    default: Callable[[Any], Any] | None = None,
    quiet: bool = False,
) -> None:
    """Write ``data`` to ``path`` (its folder made; nothing when ``path`` is empty) and
    say so unless ``quiet``. ``strict``: NaN and inf written as null (``json_safe``)."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if strict:
        text = json.dumps(json_safe(data), indent=indent, allow_nan=False, default=default)
    else:
        text = json.dumps(data, indent=indent, default=default)
    out.write_text(text)
    if not quiet:
        print(f"wrote {path}")
