"""One training loop for every application: :func:`fit` and :func:`evaluate`.

``fit`` trains any classifier (an ordinary module, a parareal network, a layer-parallel
network; or a next-token model, its ``(B, T, V)`` output scored per token) with SGD +
momentum and a per-step schedule, evaluates after every epoch, times every step (forward
+ backward + update), checkpoints every epoch and resumes bit for bit: batches and
augmentation are keyed by (seed, epoch), not by global RNG state carried
across epochs. SIGINT or SIGTERM stops it at the next batch, where it writes a checkpoint
with the data position (:mod:`torchpint.runtime.signals`). A model spread over ranks
takes part through the :class:`~torchpint.trainer.protocol.RankAware` methods.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from torchpint.common.seeds import mix_seed
from torchpint.runtime import signals
from torchpint.runtime.checkpoint import rank_file
from torchpint.runtime.comm import Comm, world_rank
from torchpint.trainer import state as ckpt
from torchpint.trainer.config import FitConfig, make_optimizer, make_scheduler
from torchpint.trainer.errors import divergence
from torchpint.trainer.protocol import RankAware, StepHook, fit_comm, input_device
from torchpint.trainer.result import EpochStats, FitResult


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rows(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, targets)`` as ``(rows, classes)`` and ``(rows,)`` for cross entropy and
    argmax: a classifier's ``(B, C)`` and ``(B,)`` as they are; a sequence model's
    ``(B, T, V)`` and ``(B, T)`` with every token a row (the loss is then the mean per
    token, the accuracy the next-token one)."""
    y = y.to(out.device)
    if out.dim() == 3 and y.dim() == 2 and out.shape[:2] == y.shape:
        return out.reshape(-1, out.shape[-1]), y.reshape(-1)
    return out, y


def batch_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss ``fit`` trains on: cross entropy, per token for a sequence model."""
    return F.cross_entropy(*_rows(out, y))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) of ``model`` on ``loader``, eval mode (per
    token for a sequence model's ``(B, T, V)`` output)."""
    was = model.training
    model.eval()
    dev = input_device(model)
    loss = correct = n = 0.0
    try:
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            out, yy = _rows(model(x), y)
            loss += float(F.cross_entropy(out, yy, reduction="sum"))
            correct += float((out.argmax(1) == yy).sum())
            n += len(yy)
    finally:
        model.train(was)
    return loss / max(n, 1), 100.0 * correct / max(n, 1)


def _agree(comm: Comm, flag: bool, how: str) -> bool:
    """``flag`` combined over the ranks (``"max"``: any, ``"min"``: all)."""
    if comm.size == 1:
        return flag
    sign = 1.0 if how == "max" else -1.0
    t = comm.all_reduce(torch.tensor([sign * float(flag)]), "max", "a training check")
    return bool(sign * float(t.item()) > 0)


def _state_is_finite(model: nn.Module, comm: Comm) -> bool:
    finite = all(bool(torch.isfinite(t).all())
                 for t in model.state_dict().values()
                 if torch.is_tensor(t) and t.is_floating_point())
    return _agree(comm, finite, "min")


def _has_non_finite_input(loader: DataLoader) -> bool:
    return any(torch.is_tensor(x) and not bool(torch.isfinite(x).all()) for x, _ in loader)


