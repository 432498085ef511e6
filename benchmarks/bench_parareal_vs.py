"""Parareal networks vs a pipeline and DDP: one training step on the same 2 Gloo processes.

The two ordinary alternatives a user would pick on the same processes: a
``torch.distributed.pipelining`` pipeline cut at the same place, and DistributedDataParallel.

Rows (one training step: forward + backward + SGD-with-momentum update on one fixed batch,
as ``_step_fn`` in bench_parareal.py; same global batch for every row):

- ``original 1 proc``: the whole network, one process, one intra-op thread (the papers'
  baseline);
- ``original 2 thr``: the same with 2 intra-op threads (the honest baseline on 2 cores);
- ``DDP``: ``DistributedDataParallel``, 2 Gloo processes, each half the batch
  (``gradient_as_bucket_view=True``; buffers broadcast from rank 0, the default);
- ``GPipe M=2/4/8``, ``1F1B M=4``: ``PipelineStage`` + ``ScheduleGPipe`` / ``Schedule1F1B``
  on 2 Gloo processes, M micro-batches of the same batch, stage 0 = P + blocks[:cut], stage
  1 = blocks[cut:] + Q with ``cut`` the parareal network's cut point (balance "flops");
- ``parareal dist``: ``parareal_network(model, 2, executor="distributed", balance="flops")``
  on the same 2 Gloo processes;
- ``parareal thr``: the same network (same cut) on the ``threads`` executor, one process.

Timing. One group of 2 Gloo processes (spawned; one intra-op thread each) builds every
variant and times them all in the same interleaved rounds (the order rotates every
round). Every timed step starts after a barrier; a 2-process step's time is the max over
the ranks. The 1-process rows run on rank 0 while rank 1 waits in a barrier, i.e. with
the other core idle (rank 1's CPU use while it waits is measured and reported). Results:
medians with quartiles of the per-round ratios against ``original 1 proc`` and against
``original 2 thr``, so drift in machine load cancels.

Peak memory per rank. Measured by one extra (untimed) step per variant with
``torch.autograd.graph.saved_tensors_hooks``: the peak over the step of the bytes of
distinct tensors (deduplicated by storage) saved for backward and alive at the same time
(activations, the dominant term; parameters saved by an op are not counted there), plus
the parameters the rank holds, plus 2x the bytes of the gradients it gets (gradient and
SGD momentum buffer). The hooks are thread-local, so they are also pushed around every
fine chunk and coarse network (the ``threads`` executor runs them in worker threads).
Applied identically to every row. Not counted: transient buffers of single ops, gradients
in flight in backward, communication buffers, the allocator's slack, Python. GPipe keeps
all M micro-batches' activations until the backward, 1F1B at most N of them; the
``distributed`` executor holds a replica of every chunk's parameters on every rank (it
trains only its own): the JSON also gives the memory if the other chunks were dropped.

Accuracy (same epochs, the small presets of accuracy_parareal.py: digits and shapes,
3 seeds). DDP with equal halves and the pipelines compute the original network's
gradient, except that batch norm normalizes each half / micro-batch by its own
statistics (and DDP keeps rank 0's running statistics, a pipeline updates them once per
micro-batch). That is reproduced in one process by running the model on the M slices of
each batch (``MicroBatchBN``); the checks show it gives DDP's and the pipeline's loss,
gradients and running statistics to rounding in float64. 1F1B computes the same as GPipe
at equal M. The training jobs run on the two processes in parallel (one thread each).
``--accuracy reuse`` (default) takes original and parareal from
benchmarks/results/accuracy_parareal.json (same recipe, checked; trained on 2 threads, so
not bit-identical to a 1-thread run: the paired differences carry that rounding noise)
and trains ddp, micro4 and micro8 (micro2 with ``--acc-variants``); ``--accuracy
measure`` trains original and parareal too (about 4 minutes more).

Cost model for N = 2..64 devices, from costs measured here on one thread: per-block
forward + backward time, per-block activation and parameter bytes, the coarse networks'
time, and the batch-size efficiency of the whole network (per-sample cost is not constant
on small batches). parareal (k = 1, the ``distributed`` executor) = P + Q + sum_j C_j +
max_j F_j + sum_{j>=1} C_j + 2 all-reduces of all chunk interfaces; pipeline (GPipe/1F1B,
the best M dividing the batch) = (M + N - 1) x (max stage time on B/M samples + 2
point-to-point transfers), bubble (N-1)/(M+N-1); DDP = original on B/N samples + ring
all-reduce of the parameters (2(N-1)/N x bytes / bandwidth + 2(N-1) latencies),
overlapped with the backward (2/3 of the step) as far as it fits. Scenarios: this
machine (one core per device, Gloo bandwidth and latency measured here) and two assumed
GPU clusters (a device 50x one core here; InfiniBand 25 GB/s or NVLink 300 GB/s).
Deeper / wider networks scale the measured blocks (ResNet: the blocks of each stage
repeated; width w: time and parameters x (w/w0)^2, activations x w/w0). Every assumption
is printed with the result and stored in the JSON.

Commands (the machine must be quiet: the rows are timed against each other):

    # full: ~5 min timing, ~13 min accuracy (27 trainings on 2 processes), ~1 min cost
    # model, about 20 minutes on 2 cores; writes benchmarks/results/bench_parareal_vs.json
    python benchmarks/bench_parareal_vs.py --plot out/bench_parareal_vs.png
    # the same under torchrun (2 processes; rank 0 prints and writes)
    torchrun --nproc-per-node 2 benchmarks/bench_parareal_vs.py
    # timing, memory and cost model only (~7 minutes)
    python benchmarks/bench_parareal_vs.py --accuracy skip
    # tiny models, 3 rounds, 1-epoch accuracy, the correctness checks (~1 minute)
    python benchmarks/bench_parareal_vs.py --quick
    # the correctness checks alone (float64, seconds)
    python benchmarks/bench_parareal_vs.py --check-only
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import pickle
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from accuracy_parareal import DATASETS, PLAN  # this directory is on sys.path
from bench_parareal import CONFIGS, QUICK, _batch, _median_quartiles, _ratios, _step_fn
from torchpint.common.modules import train_mode
from torchpint.layerparallel.problems import batch_norms, frozen_stats
from torchpint.models import build_model
from torchpint.parareal import balanced_cuts, decompose, default_coarse, parareal_network
from torchpint.parareal.costs import block_costs, measure_time
from torchpint.testing import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_JSON = os.path.join(ROOT, "benchmarks", "results", "bench_parareal_vs.json")
ACCURACY_JSON = os.path.join(ROOT, "benchmarks", "results", "accuracy_parareal.json")
BASE_1 = "original_1p"  # the papers' baseline
BASE_2 = "original_2t"  # the honest baseline on 2 cores
# variant -> (label, processes, intra-op threads per process)
ROWS: dict[str, tuple[str, int, int]] = {
    "original_1p": ("original 1 proc", 1, 1),
    "original_2t": ("original 2 thr", 1, 2),
    "ddp": ("DDP", 2, 1),
    "gpipe_m2": ("GPipe M=2", 2, 1),
    "gpipe_m4": ("GPipe M=4", 2, 1),
    "gpipe_m8": ("GPipe M=8", 2, 1),
    "1f1b_m4": ("1F1B M=4", 2, 1),
    "parareal_dist": ("parareal dist", 2, 1),
    "parareal_thr": ("parareal thr", 1, 2),
}
PIPELINES = ("gpipe_m2", "gpipe_m4", "gpipe_m8", "1f1b_m4")
# accuracy variant of each row: which network and batch-norm grouping it trains
ACC_OF_ROW = {
    "original_1p": "original",
    "original_2t": "original",
    "ddp": "ddp",
    "gpipe_m2": "micro2",
    "gpipe_m4": "micro4",
    "gpipe_m8": "micro8",
    "1f1b_m4": "micro4",
    "parareal_dist": "parareal",
    "parareal_thr": "parareal",
}
ACC_VARIANTS = ("original", "parareal", "ddp", "micro2", "micro4", "micro8")
# scenarios of the cost model: name -> (link bytes/s, latency s, compute speed relative to
# one core here); None = this machine (Gloo bandwidth and latency measured, speed 1)
SCENARIOS: dict[str, tuple[float, float, float] | None] = {
    "gloo-here": None,
    "ib-gpu": (25e9, 5e-6, 50.0),  # assumed: NDR 200 Gb/s per device, a GPU = 50 cores
    "nvlink-gpu": (300e9, 3e-6, 50.0),  # assumed: NVLink all-reduce bus bandwidth
}
NS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# cost-model variants: config -> [(label, depth, width)]; depth None = the preset's
SWEEP: dict[str, list[tuple[str, int | None, int]]] = {
    "resnet": [
        ("ResNet-164 w16", 164, 16),
        ("ResNet-164 w64", 164, 64),
        ("ResNet-1001 w16", 1001, 16),
        ("ResNet-1001 w64", 1001, 64),
    ],
    "vgg": [("VGG-16 w16", None, 16), ("VGG-16 w64", None, 64), ("VGG-16 w256", None, 256)],
}


def _log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- memory


class SavedBytes:
    """Peak bytes of the distinct tensors saved for backward that are alive together.

    ``pack`` counts a tensor's storage once however many ops save it, and ``_Saved``
    releases it when autograd frees the graph; storages of ``exclude`` (parameters) are
    not counted. Thread-safe: the ``threads`` executor saves from several threads.
    """

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.local = threading.local()

    def pack(self, t: torch.Tensor) -> Any:
        try:
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):
            return t
        if key in self.exclude or nbytes == 0:
            return t
        with self.lock:
            entry = self.live.get(key)
            if entry is None:
                self.live[key] = [nbytes, 1]
                self.current += nbytes
                self.peak = max(self.peak, self.current)
            else:
                entry[1] += 1
        return _Saved(t, key, self)

    def release(self, key: int) -> None:
        with self.lock:
            entry = self.live[key]
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.live[key]

    @staticmethod
    def unpack(x: Any) -> torch.Tensor:
        return x.t if isinstance(x, _Saved) else x

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def _enter(self, *_: Any) -> None:
        ctx = self.hooks()
        ctx.__enter__()
        self.local.__dict__.setdefault("stack", []).append(ctx)

    def _exit(self, *_: Any) -> None:
        self.local.stack.pop().__exit__(None, None, None)


class _Saved:
    """A saved tensor whose release, when autograd drops it, updates the tracker."""

    __slots__ = ("t", "key", "tracker")

    def __init__(self, t: torch.Tensor, key: int, tracker: SavedBytes) -> None:
        self.t, self.key, self.tracker = t, key, tracker

    def __del__(self) -> None:
        self.tracker.release(self.key)


@contextlib.contextmanager
def track_saved(
    params: list[torch.Tensor], thread_modules: list[nn.Module]
) -> Iterator[SavedBytes]:
    """Track saved-for-backward bytes in this thread and in any thread that runs one of
    ``thread_modules`` (hooks pushed around their forward)."""
    tracker = SavedBytes({p.untyped_storage().data_ptr() for p in params})
    handles = []
    for m in thread_modules:
        handles.append(m.register_forward_pre_hook(tracker._enter))
        handles.append(m.register_forward_hook(tracker._exit))
    try:
        with tracker.hooks():
            yield tracker
    finally:
        for h in handles:
            h.remove()


def _nbytes(tensors: Any) -> int:
    """Bytes of ``tensors``, each counted once (by address and size: DDP's gradients are
    views into one bucket, so the storage would not tell them apart)."""
    seen: dict[tuple[int, int], int] = {}
    for t in tensors:
        if t is not None:
            seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
    return sum(seen.values())


# ----------------------------------------------------------------------------- variants


@dataclass
class Variant:
    """One timed row on this rank: its step (None: this rank idles), the modules whose
    parameters it holds, the modules run in worker threads (for the memory hooks)."""

    name: str
    step: Callable[[], None] | None
    threads: int
    holds: list[nn.Module] = field(default_factory=list)
    needs: list[nn.Module] = field(default_factory=list)  # parareal: what rank j runs
    thread_modules: list[nn.Module] = field(default_factory=list)


def _build(cfg: tuple) -> nn.Module:
    """The benchmark model of ``cfg`` (same weights in every process)."""
    preset, depth, width, _, _ = cfg
    torch.manual_seed(0)
    return build_model(preset, depth=depth, width=width, num_classes=10, in_channels=3)


def split_stages(model: nn.Module, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Stage 0 = P + blocks[:cut], stage 1 = blocks[cut:] + Q (modules shared)."""
    d = decompose(model)
    return nn.Sequential(d.pre, *d.blocks[:cut]), nn.Sequential(*d.blocks[cut:], d.post)


