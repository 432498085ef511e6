"""A cost model of one training step on N devices: parareal network, pipeline, DDP.

From costs measured once on one device (``measure_cost_inputs``: per-block forward +
backward time, bytes saved for backward, parameter and interface bytes, the coarse
networks' time, and how the per-sample cost grows on small batches), ``model_step``
predicts the step time, the speedup over one device and the memory per device of:

- parareal (k = 1, the ``distributed`` executor): P + Q + sum_j C_j (the sweep) +
  max_j F_j + sum_{j>=1} C_j (the correction) + 2 ring all-reduces of all chunk
  interfaces; every rank holds every parameter (also given: if it held its own chunk only);
- a pipeline (GPipe / 1F1B, stages balanced by time, the best M dividing the batch):
  (M + N - 1) x (max stage time on B/M samples + 2 point-to-point transfers), bubble
  (N-1)/(M+N-1); GPipe keeps all M micro-batches' activations, 1F1B at most N - s;
- DDP: the original on B/N samples + a ring all-reduce of the parameters, overlapped
  with the backward (2/3 of the step) as far as it fits.

``scaled`` turns the measured inputs into those of a deeper or wider network on faster
devices; ``compare`` sweeps N and says where parareal wins. Memory counts parameters x 3
(weights, gradients, SGD momentum) plus saved activations.
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchpint.common.memory import tensor_bytes, track_saved
from torchpint.common.modules import train_mode
from torchpint.parareal.coarse import default_coarse
from torchpint.parareal.costs import block_costs, measure_time
from torchpint.parareal.split import balanced_cuts, decompose

METHODS = ("parareal", "pipeline", "ddp")
# what ``model_step`` and ``scaled`` assume, in words (stored with a model's results)
ASSUMPTIONS = [
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


@dataclass
class CostInputs:
    """What the cost model needs of one network, measured on one device at batch ``batch``.

    Per block: forward + backward seconds, bytes saved for backward, parameter bytes,
    output bytes (an interface), and keys of its input and output (shape and sign, for
    the coarse network of a chunk that starts / ends there). ``eff[b]``: the whole
    network's time on b samples over (b / batch) x its time on the batch. ``scale_*``:
    the factors ``scaled`` applied (the coarse networks are measured unscaled).
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
        chunk of blocks ``a..b-1`` (measured once per pair of shapes, then cached)."""
        key = (self.in_key[a], self.out_key[b - 1])
        if key not in self.coarse:
            (shape_in, _), (shape_out, nonneg) = key
            xi = torch.randn(self.batch, *shape_in)
            yo = torch.randn(2, *shape_out)
            yo = yo.abs() if nonneg else yo
            c = default_coarse(xi[:2], yo)
            params = tensor_bytes(c.parameters())
            with track_saved(list(c.parameters())) as tr:
                c.train()(xi)
            self.coarse[key] = (measure_time(c, xi, repeats=2), tr.peak, params)
        t, act, params = self.coarse[key]
        return t * self.scale_time, int(act * self.scale_bytes), int(params * self.scale_params)

    def efficiency(self, b: float) -> float:
        """Per-sample cost on ``b`` samples relative to the full batch (log-interpolated
        between the measured sizes, constant beyond them)."""
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


def measure_cost_inputs(model: nn.Module, x: torch.Tensor, quick: bool = False) -> CostInputs:
    """Measure the cost model's inputs of ``model`` (laid out as P, blocks, Q) on the
    batch ``x``, in the calling thread's settings (see ``CostInputs``). ``quick``: fewer
    batch sizes and repeats. The model's weights and statistics are left untouched."""
    batch = x.shape[0]
    d = decompose(model)
    cost, c_pre, c_post = block_costs(d, x, "time")
    mods = [d.pre, *d.blocks, d.post]
    keys = []
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
    params = list(work.parameters())
    acts = []
    for m in [wd.pre, *wd.blocks, wd.post]:  # saved bytes of each piece, alone
        u = u.detach().requires_grad_(m is not wd.pre)
        with track_saved(params) as tr:
            u = m(u)
        acts.append(tr.peak)
    sizes = [b for b in (2, 4, 8, 16, 32, 64, 128) if b <= batch]  # BN needs 2 samples
    if quick:
        sizes = [s for s in sizes if s in (2, batch // 2, batch)]
    repeats = 1 if quick else 2
    t_full = measure_time(model, x, repeats=repeats)
    eff = {batch: 1.0}
    for b in sizes:
        if b != batch:
            eff[b] = measure_time(model, x[:b], repeats=repeats) / (t_full * b / batch)
    per = [tensor_bytes(m.parameters()) for m in mods]
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
    """``ci`` for a deeper (``n_new`` blocks per stage instead of ``n0``, the stages
    being ``len(ci.cost) // n0`` equal runs of blocks, as a ResNet's), wider (``w_ratio``)
    network on devices ``speed`` times faster: each stage's blocks past its first repeated
    at their mean; time x w_ratio^2 / speed, parameters x w_ratio^2, activations and
    interfaces x w_ratio."""
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


def ring_allreduce_time(nbytes: float, n: int, bandwidth: float, latency: float) -> float:
    """Seconds of a ring all-reduce of ``nbytes`` on ``n`` devices: 2(n-1)/n of the bytes
    over each link and 2(n-1) latencies."""
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency


def _parareal(ci: CostInputs, n: int, bw: float, lat: float) -> dict[str, float]:
    """Parareal, k = 1, on the distributed executor (no overlap of the sweep)."""
    nb = len(ci.cost)
    w_all = ci.pre_params + sum(ci.params) + ci.post_params
    bounds = [0, *balanced_cuts(ci.cost, n), nb]
    chunks = list(zip(bounds, bounds[1:], strict=False))
    cc = [ci.coarse_cost(a, b) for a, b in chunks]
    fine = [sum(ci.cost[a:b]) for a, b in chunks]
    exch = sum(ci.iface[b - 1] for a, b in chunks)
    comm = 2 * ring_allreduce_time(exch, n, bw, lat)
    t = ci.pre + ci.post + sum(c[0] for c in cc) + max(fine) + sum(c[0] for c in cc[1:])
    # the threads executor's schedule (chunk j starts when the sweep reaches it), which
    # the distributed executor does not have: what overlapping would give
    over = max(sum(c[0] for c in cc[:j]) + fine[j] + (cc[j][0] if j else 0) for j in range(n))
    w_c = sum(c[2] for c in cc)
    a_c = 2 * sum(c[1] for c in cc)  # each C_j runs twice (sweep, correction)
    own = [ci.pre_params + ci.post_params + w_c + sum(ci.params[a:b]) for a, b in chunks]
    act = [ci.pre_act + ci.post_act + a_c + sum(ci.act[a:b]) for a, b in chunks]
    return {
        "parareal_s": t + comm,
        "parareal_overlapped_s": ci.pre + ci.post + over + sum(c[0] for c in cc[1:]) + comm,
        "parareal_memory": max(w_all + w_c + 2 * o + a for o, a in zip(own, act, strict=True)),
        "parareal_memory_own_chunk_only": max(3 * o + a for o, a in zip(own, act, strict=True)),
    }


def _pipeline(ci: CostInputs, n: int, bw: float, lat: float) -> dict[str, Any]:
    """Stages = P + first blocks, ..., last blocks + Q; the best M dividing the batch."""
    nb = len(ci.cost)
    sc = list(ci.cost)
    sc[0] += ci.pre
    sc[-1] += ci.post
    bounds = [0, *balanced_cuts(sc, n), nb]
    stages = list(zip(bounds, bounds[1:], strict=False))
    t_stage = max(sum(sc[a:b]) for a, b in stages)
    iface = max(ci.iface[b - 1] for a, b in stages[:-1])
    best: tuple[float, int] | None = None
    m = 1
    while ci.batch / m >= 2:  # batch norm needs 2 samples per micro-batch
        if ci.batch % m == 0:
            per_mb = t_stage / m * ci.efficiency(ci.batch / m) + 2 * (lat + iface / m / bw)
            t = (m + n - 1) * per_mb
            if best is None or t < best[0]:
                best = (t, m)
        m *= 2
    assert best is not None, "a batch of at least 2 samples"
    t, m = best

    def held(xs: list[int], pre: int, post: int) -> list[int]:
        """Per stage: the sum over its blocks, plus P's on the first and Q's on the last."""
        return [sum(xs[a:b]) + (pre if a == 0 else 0) + (post if b == nb else 0)
                for a, b in stages]  # fmt: skip

    w_s = held(ci.params, ci.pre_params, ci.post_params)
    a_s = held(ci.act, ci.pre_act, ci.post_act)
    return {
        "pipeline_s": t,
        "pipeline_M": m,
        "pipeline_bubble": (n - 1) / (m + n - 1),
        "gpipe_memory": max(3 * w + a for w, a in zip(w_s, a_s, strict=True)),
        "onefoneb_memory": max(
            3 * w + a * min(m, n - s) / m for s, (w, a) in enumerate(zip(w_s, a_s, strict=True))
        ),
    }


def model_step(ci: CostInputs, n: int, bandwidth: float, latency: float) -> dict[str, Any]:
    """Modelled step time (``*_s``), speedup over one device (``*_speedup``) and memory
    per device in bytes (``*_memory``) of parareal, the best pipeline and DDP on ``n``
    devices linked by ``bandwidth`` bytes/s and ``latency`` s (NaN where the method cannot
    use ``n`` devices: more than the blocks, or fewer than 2 samples per device)."""
    nb = len(ci.cost)
    t1 = ci.pre + sum(ci.cost) + ci.post
    w_all = ci.pre_params + sum(ci.params) + ci.post_params
    a_all = ci.pre_act + sum(ci.act) + ci.post_act
    nan = float("nan")
    row: dict[str, Any] = {"N": n, "original_s": t1}
    if n <= nb:
        row.update(_parareal(ci, n, bandwidth, latency))
        row.update(_pipeline(ci, n, bandwidth, latency))
    else:
        nans = ("parareal_s", "parareal_overlapped_s", "parareal_memory",
                "parareal_memory_own_chunk_only", "pipeline_s", "pipeline_bubble",
                "gpipe_memory", "onefoneb_memory")  # fmt: skip
        row.update(dict.fromkeys(nans, nan))
        row["pipeline_M"] = None
    # DDP: B / N samples per device, all-reduce of the gradients overlapped with backward
    if ci.batch / n >= 2:
        comp = t1 * ci.efficiency(ci.batch / n) / n
        comm = ring_allreduce_time(w_all, n, bandwidth, latency)
        row["ddp_s"] = comp + max(0.0, comm - 2 / 3 * comp)
        row["ddp_s_no_overlap"] = comp + comm
        row["ddp_memory"] = 3 * w_all + a_all / n
    else:
        row["ddp_s"] = row["ddp_s_no_overlap"] = row["ddp_memory"] = nan
    for k in METHODS:
        row[f"{k}_speedup"] = t1 / row[f"{k}_s"]
    return row


def compare(
    ci: CostInputs, ns: list[int] | tuple[int, ...], bandwidth: float, latency: float
) -> dict[str, Any]:
    """``model_step`` at every N of ``ns``, and a summary: the N where parareal is faster
    than the pipeline and than DDP, each method's best speedup (and its N), and the most
    devices each can use."""
    rows = [model_step(ci, n, bandwidth, latency) for n in ns]

    def faster(other: str) -> list[int]:
        return [r["N"] for r in rows if r["parareal_s"] < r[f"{other}_s"]]

    def best(k: str) -> dict[str, Any]:
        ok = [(r[f"{k}_speedup"], r["N"]) for r in rows if not math.isnan(r[f"{k}_speedup"])]
        s, n = max(ok, default=(float("nan"), None))
        return {"speedup": s, "N": n}

    def max_n(k: str) -> int | None:
        return max((r["N"] for r in rows if not math.isnan(r[f"{k}_s"])), default=None)

    return {
        "rows": rows,
        "parareal_faster_than_pipeline_at_N": faster("pipeline"),
        "parareal_faster_than_ddp_at_N": faster("ddp"),
        "best_speedup": {k: best(k) for k in METHODS},
        "max_N": {k: max_n(k) for k in METHODS},
    }
