"""Training loop for parareal networks and their originals: the same recipe for both.

``fit`` trains any classifier (a ``PararealNetwork`` or the original model) with SGD +
momentum and a per-step cosine or step learning-rate schedule, evaluates after every
epoch, times every training step (forward + backward + update), checkpoints every epoch
and resumes bit-exactly: batches and augmentation are keyed by (seed, epoch), not by
global RNG state carried across epochs.

When the chunks run in several processes (the ``distributed`` executor) every rank calls
``fit`` with the same data; rank j only updates fine chunk j, so before a checkpoint the
replicas (weights, BN statistics and momentum buffers) are made identical
(``PararealNetwork.synchronize``) and rank 0 writes the file. With data-parallel replicas
(a network on a ``ProcessGrid``) each replica trains on its share of every batch
(``grid.shard``), and the logged loss and accuracy are those of the whole batch.
"""

from __future__ import annotations

import math
import numbers
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from torchpint.common.seeds import mix_seed
from torchpint.core import DivergenceError
from torchpint.core.checkpoint import atomic_save, check_fingerprint, rank_file
from torchpint.core.checkpoint import load_checkpoint as read_checkpoint
from torchpint.parareal.network import PararealNetwork

SCHEDULES = ("cosine", "step")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. ``milestones`` are fractions of all steps (step schedule)."""

    epochs: int = 5
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, numbers.Integral):
            raise ValueError(f"epochs must be an integer, got {self.epochs!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            value = getattr(self, name)
            if not _is_finite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if any(not (_is_finite(m) and 0 < m < 1) for m in self.milestones):
            raise ValueError(f"milestones are fractions of training in (0, 1): {self.milestones}")


def _is_finite(value: object) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass
class EpochStats:
    """What one epoch did. Accuracies in percent."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    epoch_time_s: float
    step_time_s: float


@dataclass
class TrainResult:
    """A training run: per-epoch history and the wall time of every step."""

    label: str
    history: list[EpochStats] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    params: int = 0
    resumed_from: int = 0

    @property
    def test_accuracy(self) -> float:
        return self.history[-1].test_accuracy if self.history else float("nan")

    @property
    def step_time_s(self) -> float:
        """Median step time, the first step of every run (warm-up) left out."""
        return statistics.median(self.step_times) if self.step_times else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_accuracy": self.test_accuracy,
            "step_time_s": self.step_time_s,
            "params": self.params,
            "epochs": len(self.history),
            "resumed_from_epoch": self.resumed_from,
            "train_time_s": sum(h.epoch_time_s for h in self.history),
            "history": [asdict(h) for h in self.history],
        }


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay over all trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total`` (per-step schedule)."""
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    return cfg.gamma ** sum(step >= round(m * total) for m in cfg.milestones)


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule as a ``LambdaLR`` (its state goes into checkpoints)."""
    total = cfg.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg))


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _input_device(model: nn.Module) -> torch.device:
    """Where the batch goes: P's device for a parareal network, else the first parameter's."""
    pre = getattr(model, "pre", None)
    if isinstance(pre, nn.Module) and next(pre.parameters(), None) is not None:
        return _device_of(pre)
    return _device_of(model)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def is_main_process() -> bool:
    """Rank 0 of the world, or the only process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) of ``model`` on ``loader``, eval mode."""
    was = model.training
    model.eval()
    dev = _input_device(model)
    loss = correct = n = 0.0
    try:
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            out = model(x)
            yy = y.to(out.device)
            loss += float(F.cross_entropy(out, yy, reduction="sum"))
            correct += float((out.argmax(1) == yy).sum())
            n += len(y)
    finally:
        model.train(was)
    return loss / max(n, 1), 100.0 * correct / max(n, 1)