def _stage_io(stage0: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stage 0's output on ``x`` (eval mode, no grad: BN statistics untouched)."""
    with train_mode([stage0], False), torch.no_grad():
        return stage0(x)


def pipeline_step(
    stage_mod: nn.Module,
    rank: int,
    x: torch.Tensor,
    y: torch.Tensor,
    m: int,
    schedule: str,
    mid: torch.Tensor,
    lr: float = 1e-3,
) -> Callable[[], Any]:
    """One pipelined SGD step of this rank's stage (2 stages, ``m`` micro-batches).

    The stage's input and output shapes are given (static metadata): otherwise the stage
    infers them by running its module on uninitialized tensors in train mode, which
    overwrites batch-norm running statistics with garbage on the first step.
    """
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    b = x.shape[0] // m
    iface = torch.zeros_like(mid[:b]).requires_grad_()  # its gradient goes back to stage 0
    ins = x[:b] if rank == 0 else iface
    outs = iface if rank == 0 else torch.zeros(b, 10, dtype=x.dtype, requires_grad=True)
    stage = PipelineStage(stage_mod, rank, 2, torch.device("cpu"), input_args=ins, output_args=outs)
    cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[schedule]
    sched = cls(stage, n_microbatches=m, loss_fn=F.cross_entropy)
    opt = torch.optim.SGD(stage_mod.parameters(), lr=lr, momentum=0.9)
    stage_mod.train()

    def step() -> list[torch.Tensor]:
        losses: list[torch.Tensor] = []
        opt.zero_grad(set_to_none=True)
        if rank == 0:
            sched.step(x, return_outputs=False)
        else:
            sched.step(target=y, losses=losses, return_outputs=False)
        opt.step()
        return losses

    return step


def build_variants(
    cfg: tuple, rank: int, x: torch.Tensor, y: torch.Tensor, balance: str
) -> tuple[dict[str, Variant], int]:
    """Every row of the table on this rank, and the cut point they share."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = _build(cfg)
    torch.manual_seed(1)  # the coarse networks: the same on both ranks
    par = parareal_network(
        copy.deepcopy(model), 2, executor="distributed", example_input=x, balance=balance
    )
    par.synchronize()
    cut = par.cut_points[0]
    out: dict[str, Variant] = {}
    d = par.stages
    out["parareal_dist"] = Variant(
        "parareal_dist",
        _step_fn(par, x, y),
        1,
        holds=[par],
        needs=[d.pre, d.fine[rank], *d.coarse, d.post],
    )
    half = x.shape[0] // 2
    sl = slice(rank * half, (rank + 1) * half)
    ddp = DDP(copy.deepcopy(model), gradient_as_bucket_view=True)
    out["ddp"] = Variant("ddp", _step_fn(ddp, x[sl], y[sl]), 1, holds=[ddp])
    mid = _stage_io(split_stages(copy.deepcopy(model), cut)[0], x)
    for name in PIPELINES:
        kind, m = name.split("_m")
        stage = split_stages(copy.deepcopy(model), cut)[rank]
        step = pipeline_step(stage, rank, x, y, int(m), kind, mid)
        out[name] = Variant(name, step, 1, holds=[stage])
    # the one-process rows: built and run on rank 0 only
    solo = rank == 0
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    out["original_1p"] = Variant(BASE_1, _step_fn(m1, x, y) if solo else None, 1, [m1])
    out["original_2t"] = Variant(BASE_2, _step_fn(m2, x, y) if solo else None, 2, [m2])
    thr = None
    if solo:
        torch.manual_seed(1)
        thr = parareal_network(
            copy.deepcopy(model), 2, executor="threads", example_input=x, cut_points=[cut]
        )
        thr.load_state_dict(par.state_dict())  # the same weights as the distributed one
    s = thr.stages if thr is not None else None
    out["parareal_thr"] = Variant(
        "parareal_thr",
        _step_fn(thr, x, y) if thr is not None else None,
        2,
        holds=[thr] if thr is not None else [],
        thread_modules=[*s.fine, *s.coarse] if s is not None else [],
    )
    return {k: out[k] for k in ROWS}, cut


# ----------------------------------------------------------------------------- timing


def timed_rounds(
    variants: dict[str, Variant], rank: int, reps: int, warmup: int, tag: str
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Interleaved rounds (order rotated every round): every variant's step after a
    barrier, then a barrier after it. Returns this rank's step times and, for steps this
    rank sat out, its CPU share while waiting (to show the idle rank really idles)."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    idle_cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            v = variants[n]
            if torch.get_num_threads() != v.threads and v.step is not None:
                torch.set_num_threads(v.threads)
            dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            if v.step is not None:
                v.step()
            t1 = time.perf_counter()
            dist.barrier()
            t2, c2 = time.perf_counter(), time.process_time()
            if torch.get_num_threads() != 1:
                torch.set_num_threads(1)
            if r >= warmup:
                if v.step is not None:
                    times[n].append(t1 - t0)
                else:
                    idle_cpu[n].append((c2 - c0) / max(t2 - t0, 1e-9))
        if rank == 0:
            _log(f"{tag}: round {r + 1}/{warmup + reps}" + (" (warm-up)" if r < warmup else ""))
    return times, idle_cpu


def memory_of(v: Variant) -> dict[str, int]:
    """One untimed step of ``v`` with the saved-tensor tracker: the bytes this rank holds
    at the step's peak (see the module docstring)."""
    params = {id(p): p for m in v.holds for p in m.parameters()}
    torch.set_num_threads(v.threads)
    with track_saved(list(params.values()), v.thread_modules) as tr:
        v.step()
    torch.set_num_threads(1)
    grads = [p.grad for p in params.values() if p.grad is not None]
    held = _nbytes(params.values())
    g = _nbytes(grads)
    need_params = {id(p): p for m in v.needs for p in m.parameters()}
    out = {
        "activations": tr.peak,
        "params": held,
        "grads": g,
        "momentum": g,  # SGD keeps one momentum buffer per parameter that gets a gradient
        "total": tr.peak + held + 2 * g,
    }
    if v.needs:
        out["total_if_own_chunk_only"] = tr.peak + _nbytes(need_params.values()) + 2 * g
    return out


def allreduce_bandwidth(rank: int) -> dict[str, float]:
    """Gloo all-reduce and send/recv between the 2 processes: latency (small message) and
    bandwidth (64 MiB), median of a few repetitions."""
    res: dict[str, float] = {}
    for what in ("allreduce", "p2p"):
        ts = {}
        for nbytes in (4096, 64 * 2**20):
            buf = torch.ones(nbytes // 4)
            samples = []
            for _ in range(5):
                dist.barrier()
                t0 = time.perf_counter()
                if what == "allreduce":
                    dist.all_reduce(buf)
                elif rank == 0:
                    dist.send(buf, 1)
                else:
                    dist.recv(buf, 0)
                samples.append(time.perf_counter() - t0)
            ts[nbytes] = statistics.median(samples)
        small, large = ts[4096], ts[64 * 2**20]
        n = 2
        if what == "allreduce":  # ring: 2(n-1) latencies, 2(n-1)/n of the bytes per link
            res["allreduce_latency_s"] = small / (2 * (n - 1))
            res["allreduce_bandwidth_Bps"] = 2 * (n - 1) / n * 64 * 2**20 / max(large - small, 1e-9)
        else:
            res["p2p_latency_s"] = small
            res["p2p_bandwidth_Bps"] = 64 * 2**20 / max(large - small, 1e-9)
    return res


# ----------------------------------------------------------------------------- checks


def _no_bn(model: nn.Module) -> nn.Module:
    """``model`` with every batch norm replaced by the identity (exact-equality checks)."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            _no_bn(child)
    return model


def _grads_of(m: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in m.parameters() if p.grad is not None]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if len(a) != len(b):
        return float("inf")
    return max((float((u - v).abs().max()) for u, v in zip(a, b, strict=True)), default=0.0)


def _reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, parts: int, stats: str):
    """Loss, gradients and buffers of one step of ``MicroBatchBN(model, parts, stats)``."""
    ref = MicroBatchBN(copy.deepcopy(model), parts, stats).train()
    loss = F.cross_entropy(ref(x), y)
    loss.backward()
    return float(loss.detach()), ref.model, [b.clone() for b in ref.model.buffers()]


def run_checks(rank: int) -> dict[str, Any]:
    """Float64 checks on a small VGG (both ranks): the pipeline's loss and gradients and
    DDP's gradients equal the original's without batch norm; with batch norm they equal
    ``MicroBatchBN`` (what the accuracy column trains), running statistics included; the
    distributed parareal network gives the serial one's loss."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    out: dict[str, Any] = {}
    torch.manual_seed(0)
    base = build_model("vgg-small", num_classes=10, in_channels=3).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=g)
    cut = len(decompose(base).blocks) // 2
    for bn in (False, True):
        model = copy.deepcopy(base) if bn else _no_bn(copy.deepcopy(base))
        tag = "bn" if bn else "no_bn"
        # DDP on the two halves
        loss_ref, ref, bufs = _reference(model, x, y, 2 if bn else 1, "first")
        ddp = DDP(copy.deepcopy(model))
        h = slice(rank * 8, rank * 8 + 8)
        F.cross_entropy(ddp(x[h]), y[h]).backward()
        row = {"grad_max_abs_diff": _max_diff(_grads_of(ddp.module), _grads_of(ref))}
        if bn and rank == 0:  # DDP keeps rank 0's running statistics
            row["buffers_max_abs_diff"] = _max_diff(
                [b.float() for b in ddp.module.buffers()], [b.float() for b in bufs]
            )
        out[f"ddp_{tag}"] = row
        # the pipelines, M = 4
        mid = _stage_io(split_stages(copy.deepcopy(model), cut)[0], x)
        for kind in ("gpipe", "1f1b"):
            loss_ref, ref, bufs = _reference(model, x, y, 4 if bn else 1, "all")
            stage = split_stages(copy.deepcopy(model), cut)[rank]
            ref_stage = split_stages(ref, cut)[rank]
            step = pipeline_step(stage, rank, x, y, 4, kind, mid, lr=0.0)
            losses = step()
            row = {"grad_max_abs_diff": _max_diff(_grads_of(stage), _grads_of(ref_stage))}
            if rank == 1:
                row["loss"] = float(torch.stack(losses).detach().mean())
                row["loss_reference"] = loss_ref
                row["loss_abs_diff"] = abs(row["loss"] - loss_ref)
            if bn:
                row["buffers_max_abs_diff"] = _max_diff(
                    [b.float() for b in stage.buffers()],
                    [b.float() for b in split_stages(ref, cut)[rank].buffers()],
                )
            out[f"{kind}_m4_{tag}"] = row
        # and the full-batch gradient differs with batch norm (why the accuracy is measured)
        if bn:
            _, full, _ = _reference(model, x, y, 1, "all")
            _, halves, _ = _reference(model, x, y, 2, "first")
            out["bn_halves_vs_full_grad_max_abs_diff"] = _max_diff(
                _grads_of(full), _grads_of(halves)
            )
    torch.manual_seed(1)
    pd = parareal_network(
        copy.deepcopy(base), 2, executor="distributed", balance="flops", example_input=x
    )
    pd.synchronize()
    torch.manual_seed(1)
    ps = parareal_network(
        copy.deepcopy(base), 2, executor="serial", example_input=x, cut_points=pd.cut_points
    )
    ps.load_state_dict(pd.state_dict())
    la, lb = F.cross_entropy(pd(x), y), F.cross_entropy(ps(x), y)
    out["parareal_distributed_vs_serial_loss_abs_diff"] = abs(
        float(la.detach()) - float(lb.detach())
    )
    return out


def print_checks(checks: list[dict[str, Any]], ok: bool) -> None:
    """One line per check: the largest difference over both ranks."""
    print(
        "Checks (float64, vgg-small, batch 16; pipelines M=4; max abs difference over both "
        "ranks): " + ("all passed" if ok else "FAILED")
    )
    what = {
        "ddp_no_bn": "DDP grads vs original, no BN",
        "gpipe_m4_no_bn": "GPipe loss & grads vs original, no BN",
        "1f1b_m4_no_bn": "1F1B loss & grads vs original, no BN",
        "ddp_bn": "DDP grads & rank-0 BN stats vs MicroBatchBN(2, first)",
        "gpipe_m4_bn": "GPipe loss, grads & BN stats vs MicroBatchBN(4, all)",
        "1f1b_m4_bn": "1F1B loss, grads & BN stats vs MicroBatchBN(4, all)",
        "bn_halves_vs_full_grad_max_abs_diff": "BN: grads of 2 halves vs full batch (> 0)",
        "parareal_distributed_vs_serial_loss_abs_diff": "parareal distributed vs serial loss",
    }
    for k, label in what.items():
        vals = []
        for c in checks:
            v = c.get(k)
            if isinstance(v, dict):
                vals += [x for kk, x in v.items() if "diff" in kk]
            elif v is not None:
                vals.append(v)
        print(f"  {label:58} {max(vals, default=float('nan')):.1e}")


def _check_ok(checks: list[dict[str, Any]], tol: float = 1e-10) -> bool:
    """Whether every difference in the checks of both ranks is below ``tol`` (float64);
    the BN-halves-vs-full entry must on the contrary be clearly non-zero."""
    ok = True
    for c in checks:
        for k, v in c.items():
            if k == "bn_halves_vs_full_grad_max_abs_diff":
                ok &= v > 1e-8
            elif isinstance(v, dict):
                ok &= all(x <= tol for kk, x in v.items() if "diff" in kk)
            elif "diff" in k:
                ok &= v <= tol
    return bool(ok)


# ----------------------------------------------------------------------------- accuracy


class MicroBatchBN(nn.Module):
    """``model`` run on ``parts`` equal slices of each training batch, outputs
    concatenated: batch norm sees each slice alone, as a DDP rank sees its half or a
    pipeline stage its micro-batch, and the mean loss over the batch gives the same
    gradient as theirs. ``stats``: ``"first"`` updates running statistics from the first
    slice only (DDP broadcasts rank 0's buffers), ``"all"`` from every slice in turn (a
    pipeline stage). Evaluation runs the whole batch."""

    def __init__(self, model: nn.Module, parts: int, stats: str) -> None:
        super().__init__()
        self.model, self.parts, self.stats = model, parts, stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.parts == 1:
            return self.model(x)
        if x.shape[0] % self.parts:
            raise ValueError(f"batch {x.shape[0]} does not split into {self.parts} parts")
        outs = []
        for i, xi in enumerate(x.chunk(self.parts)):
            frozen = bool(i) and self.stats == "first"
            with frozen_stats(batch_norms(self.model) if frozen else []):
                outs.append(self.model(xi))
        return torch.cat(outs)


def accuracy_job(dataset: str, model_name: str, seed: int, variant: str, epochs: int | None):
    """Test accuracy of one (data set, model, seed, variant) after the recipe of
    accuracy_parareal.py (SGD 0.05, momentum 0.9, wd 5e-4, cosine, batch 32)."""
    from torchpint.data import make_loaders
    from torchpint.parareal.train import TrainConfig, fit

    size, extra, default_epochs = DATASETS[dataset]
    data = make_loaders(dataset, image_size=size, batch_size=32, seed=seed, **extra)
    cfg = TrainConfig(
        epochs=epochs or default_epochs, lr=0.05, momentum=0.9, weight_decay=5e-4, seed=seed
    )
    torch.manual_seed(seed)
    model = build_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels)
    original = copy.deepcopy(model)
    if variant == "parareal":
        x = next(iter(data.train))[0][:8]
        net: nn.Module = parareal_network(model, 2, balance="flops", example_input=x)
    elif variant == "original":
        net = original
    elif variant == "ddp":
        net = MicroBatchBN(original, 2, "first")
    else:
        net = MicroBatchBN(original, int(variant.removeprefix("micro")), "all")
    t0 = time.perf_counter()
    res = fit(net, data.train, data.test, cfg, label=variant, progress=False, log=None)
    return {
        "dataset": dataset,
        "model": model_name,
        "seed": seed,
        "variant": variant,
        "epochs": cfg.epochs,
        "test_accuracy": res.test_accuracy,
        "time_s": time.perf_counter() - t0,
    }


