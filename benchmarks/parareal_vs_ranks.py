"""The two Gloo processes of bench_parareal_vs.py: not a benchmark (no ``main``).

Each rank builds every timed variant (its share of the DDP batch, its pipeline stage,
its parareal chunk; the 1-process rows on rank 0 only), times them in interleaved rounds,
measures their peak memory with ``torchpint.common.memory.track_saved`` and the Gloo
link, runs the float64 correctness checks and its share of the accuracy trainings, and
gathers everything on rank 0 (``run_ranks``). bench_parareal_vs.py turns that into the
tables, the accuracy summary and the cost model.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import pickle
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from common import CONFIGS, QUICK, batch, build, log, recipe, step_fn  # on sys.path
from torchpint.common.memory import tensor_bytes, track_saved
from torchpint.common.microbatch import MicroBatchBN
from torchpint.common.modules import train_mode
from torchpint.models import build_model
from torchpint.parareal import decompose, parareal_network
from torchpint.testing import free_port

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

    model = build(cfg)
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
        step_fn(par, x, y),
        1,
        holds=[par],
        needs=[d.pre, d.fine[rank], *d.coarse, d.post],
    )
    half = x.shape[0] // 2
    sl = slice(rank * half, (rank + 1) * half)
    ddp = DDP(copy.deepcopy(model), gradient_as_bucket_view=True)
    out["ddp"] = Variant("ddp", step_fn(ddp, x[sl], y[sl]), 1, holds=[ddp])
    mid = _stage_io(split_stages(copy.deepcopy(model), cut)[0], x)
    for name in PIPELINES:
        kind, m = name.split("_m")
        stage = split_stages(copy.deepcopy(model), cut)[rank]
        step = pipeline_step(stage, rank, x, y, int(m), kind, mid)
        out[name] = Variant(name, step, 1, holds=[stage])
    # the one-process rows: built and run on rank 0 only
    solo = rank == 0
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    out["original_1p"] = Variant(BASE_1, step_fn(m1, x, y) if solo else None, 1, [m1])
    out["original_2t"] = Variant(BASE_2, step_fn(m2, x, y) if solo else None, 2, [m2])
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
        step_fn(thr, x, y) if thr is not None else None,
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
            log(f"{tag}: round {r + 1}/{warmup + reps}" + (" (warm-up)" if r < warmup else ""))
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
    held = tensor_bytes(params.values())
    g = tensor_bytes(grads)
    need_params = {id(p): p for m in v.needs for p in m.parameters()}
    out = {
        "activations": tr.peak,
        "params": held,
        "grads": g,
        "momentum": g,  # SGD keeps one momentum buffer per parameter that gets a gradient
        "total": tr.peak + held + 2 * g,
    }
    if v.needs:
        out["total_if_own_chunk_only"] = tr.peak + tensor_bytes(need_params.values()) + 2 * g
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


def _reference(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, parts: int, stats: str
) -> tuple[float, nn.Module, list[torch.Tensor]]:
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


def checks_ok(checks: list[dict[str, Any]], tol: float = 1e-10) -> bool:
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


def accuracy_job(
    dataset: str, model_name: str, seed: int, variant: str, epochs: int | None
) -> dict[str, Any]:
    """Test accuracy of one (data set, model, seed, variant) after the recipe of
    accuracy_parareal.py (SGD 0.05, momentum 0.9, wd 5e-4, cosine, batch 32)."""
    from torchpint.trainer import fit

    data, cfg, model = recipe(dataset, model_name, seed, epochs)
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
                log("correctness checks (float64, small VGG)")
            res["checks"] = run_checks(rank)
        if not args.check_only:
            res["bandwidth"] = allreduce_bandwidth(rank)
            configs = QUICK if args.quick else CONFIGS
            for name in args.configs:
                cfg = configs[name]
                x, y = batch(cfg)
                if rank == 0:
                    log(f"{name}: building the variants")
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
                log(
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