def _sync_replicas(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Identical replicas (momentum buffers included) of a parareal network."""
    if isinstance(model, PararealNetwork):
        model.synchronize(opt)


def _barrier(model: nn.Module) -> None:
    if isinstance(model, PararealNetwork):
        model.executor.barrier()


CHECKPOINT_KEYS = ("epoch", "config", "model", "optimizer", "scheduler", "history", "step_times")
_UNREADABLE = "delete it, or drop --resume to start from scratch"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``fit`` (onto the CPU; ``load_state_dict`` places it).

    Read safely by :func:`torchpint.core.checkpoint.load_checkpoint` (``weights_only``; a
    missing file is ``FileNotFoundError``, a damaged one a ``ValueError`` naming it), and
    refused unless it has every key ``fit`` writes.
    """
    state = read_checkpoint(path, hint=_UNREADABLE)
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(
            f"{os.fspath(path)} is not a torchpint training checkpoint (no "
            f"{', '.join(missing)}); {_UNREADABLE}"
        )
    return state


def _state_is_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``model`` is finite (on every
    rank, for a model sharded over ranks)."""
    finite = all(
        bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()
    )
    return _all_ranks(model, finite, "min")


def _all_ranks(model: nn.Module, flag: bool, how: str) -> bool:
    """``flag`` combined over the ranks of a sharded model (``shard_comm``: each rank
    holds a different part, e.g. a distributed LayerParallel); itself otherwise."""
    comm = getattr(model, "shard_comm", None)
    if comm is None:
        return flag
    sign = 1.0 if how == "max" else -1.0
    t = comm.all_reduce(torch.tensor([sign * float(flag)]), "max", "a training check")
    return bool(sign * float(t.item()) > 0)


def _has_non_finite_input(loader: DataLoader) -> bool:
    """Whether any input batch of ``loader`` holds NaN or inf (to name the cause of a
    non-finite loss)."""
    return any(torch.is_tensor(x) and not bool(torch.isfinite(x).all()) for x, _ in loader)


def _divergence(
    cfg: TrainConfig,
    label: str,
    where: str,
    checkpoint: str | None,
    saved: int | None,
    cause: str | None = None,
) -> DivergenceError:
    """The error of a run that turned non-finite: where, the likely cause (by default a
    learning rate too large), and which checkpoint is kept."""
    if cause is None:
        cause = (
            f"the learning rate lr={cfg.lr:g} is likely too large for this model (lower it), "
            "or the model's weights or the data hold non-finite values"
        )
    if checkpoint and saved:
        kept = f"The last good checkpoint, {checkpoint} after epoch {saved}, is kept."
    elif checkpoint:
        kept = f"No good epoch completed, so nothing was written to {checkpoint}."
    else:
        kept = ""
    return DivergenceError(f"[{label}] training diverged: {where}; {cause}. {kept}".rstrip())


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader,
    cfg: TrainConfig,
    *,
    label: str = "model",
    checkpoint: str | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    extra_state: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` by ``cfg``; evaluate, checkpoint and log after every epoch.

    Args:
        checkpoint: file written after every epoch (rank 0 only), if given.
        resume: continue from ``checkpoint`` when it exists (its recipe must match).
        stop_after: stop after this many epochs in this call (e.g. to fit a job's time
            limit), still checkpointing; ``resume`` continues where it stopped.
        progress: a tqdm bar over the batches of each epoch (main process only).
        extra_state: stored in the checkpoint as is (e.g. the cut points); tensors and
            plain data only (checkpoints load with ``weights_only=True``).
        run: what identifies the run beyond the recipe (model, data set, batch size...),
            as plain data: stored in the checkpoint, and a checkpoint of another run is
            refused on resume (``CheckpointMismatchError`` naming the fields).

    Raises ``DivergenceError`` when the loss, the test loss or the weights turn non-finite,
    naming the epoch and step and the likely cause; no checkpoint is written for that
    epoch, so the one of the last good epoch stays.
    """
    from tqdm.auto import tqdm

    if resume and not checkpoint:
        raise ValueError("resume=True needs the checkpoint file to resume from (checkpoint=...)")
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after must be >= 0 epochs, got {stop_after}")
    main = is_main_process()
    dev = _input_device(model)
    for p in model.parameters():  # SGD casts lr to the parameters' dtype
        if p.is_floating_point() and cfg.lr > torch.finfo(p.dtype).max:
            raise ValueError(f"lr={cfg.lr:g} does not fit in the model's {p.dtype} parameters")
    opt = make_optimizer(model, cfg)
    steps = len(train_loader)
    if steps == 0:
        raise ValueError("the training loader yields no batch (batch size > data set?)")
    sched = make_scheduler(opt, cfg, steps)
    result = TrainResult(label, params=sum(p.numel() for p in model.parameters()))
    start = 0
    saved: int | None = None  # the epoch of the checkpoint on disk from this run
    comm = getattr(model, "shard_comm", None)
    if checkpoint and comm is not None:  # every rank writes its own part
        checkpoint = os.fspath(rank_file(checkpoint, comm.rank, comm.size))
    found = bool(resume and checkpoint and os.path.exists(checkpoint))
    if _all_ranks(model, found, "max") != _all_ranks(model, found, "min"):
        raise ValueError(
            f"some ranks found their checkpoint file ({checkpoint}) and others did not: "
            "every rank needs the files of one run, written by as many ranks as now; "
            "restore them, or drop --resume to start from scratch"
        )
    if found:
        state = load_checkpoint(checkpoint)
        if run is not None:
            check_fingerprint(state.get("run"), run, checkpoint)
        if comm is not None and state.get("world") != comm.size:
            raise ValueError(
                f"cannot resume {checkpoint}: it was written by {state.get('world')} ranks, "
                f"this run has {comm.size}; resume on {state.get('world')} ranks"
            )
        if state.get("config") != asdict(cfg):
            diff = {
                k: (state.get("config", {}).get(k), v)
                for k, v in asdict(cfg).items()
                if state.get("config", {}).get(k) != v
            }
            raise ValueError(
                f"cannot resume {checkpoint}: it was trained with another recipe "
                f"(checkpoint, this run): {diff}"
            )
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ValueError(
                f"cannot resume {checkpoint}: it holds another network's weights (model, "
                f"chunks, cut points or coarse networks differ): {e}"
            ) from e
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        result.history = [EpochStats(**h) for h in state["history"]]
        result.step_times = list(state["step_times"])
        start = saved = result.resumed_from = int(state["epoch"])
        if log and main:
            log(f"[{label}] resumed from {checkpoint} after epoch {start}")
    elif resume and log and main:
        log(f"[{label}] no checkpoint at {checkpoint}; starting from scratch")
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    sampler = getattr(train_loader, "sampler", None)
    grid = getattr(model, "grid", None)  # data-parallel replicas: each takes its share
    for epoch in range(start, end):
        set_epoch = getattr(sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        torch.manual_seed(mix_seed(cfg.seed, epoch))  # augmentation, worker seeds
        model.train()
        lr = opt.param_groups[0]["lr"]
        tot_loss = tot_correct = tot_n = 0.0
        times: list[float] = []
        t_epoch = time.perf_counter()
        bar = tqdm(
            total=steps,
            desc=f"{label} {epoch + 1}/{cfg.epochs}",
            disable=not (progress and main),
            leave=False,
            dynamic_ncols=True,
        )
        try:
            for i, (x, y) in enumerate(train_loader):
                if grid is not None:
                    x, y = grid.shard(x, y)
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                _sync(dev)
                t0 = time.perf_counter()
                out = model(x)
                loss = F.cross_entropy(out, y.to(out.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                _sync(dev)
                times.append(time.perf_counter() - t0)
                loss_value = float(loss.detach())
                correct = float((out.detach().argmax(1) == y.to(out.device)).sum())
                rows = len(y)
                if grid is not None:  # the whole batch's, so every replica agrees
                    loss_sum, correct, rows = grid.sum([loss_value * rows, correct, rows])
                    loss_value = loss_sum / rows
                if not math.isfinite(loss_value):
                    where = (
                        f"the loss is {loss_value} at epoch {epoch + 1}/{cfg.epochs}, step "
                        f"{i + 1}/{steps} (step {epoch * steps + i + 1} of the run)"
                    )
                    cause = None
                    if torch.is_tensor(x) and not bool(torch.isfinite(x).all()):
                        cause = "this batch holds non-finite values: check the training data"
                    raise _divergence(cfg, label, where, checkpoint, saved, cause)
                sched.step()
                tot_loss += loss_value * rows
                tot_correct += correct
                tot_n += rows
                bar.update(1)
                bar.set_postfix(
                    loss=f"{tot_loss / tot_n:.3f}", acc=f"{100 * tot_correct / tot_n:.1f}"
                )
        finally:
            bar.close()
        test_loss, test_acc = evaluate(model, test_loader)
        if not math.isfinite(test_loss):
            where = (
                f"the test loss is {test_loss} after epoch {epoch + 1}/{cfg.epochs} (step "
                f"{(epoch + 1) * steps} of the run)"
            )
            cause = None
            if _has_non_finite_input(test_loader):
                cause = "the test data holds non-finite values: check it"
            raise _divergence(cfg, label, where, checkpoint, saved, cause)
        timed = times[1:] if len(times) > 1 else times  # the first step warms up
        stats = EpochStats(
            epoch=epoch + 1,
            lr=lr,
            train_loss=tot_loss / tot_n,
            train_accuracy=100.0 * tot_correct / tot_n,
            test_loss=test_loss,
            test_accuracy=test_acc,
            epoch_time_s=time.perf_counter() - t_epoch,
            step_time_s=statistics.median(timed),
        )
        result.history.append(stats)
        result.step_times.extend(timed)
        if log and main:
            log(
                f"[{label}] epoch {epoch + 1}/{cfg.epochs}  loss {stats.train_loss:.4f}  "
                f"train {stats.train_accuracy:.2f}%  test {test_acc:.2f}%  "
                f"step {1e3 * stats.step_time_s:.1f} ms  ({stats.epoch_time_s:.1f} s)"
            )
        if checkpoint:
            _sync_replicas(model, opt)
            if not _state_is_finite(model):  # the replicas agree: every rank raises
                where = (
                    f"the weights are non-finite after epoch {epoch + 1}/{cfg.epochs} (step "
                    f"{(epoch + 1) * steps} of the run)"
                )
                raise _divergence(cfg, label, where, checkpoint, saved)
            if main or comm is not None:
                atomic_save(
                    {
                        "label": label,
                        "epoch": epoch + 1,
                        "config": asdict(cfg),
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "history": [asdict(h) for h in result.history],
                        "step_times": result.step_times,
                        **(extra_state or {}),
                        **({"run": run} if run is not None else {}),
                        **({"world": comm.size} if comm is not None else {}),
                    },
                    checkpoint,
                )
            saved = epoch + 1
            _barrier(model)
    if not checkpoint:
        _sync_replicas(model, opt)
    return result