def _share(jobs: list[tuple], rank: int, world: int) -> list[tuple]:
    """This rank's jobs: the longest first, each to the rank with the least work so far."""
    weight = {"shapes": 4.8, "digits": 1.0}  # measured: 1500 vs 314 steps
    cost = {"resnet-small": 1.6}
    scale = {"micro2": 1.3, "ddp": 1.4, "micro4": 1.9, "micro8": 2.5}

    def w(j: tuple) -> float:
        return weight[j[0]] * cost.get(j[1], 1.0) * scale.get(j[3], 1.0)

    load = [0.0] * world
    mine = []
    for j in sorted(jobs, key=w, reverse=True):
        r = min(range(world), key=load.__getitem__)
        load[r] += w(j)
        if r == rank:
            mine.append(j)
    return mine


# ----------------------------------------------------------------------------- worker


def worker(
    rank: int, world: int, port: int | None, args: argparse.Namespace, out_dir: str | None
) -> list[dict[str, Any]] | None:
    """One of the two Gloo processes: checks, timing, memory, bandwidth, accuracy jobs.
    Returns every rank's results on rank 0 (and pickles them into ``out_dir`` if given);
    ``port`` None: the rendezvous is already in the environment (torchrun)."""
    if port is not None:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(minutes=60)
    )
    res: dict[str, Any] = {"rank": rank, "configs": {}}
    try:
        if args.check or args.quick:
            if rank == 0:
                _log("correctness checks (float64, small VGG)")
            res["checks"] = run_checks(rank)
        if not args.check_only:
            res["bandwidth"] = allreduce_bandwidth(rank)
            configs = QUICK if args.quick else CONFIGS
            for name in args.configs:
                cfg = configs[name]
                x, y = _batch(cfg)
                if rank == 0:
                    _log(f"{name}: building the variants")
                variants, cut = build_variants(cfg, rank, x, y, args.balance)
                times, idle = timed_rounds(variants, rank, args.reps, args.warmup, name)
                mem = {}
                for n, v in variants.items():
                    dist.barrier()
                    if v.step is not None:
                        mem[n] = memory_of(v)
                res["configs"][name] = {"cut": cut, "times": times, "idle_cpu": idle, "mem": mem}
                del variants
            jobs = [
                (ds, m, s, v) for ds, m in args.plan for s in args.seeds for v in args.acc_variants
            ]
            mine = _share(jobs, rank, world)
            res["accuracy"] = []
            for i, job in enumerate(mine):
                r = accuracy_job(*job, args.epochs)
                res["accuracy"].append(r)
                _log(
                    f"rank {rank} accuracy {i + 1}/{len(mine)}: {' '.join(map(str, job))} "
                    f"{r['test_accuracy']:.2f}% ({r['time_s']:.0f} s)"
                )
        res["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, res)
        if rank == 0 and out_dir is not None:
            with open(os.path.join(out_dir, "ranks.pkl"), "wb") as fh:
                pickle.dump(gathered, fh)
    finally:
        dist.destroy_process_group()
    return gathered if rank == 0 else None


def run_ranks(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """Every rank's results: spawn the 2 Gloo processes, or, under torchrun (2 processes),
    be one of them (None on rank 1, which then has nothing more to do)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if int(os.environ["WORLD_SIZE"]) != 2:
            raise SystemExit("bench_parareal_vs.py runs on 2 processes: --nproc-per-node 2")
        return worker(int(os.environ["RANK"]), 2, None, args, None)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(2, free_port(), args, tmp), nprocs=2, join=True)
        with open(os.path.join(tmp, "ranks.pkl"), "rb") as fh:
            return pickle.load(fh)


# ----------------------------------------------------------------------------- results


def combine(ranks: list[dict[str, Any]], name: str, cfg: tuple) -> dict[str, Any]:
    """Per-round step times (max over ranks), ratios against both baselines, memory."""
    per = [r["configs"][name] for r in ranks]
    times: dict[str, list[float]] = {}
    for n in ROWS:
        cols = [p["times"][n] for p in per if p["times"][n]]
        times[n] = [max(ts) for ts in zip(*cols, strict=True)]
    batch = cfg[4]
    rows = {}
    for n, (label, procs, threads) in ROWS.items():
        med = statistics.median(times[n])
        q = _median_quartiles(times[n])
        mems = [p["mem"][n] for p in per if n in p["mem"]]
        r1 = _median_quartiles(_ratios(times, BASE_1, n))
        r2 = _median_quartiles(_ratios(times, BASE_2, n))
        rows[n] = {
            "label": label,
            "processes": procs,
            "threads_per_process": threads,
            "step_s": med,
            "step_quartiles_s": [q[1], q[2]],
            "samples_per_s": batch / med,
            "speedup_vs_original_1p": r1[0],
            "speedup_vs_original_1p_quartiles": [r1[1], r1[2]],
            "speedup_vs_original_2t": r2[0],
            "speedup_vs_original_2t_quartiles": [r2[1], r2[2]],
            "memory_per_rank": mems,
            "peak_memory_per_rank_bytes": max(m["total"] for m in mems),
            "all_s": times[n],
        }
        idle = [x for p in per for x in p["idle_cpu"][n]]
        if idle:
            rows[n]["idle_rank_cpu_share"] = statistics.median(idle)
    best_pipe = min(PIPELINES, key=lambda n: rows[n]["step_s"])
    vs_pipe = _median_quartiles(_ratios(times, best_pipe, "parareal_dist"))
    vs_ddp = _median_quartiles(_ratios(times, "ddp", "parareal_dist"))
    mem_ratio = (
        rows["parareal_dist"]["peak_memory_per_rank_bytes"]
        / rows[best_pipe]["peak_memory_per_rank_bytes"]
    )
    return {
        "config": name,
        "model": cfg[0],
        "depth": cfg[1],
        "width": cfg[2],
        "image_size": cfg[3],
        "batch_size": batch,
        "cut_point": per[0]["cut"],
        "rows": rows,
        "best_pipeline": best_pipe,
        "parareal_speedup_vs_best_pipeline": vs_pipe[0],
        "parareal_speedup_vs_best_pipeline_quartiles": [vs_pipe[1], vs_pipe[2]],
        "parareal_speedup_vs_ddp": vs_ddp[0],
        "parareal_speedup_vs_ddp_quartiles": [vs_ddp[1], vs_ddp[2]],
        "parareal_memory_vs_best_pipeline": mem_ratio,
        "parareal_memory_vs_pipelines": {
            n: rows["parareal_dist"]["peak_memory_per_rank_bytes"]
            / rows[n]["peak_memory_per_rank_bytes"]
            for n in PIPELINES
        },
    }


def accuracy_summary(jobs: list[dict[str, Any]], reuse: dict[tuple, float]) -> dict[str, Any]:
    """Mean +- std test accuracy per (data set, model, variant) and the mean paired
    difference to the original over data sets, models and seeds."""
    acc: dict[tuple, float] = dict(reuse)
    for j in jobs:
        acc[(j["dataset"], j["model"], j["seed"], j["variant"])] = j["test_accuracy"]
    keys = sorted({(d, m) for d, m, _, _ in acc})
    seeds = sorted({s for _, _, s, _ in acc})
    out: dict[str, Any] = {"per_task": {}, "mean_difference_vs_original": {}}
    for v in ACC_VARIANTS:
        diffs = []
        for d, m in keys:
            vals = [acc[(d, m, s, v)] for s in seeds if (d, m, s, v) in acc]
            if not vals:
                continue
            out["per_task"].setdefault(f"{d}/{m}", {})[v] = {
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "seeds": len(vals),
            }
            diffs += [
                acc[(d, m, s, v)] - acc[(d, m, s, "original")]
                for s in seeds
                if (d, m, s, v) in acc and (d, m, s, "original") in acc
            ]
        if diffs:
            out["mean_difference_vs_original"][v] = statistics.fmean(diffs)
    measured = {j["variant"] for j in jobs}
    out["source"] = {
        k: "measured here" if k in measured else "accuracy_parareal.json"
        for k in {k[3] for k in acc}
    }
    return out


def reused_accuracy(plan: list[tuple[str, str]], seeds: list[int]) -> dict[tuple, float]:
    """Original and parareal accuracies from accuracy_parareal.json when its recipe is the
    one trained here (else nothing: measure them with ``--accuracy measure``)."""
    try:
        with open(ACCURACY_JSON) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    s = data.get("settings", {})
    same = (
        s.get("batch_size") == 32
        and s.get("lr") == 0.05
        and s.get("chunks") == 2
        and s.get("iterations") == 1
        and s.get("coarse") == "default"
        and s.get("epochs") is None
        and s.get("width") is None
    )
    if not same:
        _log(f"{ACCURACY_JSON} has another recipe: not reused")
        return {}
    out = {}
    for r in data.get("runs", []):
        if (r["dataset"], r["model"]) in plan and r["seed"] in seeds:
            for v in ("original", "parareal"):
                out[(r["dataset"], r["model"], r["seed"], v)] = r[v]["test_accuracy"]
    return out


# ----------------------------------------------------------------------------- cost model


@dataclass
class CostInputs:
    """What the cost model needs of one network, measured on one thread at batch ``batch``.

    Per block: forward + backward seconds, bytes saved for backward, parameter bytes,
    output bytes (an interface), and keys of its input and output (shape and sign, for
    the coarse network of a chunk that starts / ends there). ``eff[b]``: the whole
    network's time on b samples over (b / batch) x its time on the batch.
    """

    batch: int
    pre: float
    post: float
    pre_act: int
    post_act: int
    pre_params: int
    post_params: int
    cost: list[float]
    act: list[int]
    params: list[int]
    iface: list[int]
    in_key: list[tuple]
    out_key: list[tuple]
    eff: dict[int, float]
    coarse: dict[tuple, tuple[float, int, int]] = field(default_factory=dict)
    scale_time: float = 1.0
    scale_bytes: float = 1.0
    scale_params: float = 1.0

    def coarse_cost(self, a: int, b: int) -> tuple[float, int, int]:
        """Time, saved bytes and parameter bytes of the default coarse network of the
        chunk of blocks ``a..b-1`` (measured once per pair of shapes)."""
        key = (self.in_key[a], self.out_key[b - 1])
        if key not in self.coarse:
            (shape_in, _), (shape_out, nonneg) = key
            xi = torch.randn(self.batch, *shape_in)
            yo = torch.randn(2, *shape_out)
            yo = yo.abs() if nonneg else yo
            c = default_coarse(xi[:2], yo)
            params = _nbytes(c.parameters())
            with track_saved(list(c.parameters()), []) as tr:
                c.train()(xi)
            self.coarse[key] = (measure_time(c, xi, repeats=2), tr.peak, params)
        t, act, params = self.coarse[key]
        return t * self.scale_time, int(act * self.scale_bytes), int(params * self.scale_params)

    def efficiency(self, b: float) -> float:
        """Per-sample cost on ``b`` samples relative to the full batch (log-interpolated)."""
        pts = sorted(self.eff)
        if b <= pts[0]:
            return self.eff[pts[0]]
        if b >= pts[-1]:
            return self.eff[pts[-1]]
        for lo, hi in zip(pts, pts[1:], strict=False):
            if lo <= b <= hi:
                w = math.log(b / lo) / math.log(hi / lo)
                return self.eff[lo] ** (1 - w) * self.eff[hi] ** w
        return 1.0


def measure_cost_inputs(cfg: tuple, quick: bool) -> CostInputs:
    """Measure the cost model's inputs of ``cfg`` on one thread (see ``CostInputs``)."""
    torch.set_num_threads(1)
    model = _build(cfg)
    x, _ = _batch(cfg)
    batch = x.shape[0]
    d = decompose(model)
    cost, c_pre, c_post = block_costs(d, x, "time")
    mods = [d.pre, *d.blocks, d.post]
    acts, keys = [], []
    with train_mode(mods, False), torch.no_grad():  # shapes and signs on 2 samples
        u = x[:2]
        for m in mods:
            v = m(u)
            keys.append(
                (
                    (tuple(u.shape[1:]), bool((u >= 0).all())),
                    (tuple(v.shape[1:]), bool((v >= 0).all())),
                )
            )
            u = v
    work = copy.deepcopy(model).train()
    wd = decompose(work)
    u = x
    params = [p for p in work.parameters()]
    for m in [wd.pre, *wd.blocks, wd.post]:  # saved bytes of each piece, alone
        u = u.detach().requires_grad_(m is not wd.pre)
        with track_saved(params, []) as tr:
            u = m(u)
        acts.append(tr.peak)
    sizes = [b for b in (2, 4, 8, 16, 32, 64, 128) if b <= batch]  # BN needs 2 samples
    if quick:
        sizes = [s for s in sizes if s in (2, batch // 2, batch)]
    t_full = measure_time(model, x, repeats=1 if quick else 2)
    eff = {batch: 1.0}
    for b in sizes:
        if b != batch:
            eff[b] = measure_time(model, x[:b], repeats=1 if quick else 2) / (t_full * b / batch)
    per = [_nbytes(m.parameters()) for m in mods]
    iface = [int(math.prod(k[1][0]) * batch * x.element_size()) for k in keys[1:-1]]
    return CostInputs(
        batch=batch,
        pre=c_pre,
        post=c_post,
        pre_act=acts[0],
        post_act=acts[-1],
        pre_params=per[0],
        post_params=per[-1],
        cost=cost,
        act=acts[1:-1],
        params=per[1:-1],
        iface=iface,
        in_key=[k[0] for k in keys[1:-1]],
        out_key=[k[1] for k in keys[1:-1]],
        eff=eff,
    )


def scaled(
    ci: CostInputs, n0: int | None, n_new: int | None, w_ratio: float, speed: float = 1.0
) -> CostInputs:
    """``ci`` for a deeper (ResNet: ``n_new`` blocks per stage instead of ``n0``), wider
    (``w_ratio``) network on devices ``speed`` times faster: each stage's blocks past its
    first repeated at their mean; time x w_ratio^2 / speed, parameters x w_ratio^2,
    activations and interfaces x w_ratio."""
    out = copy.copy(ci)
    if n0 and n_new and n_new != n0:
        stages = len(ci.cost) // n0

        def rebuild(xs: list, mean: bool) -> list:
            res: list = []
            for s in range(stages):
                first, rest = xs[s * n0], xs[s * n0 + 1 : (s + 1) * n0] or [xs[s * n0]]
                fill = type(first)(statistics.fmean(rest)) if mean else rest[0]
                res += [first] + [fill] * (n_new - 1)
            return res

        out.cost, out.act = rebuild(ci.cost, True), rebuild(ci.act, True)
        out.params, out.iface = rebuild(ci.params, True), rebuild(ci.iface, False)
        out.in_key, out.out_key = rebuild(ci.in_key, False), rebuild(ci.out_key, False)
    t, p, b = w_ratio**2 / speed, w_ratio**2, w_ratio
    out.scale_time, out.scale_bytes, out.scale_params = t, b, p
    out.cost = [c * t for c in out.cost]
    out.act = [int(a * b) for a in out.act]
    out.params = [int(x * p) for x in out.params]
    out.iface = [int(i * b) for i in out.iface]
    out.pre, out.post = ci.pre * t, ci.post * t
    out.pre_act, out.post_act = int(ci.pre_act * b), int(ci.post_act * b)
    out.pre_params, out.post_params = int(ci.pre_params * p), int(ci.post_params * p)
    return out


def _ring(nbytes: float, n: int, bw: float, lat: float) -> float:
    """Ring all-reduce time of ``nbytes`` on ``n`` devices."""
    return 2 * (n - 1) / n * nbytes / bw + 2 * (n - 1) * lat


def model_step(ci: CostInputs, n: int, bw: float, lat: float) -> dict[str, Any]:
    """Modelled step time, speedup over one device and memory per device of parareal,
    the best pipeline and DDP on ``n`` devices (NaN where the method cannot use ``n``)."""
    nb = len(ci.cost)
    t1 = ci.pre + sum(ci.cost) + ci.post
    w_all = ci.pre_params + sum(ci.params) + ci.post_params
    a_all = ci.pre_act + sum(ci.act) + ci.post_act
    nan = float("nan")
    row: dict[str, Any] = {"N": n, "original_s": t1}
    # parareal, k = 1, the distributed executor (no overlap of the sweep)
    if n <= nb:
        cuts = balanced_cuts(ci.cost, n)
        bounds = [0, *cuts, nb]
        chunks = list(zip(bounds, bounds[1:], strict=False))
        cc = [ci.coarse_cost(a, b) for a, b in chunks]
        fine = [sum(ci.cost[a:b]) for a, b in chunks]
        exch = sum(ci.iface[b - 1] for a, b in chunks)
        t = ci.pre + ci.post + sum(c[0] for c in cc) + max(fine) + sum(c[0] for c in cc[1:])
        comm = 2 * _ring(exch, n, bw, lat)
        # the threads executor's schedule (chunk j starts when the sweep reaches it), which
        # the distributed executor does not have: what overlapping would give
        over = max(sum(c[0] for c in cc[:j]) + fine[j] + (cc[j][0] if j else 0) for j in range(n))
        row["parareal_overlapped_s"] = ci.pre + ci.post + over + sum(c[0] for c in cc[1:]) + comm
        t += comm
        w_c = sum(c[2] for c in cc)
        a_c = 2 * sum(c[1] for c in cc)  # each C_j runs twice (sweep, correction)
        own = [ci.pre_params + ci.post_params + w_c + sum(ci.params[a:b]) for a, b in chunks]
        act = [ci.pre_act + ci.post_act + a_c + sum(ci.act[a:b]) for a, b in chunks]
        row["parareal_s"] = t
        row["parareal_memory"] = max(w_all + w_c + 2 * o + a for o, a in zip(own, act, strict=True))
        row["parareal_memory_own_chunk_only"] = max(
            3 * o + a for o, a in zip(own, act, strict=True)
        )
    else:
        row["parareal_s"] = row["parareal_memory"] = row["parareal_memory_own_chunk_only"] = nan
        row["parareal_overlapped_s"] = nan
    # pipeline: stages = P + first blocks, ..., last blocks + Q; best M dividing the batch
    best = None
    if n <= nb:
        sc = list(ci.cost)
        sc[0] += ci.pre
        sc[-1] += ci.post
        cuts = balanced_cuts(sc, n)
        bounds = [0, *cuts, nb]
        stages = list(zip(bounds, bounds[1:], strict=False))
        t_stage = max(sum(sc[a:b]) for a, b in stages)
        iface = max(ci.iface[b - 1] for a, b in stages[:-1])
        m = 1
        while ci.batch / m >= 2:  # batch norm needs 2 samples per micro-batch
            if ci.batch % m == 0:
                b = ci.batch / m
                per_mb = t_stage / m * ci.efficiency(b) + 2 * (lat + iface / m / bw)
                t = (m + n - 1) * per_mb
                if best is None or t < best[0]:
                    best = (t, m)
            m *= 2
        t, m = best
        w_s = [
            sum(ci.params[a:b])
            + (ci.pre_params if a == 0 else 0)
            + (ci.post_params if b == nb else 0)
            for a, b in stages
        ]
        a_s = [
            sum(ci.act[a:b]) + (ci.pre_act if a == 0 else 0) + (ci.post_act if b == nb else 0)
            for a, b in stages
        ]
        row.update(
            pipeline_s=t,
            pipeline_M=m,
            pipeline_bubble=(n - 1) / (m + n - 1),
            gpipe_memory=max(3 * w + a for w, a in zip(w_s, a_s, strict=True)),
            onefoneb_memory=max(
                3 * w + a * min(m, n - s) / m for s, (w, a) in enumerate(zip(w_s, a_s, strict=True))
            ),
        )
    else:
        row.update(
            pipeline_s=nan,
            pipeline_M=None,
            pipeline_bubble=nan,
            gpipe_memory=nan,
            onefoneb_memory=nan,
        )
    # DDP: B / N samples per device, all-reduce of the gradients overlapped with backward
    if ci.batch / n >= 2:
        comp = t1 * ci.efficiency(ci.batch / n) / n
        comm = _ring(w_all, n, bw, lat)
        row["ddp_s"] = comp + max(0.0, comm - 2 / 3 * comp)
        row["ddp_s_no_overlap"] = comp + comm
        row["ddp_memory"] = 3 * w_all + a_all / n
    else:
        row["ddp_s"] = row["ddp_s_no_overlap"] = row["ddp_memory"] = nan
    for k in ("parareal", "pipeline", "ddp"):
        row[f"{k}_speedup"] = t1 / row[f"{k}_s"]
    return row


def _ranges(ns: list[int]) -> str:
    """``[2, 3, 4, 8]`` -> ``"2-4, 8"`` (over the grid NS)."""
    if not ns:
        return "none"
    out, start, prev = [], ns[0], ns[0]
    grid = list(NS)
    for n in ns[1:]:
        if grid.index(n) == grid.index(prev) + 1:
            prev = n
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = n
    out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def cost_model(
    inputs: dict[str, CostInputs], bandwidth: dict[str, float], quick: bool
) -> dict[str, Any]:
    """The modelled rows for every (config variant, scenario, N), and where parareal is
    faster than the best pipeline and than DDP."""
    out: dict[str, Any] = {"assumptions": [], "scenarios": {}, "variants": []}
    scen = {}
    for k, v in SCENARIOS.items():
        if v is None:
            v = (bandwidth["allreduce_bandwidth_Bps"], bandwidth["allreduce_latency_s"], 1.0)
        scen[k] = v
    out["scenarios"] = {
        k: {"bandwidth_Bps": b, "latency_s": a, "compute_speed": c} for k, (b, a, c) in scen.items()
    }
    for name, ci in inputs.items():
        preset, depth, width, _, _ = (QUICK if quick else CONFIGS)[name]
        n0 = (depth - 2) // 9 if preset == "resnet" and depth else None  # blocks per stage
        sweep = SWEEP[name] if not quick else [(f"{name} (measured)", depth, width)]
        for label, dep, w in sweep:
            n_stage = (dep - 2) // 9 if preset == "resnet" and dep else None
            for sname, (bw, lat, speed) in scen.items():
                var = scaled(ci, n0, n_stage, w / width, speed)
                rows = [model_step(var, n, bw, lat) for n in NS]

                def faster(other: str, rows: list = rows) -> list[int]:
                    return [r["N"] for r in rows if r["parareal_s"] < r[f"{other}_s"]]

                def best(k: str, rows: list = rows) -> dict[str, Any]:
                    ok = [
                        (r[f"{k}_speedup"], r["N"])
                        for r in rows
                        if not math.isnan(r[f"{k}_speedup"])
                    ]
                    s, n = max(ok, default=(float("nan"), None))
                    return {"speedup": s, "N": n}

                def max_n(k: str, rows: list = rows) -> int | None:
                    return max((r["N"] for r in rows if not math.isnan(r[f"{k}_s"])), default=None)

                kinds = ("parareal", "pipeline", "ddp")
                out["variants"].append(
                    {
                        "config": name,
                        "label": label,
                        "depth": dep,
                        "width": w,
                        "measured": dep == depth and w == width,
                        "scenario": sname,
                        "blocks": len(var.cost),
                        "rows": rows,
                        "parareal_faster_than_pipeline_at_N": faster("pipeline"),
                        "parareal_faster_than_ddp_at_N": faster("ddp"),
                        "best_speedup": {k: best(k) for k in kinds},
                        "max_N": {k: max_n(k) for k in kinds},
                    }
                )
    out["assumptions"] = [
        "compute: forward+backward seconds of every block measured on one CPU thread here; a "
        "device = one such core (gloo-here) or one 50x faster (the -gpu scenarios, an "
        "assumption); per-sample cost on B/M or B/N samples from the batch-size efficiency "
        "of the whole network measured here (a GPU loses more on small batches: this "
        "flatters DDP and many micro-batches there)",
        "parareal: k = 1, default coarse nets, cuts balanced by measured block time; step = "
        "P + Q + sum_j C_j (sweep) + max_j F_j + sum_{j>=1} C_j (correction) + 2 ring "
        "all-reduces of all chunk outputs (what the distributed executor exchanges); every "
        "rank holds all parameters (memory: + 2x grads of P, C, Q, F_j + activations of "
        "P, F_j, Q and of every C_j twice)",
        "pipeline: N stages balanced by time (P on the first, Q on the last), the M of "
        "1, 2, 4, ... dividing the batch with the smallest (M+N-1) x (max stage on B/M + "
        "2 p2p transfers of the interface); GPipe and 1F1B same time; memory 3x stage "
        "parameters + stage activations (GPipe: all M micro-batches; 1F1B: min(M, N-s))",
        "DDP: original on B/N samples + ring all-reduce of all parameter bytes, overlapped "
        "with the backward (2/3 of the step) as far as it fits (ddp_s_no_overlap: none); "
        "needs B/N >= 2 (batch norm); memory 3x parameters + activations of B/N samples",
        "deeper ResNets: each stage's blocks past the first repeated at their mean cost; "
        "wider: time and parameters x (w/w0)^2, activations and interfaces x w/w0",
        "N beyond the number of blocks (pipeline, parareal) or half the batch (DDP), and "
        "micro-batches under 2 samples: not possible (-)",
    ]
    return out


# ----------------------------------------------------------------------------- printing


def _fmt_q(v: float, q: list[float]) -> str:
    return f"{v:.2f}x [{q[0]:.2f}-{q[1]:.2f}]"


def _cell(x: float | None, width: int, digits: int = 2, suffix: str = "") -> str:
    """``x`` right-aligned in ``width`` characters, ``-`` for None / NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>{width}}"
    return f"{f'{x:.{digits}f}{suffix}':>{width}}"


def print_measured(r: dict[str, Any], acc: dict[str, Any] | None) -> None:
    """The measured table of one config."""
    print(
        f"\n{r['config']}: {r['model']} depth {r['depth'] or 16} width {r['width']}, "
        f"{r['image_size']}px, batch {r['batch_size']}; cut before block {r['cut_point']}"
    )
    diff = (acc or {}).get("mean_difference_vs_original", {})
    print(
        f"{'variant':15} {'procs':>5} {'step ms':>8} {'[quartiles]':>13} {'samples/s':>9} "
        f"{'vs orig 1 proc':>19} {'vs orig 2 thr':>19} {'MiB/rank':>8} {'acc diff':>8}"
    )
    for n, row in r["rows"].items():
        q = row["step_quartiles_s"]
        quart = f"[{1e3 * q[0]:.0f}-{1e3 * q[1]:.0f}]"
        v1 = _fmt_q(row["speedup_vs_original_1p"], row["speedup_vs_original_1p_quartiles"])
        v2 = _fmt_q(row["speedup_vs_original_2t"], row["speedup_vs_original_2t_quartiles"])
        print(
            f"{row['label']:15} {row['processes']:>3}x{row['threads_per_process']} "
            f"{1e3 * row['step_s']:>8.1f} {quart:>13} {row['samples_per_s']:>9.1f} "
            f"{v1:>19} {v2:>19} {row['peak_memory_per_rank_bytes'] / 2**20:>8.1f} "
            f"{_cell(diff.get(ACC_OF_ROW[n]), 8, 2)}"
        )
    idle = [
        row["idle_rank_cpu_share"] for row in r["rows"].values() if "idle_rank_cpu_share" in row
    ]
    if idle:
        print(
            f"  1-process rows ran on rank 0 while rank 1 waited in a barrier, using "
            f"{100 * max(idle):.0f}% of a core at most"
        )


def print_goals(r: dict[str, Any], acc: dict[str, Any] | None) -> None:
    """The goals of the issue, plainly, for one config."""
    rows = r["rows"]
    bp = r["best_pipeline"]
    sp = r["parareal_speedup_vs_best_pipeline"]
    q = r["parareal_speedup_vs_best_pipeline_quartiles"]
    verdict = "no slower" if sp >= 1.0 else ("slower, within noise" if q[1] >= 1.0 else "SLOWER")
    print(
        f"  goal, step: parareal dist vs the best pipeline ({rows[bp]['label']}) "
        f"{_fmt_q(sp, q)} (> 1: parareal faster): {verdict}"
    )
    mr = r["parareal_memory_vs_best_pipeline"]
    pm = rows["parareal_dist"]["memory_per_rank"]
    own = max(m.get("total_if_own_chunk_only", m["total"]) for m in pm)
    own_ratio = own / rows[bp]["peak_memory_per_rank_bytes"]
    others = ", ".join(
        f"{rows[n]['label']} {r['parareal_memory_vs_pipelines'][n]:.2f}" for n in PIPELINES
    )
    print(
        f"  goal, memory: parareal / {rows[bp]['label']} per rank {mr:.2f} "
        f"({'within' if mr <= 1.1 else 'NOT within'} 10%); {own_ratio:.2f} if each rank "
        f"dropped the parameters of the chunk it does not run (vs each: {others})"
    )
    d = (acc or {}).get("mean_difference_vs_original", {}).get("parareal")
    if d is not None:
        print(
            f"  goal, accuracy: parareal - original {d:+.2f} points "
            f"({'within' if d >= -1 else 'NOT within'} 1 point)"
        )
    sd, qd = r["parareal_speedup_vs_ddp"], r["parareal_speedup_vs_ddp_quartiles"]
    ddp_mem = rows["ddp"]["peak_memory_per_rank_bytes"]
    par_mem = rows["parareal_dist"]["peak_memory_per_rank_bytes"]
    who = "DDP is faster" if sd < 1 else "parareal is faster"
    print(
        f"  vs DDP: parareal {_fmt_q(sd, qd)}: {who}; per rank parareal "
        f"{par_mem / 2**20:.1f} MiB, DDP {ddp_mem / 2**20:.1f} MiB"
    )
    half = rows[BASE_1]["step_s"] / 2
    print(
        "  what parareal trades: no bubble (2 stages idle (N-1)/(M+N-1) = 1/3, 1/5, 1/9 at "
        "M = 2, 4, 8) and no gradient all-reduce, for P, Q and every C_j run on every rank; "
        f"step over half the original's: parareal {rows['parareal_dist']['step_s'] / half:.2f}"
        f", {rows[bp]['label']} {rows[bp]['step_s'] / half:.2f}, DDP "
        f"{rows['ddp']['step_s'] / half:.2f}"
    )


def print_accuracy(acc: dict[str, Any]) -> None:
    """Test accuracy per task and variant, and the mean difference to the original."""
    src = ", ".join(f"{k}: {v}" for k, v in sorted(acc["source"].items()))
    print(f"\nAccuracy after the same epochs (test %, mean +- std over seeds; {src})")
    tasks = list(acc["per_task"])
    print(f"{'variant':9} " + " ".join(f"{t:>20}" for t in tasks) + f" {'mean diff':>9}")
    for v in ACC_VARIANTS:
        cells = []
        for t in tasks:
            c = acc["per_task"][t].get(v)
            cells.append("n/m" if c is None else f"{c['mean']:.2f} +- {c['std']:.2f}")
        d = acc["mean_difference_vs_original"].get(v)
        print(f"{v:9} " + " ".join(f"{c:>20}" for c in cells) + " " + _cell(d, 9, 2))
    print(
        "  ddp: batch norm per half, rank 0's running statistics; microM: per micro-batch, "
        "running statistics updated by each (GPipe and 1F1B with M micro-batches); n/m: not "
        "measured"
    )


def _print_model_rows(v: dict[str, Any]) -> None:
    print(f"\n{v['label']} ({v['blocks']} blocks), scenario {v['scenario']}")
    print(
        f"{'N':>3} {'parareal':>9} {'MiB':>6} {'pipeline':>9} {'M':>3} {'bubble':>6} "
        f"{'MiB GPipe':>9} {'MiB 1F1B':>8} {'DDP':>7} {'MiB':>6}"
    )
    for r in v["rows"]:
        if all(math.isnan(r[f"{k}_s"]) for k in ("parareal", "pipeline", "ddp")):
            continue
        mib = {
            k: r[k] / 2**20
            for k in ("parareal_memory", "gpipe_memory", "onefoneb_memory", "ddp_memory")
        }
        print(
            f"{r['N']:>3} {_cell(r['parareal_speedup'], 9, 2, 'x')} "
            f"{_cell(mib['parareal_memory'], 6, 0)} {_cell(r['pipeline_speedup'], 9, 2, 'x')} "
            f"{r['pipeline_M'] or '-':>3} {_cell(r['pipeline_bubble'], 6, 2)} "
            f"{_cell(mib['gpipe_memory'], 9, 0)} {_cell(mib['onefoneb_memory'], 8, 0)} "
            f"{_cell(r['ddp_speedup'], 7, 2, 'x')} {_cell(mib['ddp_memory'], 6, 0)}"
        )


def print_cost_model(cm: dict[str, Any]) -> None:
    """The assumptions, the per-N rows of the measured networks, and the crossovers."""
    print("\nCost model: speedup of a step over 1 device, memory per device (MiB).")
    for a in cm["assumptions"]:
        print(f"  - {a}")
    for k, sc in cm["scenarios"].items():
        print(
            f"  scenario {k}: {sc['bandwidth_Bps'] / 1e9:.2f} GB/s, "
            f"{1e6 * sc['latency_s']:.0f} us latency, compute {sc['compute_speed']:g}x "
            "one core here"
        )
    for v in cm["variants"]:
        if v["measured"] and v["scenario"] in ("gloo-here", "nvlink-gpu"):
            _print_model_rows(v)
    print(
        "\nWhere parareal is faster (N of " + ",".join(map(str, NS)) + " where both run; "
        "best speedup@N; N max: the most devices each can use)"
    )
    print(
        f"{'network':17} {'scenario':10} {'> pipeline':>11} {'> DDP':>9} {'parareal':>10} "
        f"{'pipeline':>10} {'DDP':>10} {'N max p/pipe/DDP':>17}"
    )
    for v in cm["variants"]:
        b = v["best_speedup"]

        def bs(k: str, b: dict = b) -> str:
            return "-" if b[k]["N"] is None else f"{b[k]['speedup']:.1f}x@{b[k]['N']}"

        nmax = "/".join(str(v["max_N"][k] or "-") for k in ("parareal", "pipeline", "ddp"))
        print(
            f"{v['label']:17} {v['scenario']:10} "
            f"{_ranges(v['parareal_faster_than_pipeline_at_N']):>11} "
            f"{_ranges(v['parareal_faster_than_ddp_at_N']):>9} {bs('parareal'):>10} "
            f"{bs('pipeline'):>10} {bs('ddp'):>10} {nmax:>17}"
        )


def _clean(x: Any) -> Any:
    """JSON-safe: NaN and inf become null, tuples lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def plot_cost_model(cm: dict[str, Any], path: str) -> None:
    """Speedup over one device against N for every network and scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(v["label"] for v in cm["variants"]))
    scen = list(cm["scenarios"])
    fig, axes = plt.subplots(
        len(labels), len(scen), figsize=(4 * len(scen), 3 * len(labels)), squeeze=False
    )
    for v in cm["variants"]:
        ax = axes[labels.index(v["label"])][scen.index(v["scenario"])]
        for k, style in (("parareal", "o-"), ("pipeline", "s--"), ("ddp", "^:")):
            ax.plot(
                [r["N"] for r in v["rows"]],
                [r[f"{k}_speedup"] for r in v["rows"]],
                style,
                label=k,
                ms=3,
            )
        ax.set_xscale("log", base=2)
        ax.set_title(f"{v['label']}, {v['scenario']}", fontsize=8)
        ax.set_xlabel("N devices")
        ax.set_ylabel("speedup")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--reps", type=int, default=12, help="timed rounds (default 12)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument(
        "--balance",
        default="flops",
        choices=("flops", "blocks"),
        help="cut of the parareal network, and so of the pipeline (default flops)",
    )
    p.add_argument(
        "--accuracy",
        default="reuse",
        choices=("reuse", "measure", "skip"),
        help="reuse: original and parareal from accuracy_parareal.json, train the "
        "DDP and micro-batch variants; measure: train all; skip",
    )
    p.add_argument(
        "--acc-variants",
        nargs="+",
        default=None,
        choices=ACC_VARIANTS,
        help="accuracy variants to train (default: ddp micro4 micro8, plus "
        "original and parareal with --accuracy measure)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="override the per-dataset epochs")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny models, 3 rounds, 1-epoch accuracy on digits, the checks",
    )
    p.add_argument("--check", action="store_true", help="run the correctness checks too")
    p.add_argument("--check-only", action="store_true", help="only the correctness checks")
    p.add_argument("--no-cost-model", action="store_true")
    p.add_argument("--plot", default=None, metavar="PNG", help="cost-model curves")
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="default benchmarks/results/bench_parareal_vs.json; none with --quick",
    )
    args = p.parse_args(argv)
    args.check = args.check or args.check_only
    if args.json is None and not (args.quick or args.check_only):
        args.json = DEFAULT_JSON
    if args.quick:
        args.reps, args.warmup = 3, 1
        args.seeds, args.epochs = [0], args.epochs or 1
        args.plan = [("digits", "vgg-small")]
    else:
        args.plan = list(PLAN)
    if args.acc_variants is None:
        extra = ("original", "parareal") if args.accuracy == "measure" or args.quick else ()
        args.acc_variants = [*extra, "ddp", "micro4", "micro8"]
        if args.quick:
            args.acc_variants = list(ACC_VARIANTS)
    if args.accuracy == "skip":
        args.acc_variants = []
    configs = QUICK if args.quick else CONFIGS
    t_all = time.perf_counter()
    out: dict[str, Any] = {
        "machine": {
            "cpu_cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "settings": {k: v for k, v in vars(args).items() if k != "plan"},
        "plan": args.plan,
    }
    ranks = run_ranks(args)
    if ranks is None:
        return 0
    ok = True
    if "checks" in ranks[0]:
        checks = [r["checks"] for r in ranks]
        ok = _check_ok(checks)
        out["checks"] = {"ok": ok, "rank0": checks[0], "rank1": checks[1]}
        print_checks(checks, ok)
    if args.check_only:
        _write(out, args.json)
        return 0 if ok else 1
    acc = None
    if args.acc_variants or args.accuracy == "reuse":
        same_recipe = args.accuracy == "reuse" and args.epochs is None and not args.quick
        reuse = reused_accuracy(args.plan, args.seeds) if same_recipe else {}
        jobs = [j for r in ranks for j in r.get("accuracy", [])]
        if jobs or reuse:
            acc = accuracy_summary(jobs, reuse)
            acc["jobs"] = jobs
            out["accuracy"] = acc
    out["bandwidth"] = ranks[0]["bandwidth"]
    out["maxrss_kib"] = [r["maxrss_kib"] for r in ranks]
    out["measured"] = [combine(ranks, name, configs[name]) for name in args.configs]
    print(
        f"\nOne training step, {args.reps} interleaved rounds: median [quartiles] of step "
        "time and of the per-round ratios (speedup > 1 = faster than the baseline); 2-process "
        "rows on 2 Gloo processes x 1 thread (max over ranks); 1-process rows on rank 0 with "
        "the other core idle. MiB/rank: peak saved activations + parameters held + 2x "
        "gradients. acc diff: mean test-accuracy difference to the original (points)."
    )
    for r in out["measured"]:
        print_measured(r, acc)
        print_goals(r, acc)
    if acc:
        print_accuracy(acc)
    bw = out["bandwidth"]
    print(
        f"\nGloo here: all-reduce {bw['allreduce_bandwidth_Bps'] / 1e9:.2f} GB/s, "
        f"{1e6 * bw['allreduce_latency_s']:.0f} us; send/recv "
        f"{bw['p2p_bandwidth_Bps'] / 1e9:.2f} GB/s, {1e6 * bw['p2p_latency_s']:.0f} us"
    )
    if not args.no_cost_model:
        _log("cost model: measuring block costs on one thread")
        inputs = {name: measure_cost_inputs(configs[name], args.quick) for name in args.configs}
        cm = cost_model(inputs, bw, args.quick)
        out["cost_model"] = cm
        print_cost_model(cm)
        if args.plot:
            plot_cost_model(cm, args.plot)
    out["time_s"] = time.perf_counter() - t_all
    print(f"\ntotal {out['time_s']:.0f} s")
    _write(out, args.json)
    return 0 if ok else 1


def _write(out: dict[str, Any], path: str | None) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(_clean(out), fh, indent=2, allow_nan=False)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