class _Run:
    """The state of one ``fit`` call that its checkpoints carry."""

    def __init__(self, model: nn.Module, cfg: FitConfig, opt: torch.optim.Optimizer,
                 sched: Any, result: FitResult, label: str, run: dict[str, Any] | None,
                 extra: dict[str, Any] | None, path: str | None,
                 hooks: Sequence[StepHook]) -> None:
        self.model, self.cfg, self.opt, self.sched = model, cfg, opt, sched
        self.hooks = list(hooks)
        self.result, self.label, self.run, self.extra = result, label, run, extra or {}
        self.comm = fit_comm(model)
        self.sharded = isinstance(model, RankAware) and model.sharded_state()
        self.world = self.comm.size if self.sharded else 1
        self.path = None if path is None else (
            os.fspath(rank_file(path, self.comm.rank, self.comm.size)) if self.sharded else path)
        self.writer = self.sharded or world_rank() == 0
        self.saved: int | None = None  # the epoch of this run's checkpoint on disk

    def synchronize(self) -> None:
        if isinstance(self.model, RankAware):
            self.model.synchronize(self.opt)

    def save(self, epoch: int, batch: int = 0, partial: dict[str, Any] | None = None) -> None:
        """Checkpoint after ``epoch`` full epochs and ``batch`` batches of the next one;
        refuse non-finite weights (the last good checkpoint stays)."""
        assert self.path is not None
        self.synchronize()
        if not _state_is_finite(self.model, self.comm):  # the replicas agree: all raise
            steps = self.sched.last_epoch
            where = f"the weights are non-finite after epoch {epoch}/{self.cfg.epochs} " \
                f"(step {steps} of the run)" if not batch else \
                f"the weights are non-finite at step {steps} of the run"
            raise divergence(self.cfg, self.label, where, self.path, self.saved)
        if self.writer:
            ckpt.save(self.path, label=self.label, epoch=epoch, batch=batch, partial=partial,
                      config=asdict(self.cfg), model=self.model.state_dict(),
                      optimizer=self.opt.state_dict(), scheduler=self.sched.state_dict(),
                      history=[asdict(h) for h in self.result.history],
                      step_times=self.result.step_times, rng=ckpt.rng_state(),
                      world=self.world, **({"run": self.run} if self.run is not None else {}),
                      **({"hooks": [h.state_dict() for h in self.hooks]} if self.hooks else {}),
                      **self.extra)
        self.comm.barrier("checkpoint written")
        if not batch:
            self.saved = epoch

    def resume(self, log: Callable[[str], None] | None) -> dict[str, Any] | None:
        """Load this run's checkpoint into the model, optimizer and schedule; return it."""
        found = self.path is not None and os.path.exists(self.path)
        if _agree(self.comm, found, "max") != _agree(self.comm, found, "min"):
            raise ValueError(
                f"some ranks found their checkpoint file ({self.path}) and others did not: "
                "every rank needs the files of one run, written by as many ranks as now; "
                "restore them, or drop --resume to start from scratch")
        if not found:
            if log and world_rank() == 0:
                log(f"[{self.label}] no checkpoint at {self.path}; starting from scratch")
            return None
        assert self.path is not None
        state = ckpt.read(self.path)
        ckpt.check(state, ckpt.fingerprint(self.cfg, self.run, self.world), self.path)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ValueError(
                f"cannot resume {self.path}: it holds another network's weights (model, "
                f"chunks, cut points or coarse networks differ): {e}") from e
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.result.history = [EpochStats(**h) for h in state["history"]]
        self.result.step_times = list(state["step_times"])
        saved_hooks = state.get("hooks", [])
        if len(saved_hooks) != len(self.hooks):
            raise ValueError(
                f"cannot resume {self.path}: it was written with {len(saved_hooks)} step "
                f"hook(s) and this run has {len(self.hooks)}: resume with the same options")
        for hook, hook_state in zip(self.hooks, saved_hooks, strict=True):
            hook.load_state_dict(hook_state)
        self.saved = self.result.resumed_from = int(state["epoch"])
        if log and world_rank() == 0:
            at = f", batch {state['batch']}" if state.get("batch") else ""
            log(f"[{self.label}] resumed from {self.path} after epoch {self.saved}{at}")
        return state


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader,
    cfg: FitConfig,
    *,
    label: str = "model",
    checkpoint: str | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    extra_state: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
    hooks: Sequence[StepHook] = (),
) -> FitResult:
    """Train ``model`` by ``cfg``; evaluate, checkpoint and log after every epoch.

    Args:
        checkpoint: file written after every epoch and when a signal stops the run
            (rank 0; every rank its own ``.rank<r>`` file for a sharded model).
        resume: continue from ``checkpoint`` when it exists (its recipe must match).
        stop_after: stop after this many epochs in this call (e.g. to fit a job's time
            limit), still checkpointing; ``resume`` continues where it stopped.
        progress: a tqdm bar over the batches of each epoch (main process only).
        extra_state: stored in the checkpoint as is (e.g. the cut points); tensors and
            plain data only (checkpoints load with ``weights_only=True``).
        run: what identifies the run beyond the recipe (model, data set, batch size...),
            as plain data: a checkpoint of another run is refused on resume
            (``CheckpointMismatchError`` naming the fields).
        hooks: :class:`~torchpint.trainer.protocol.StepHook` s called after every
            batch's backward, before the step; their state is in the checkpoint.

    Raises ``DivergenceError`` when the loss, the test loss or the weights turn non-finite
    (no checkpoint is written then, so the last good one stays), and
    :class:`~torchpint.runtime.signals.Interrupted` when a signal stopped the run.
    """
    from tqdm.auto import tqdm

    if resume and not checkpoint:
        raise ValueError("resume=True needs the checkpoint file to resume from (checkpoint=...)")
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after must be >= 0 epochs, got {stop_after}")
    dev = input_device(model)
    for p in model.parameters():  # SGD casts lr to the parameters' dtype
        if p.is_floating_point() and cfg.lr > torch.finfo(p.dtype).max:
            raise ValueError(f"lr={cfg.lr:g} does not fit in the model's {p.dtype} parameters")
    opt = make_optimizer(model, cfg)
    steps = len(train_loader)
    if steps == 0:
        raise ValueError("the training loader yields no batch (batch size > data set?)")
    sched = make_scheduler(opt, cfg, steps)
    result = FitResult(label, params=sum(p.numel() for p in model.parameters()))
    r = _Run(model, cfg, opt, sched, result, label, run, extra_state, checkpoint, hooks)
    main = world_rank() == 0
    state = r.resume(log) if resume else None
    start = r.saved or 0
    skip = int(state.get("batch") or 0) if state else 0
    partial = state.get("partial") if skip and state else None
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    sampler = getattr(train_loader, "sampler", None)
    with signals.boundaries() as outer:
        for epoch in range(start, end):
            set_epoch = getattr(sampler, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
            torch.manual_seed(mix_seed(cfg.seed, epoch))  # augmentation, worker seeds
            model.train()
            p = partial or {"lr": opt.param_groups[0]["lr"], "loss": 0.0, "correct": 0.0,
                            "rows": 0.0, "times": [], "elapsed": 0.0}
            times: list[float] = list(p["times"])
            t_epoch = time.perf_counter() - float(p["elapsed"])
            stop = 0  # a signal seen at this epoch's last batch
            bar = tqdm(total=steps, initial=skip, desc=f"{label} {epoch + 1}/{cfg.epochs}",
                       disable=not (progress and main), leave=False, dynamic_ncols=True)
            try:
                for i, (x, y) in enumerate(train_loader):
                    if i < skip:  # resumed mid-epoch: this batch was trained before
                        if i == skip - 1:
                            ckpt.set_rng_state(state["rng"])  # type: ignore[index]
                        continue
                    if isinstance(model, RankAware):
                        x, y = model.shard_batch(x, y)
                    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                    _sync(dev)
                    t0 = time.perf_counter()
                    out, yy = _rows(model(x), y)
                    loss = F.cross_entropy(out, yy)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    for hook in hooks:
                        hook.after_backward(model, x, y, epoch * steps + i)
                    opt.step()
                    _sync(dev)
                    times.append(time.perf_counter() - t0)
                    rows = float(len(yy))
                    values = [float(loss.detach()) * rows,
                              float((out.detach().argmax(1) == yy).sum()), rows]
                    if isinstance(model, RankAware):  # the whole batch's, so replicas agree
                        values = model.sum_over_replicas(values)
                    loss_value = values[0] / values[2]
                    if not math.isfinite(loss_value):
                        where = (f"the loss is {loss_value} at epoch {epoch + 1}/{cfg.epochs}, "
                                 f"step {i + 1}/{steps} (step {epoch * steps + i + 1} of the run)")
                        cause = None
                        if torch.is_tensor(x) and not bool(torch.isfinite(x).all()):
                            cause = "this batch holds non-finite values: check the training data"
                        raise divergence(cfg, label, where, checkpoint, r.saved, cause)
                    sched.step()
                    p["loss"] += values[0]
                    p["correct"] += values[1]
                    p["rows"] += values[2]
                    bar.update(1)
                    bar.set_postfix(loss=f"{p['loss'] / p['rows']:.3f}",
                                    acc=f"{100 * p['correct'] / p['rows']:.1f}")
                    stop = signals.poll(r.comm) if outer else 0
                    if stop:
                        signals.clear()
                        if checkpoint and i + 1 == steps:
                            break  # the epoch's own checkpoint below is the one to resume
                        if checkpoint:
                            p.update(times=times, elapsed=time.perf_counter() - t_epoch)
                            r.save(epoch, i + 1, p)
                        raise signals.Interrupted(
                            stop, f"epoch {epoch + 1}/{cfg.epochs}, batch {i + 1}/{steps}",
                            r.path if checkpoint else None)
            finally:
                bar.close()
            skip, partial = 0, None
            test_loss, test_acc = evaluate(model, test_loader)
            if not math.isfinite(test_loss):
                where = (f"the test loss is {test_loss} after epoch {epoch + 1}/{cfg.epochs} "
                         f"(step {(epoch + 1) * steps} of the run)")
                cause = None
                if _has_non_finite_input(test_loader):
                    cause = "the test data holds non-finite values: check it"
                raise divergence(cfg, label, where, checkpoint, r.saved, cause)
            timed = times[1:] if len(times) > 1 else times  # the first step warms up
            stats = EpochStats(
                epoch=epoch + 1, lr=float(p["lr"]), train_loss=p["loss"] / p["rows"],
                train_accuracy=100.0 * p["correct"] / p["rows"], test_loss=test_loss,
                test_accuracy=test_acc, epoch_time_s=time.perf_counter() - t_epoch,
                step_time_s=statistics.median(timed))
            result.history.append(stats)
            result.step_times.extend(timed)
            if log and main:
                log(f"[{label}] epoch {epoch + 1}/{cfg.epochs}  loss {stats.train_loss:.4f}  "
                    f"train {stats.train_accuracy:.2f}%  test {test_acc:.2f}%  "
                    f"step {1e3 * stats.step_time_s:.1f} ms  ({stats.epoch_time_s:.1f} s)")
            if checkpoint:
                r.save(epoch + 1)
            stop = stop or (signals.poll(r.comm) if outer else 0)
            if stop:
                signals.clear()
                raise signals.Interrupted(stop, f"the end of epoch {epoch + 1}/{cfg.epochs}",
                                          r.path if checkpoint else None)
    if not checkpoint:
        r.synchronize()
    return result
