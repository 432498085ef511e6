"""Executors: how the fine chunks F_j(lambda_{j-1}) of one parareal iteration are run.

All executors compute the same thing as ``serial``; they differ in where the chunks run:

- ``serial``: one after the other, plain autograd (the reference);
- ``threads``: one Python thread per chunk on the CPU, forward and backward (torch ops
  release the GIL; a custom autograd function runs each chunk's backward in its thread);
  in iteration 0 the coarse sweep overlaps the chunks instead of preceding them;
- ``devices``: chunk j on ``devices[j]`` in one process; kernels launch asynchronously, and
  the autograd engine runs each device's backward on its own thread;
- ``distributed``: rank j of a torch.distributed group runs chunk j; the chunk outputs and
  the gradients of their inputs are exchanged by one all-reduce each way.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from torchpint.parareal.network import PararealNetwork

EXECUTORS = ("serial", "threads", "devices", "distributed")


class Executor:
    """Runs the active fine chunks: ``run(net, {j: lambda_j}) -> {j: F_j(lambda_j)}``."""

    name = "serial"
    overlaps_sweep = False  # True: ``first_iteration`` runs iteration 0 with the sweep

    def setup(self, net: PararealNetwork) -> None:
        """Check the network and place its modules; called by ``set_executor``."""

    def run(
        self, net: PararealNetwork, inputs: dict[int, torch.Tensor], like: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        """``{j: F_j(inputs[j])}``; ``like[j]`` has the shape and dtype of that output."""
        return {j: net.fine[j](x) for j, x in inputs.items()}

    def owns(self, j: int) -> bool:
        """Whether this process computes chunk ``j`` (all of them except when distributed)."""
        return True

    def __deepcopy__(self, memo: dict) -> Executor:
        return self._clone()

    def _clone(self) -> Executor:
        return type(self)()

    def __getstate__(self) -> dict:
        raise TypeError(f"the {self.name!r} executor cannot be pickled; set it again after")


class SerialExecutor(Executor):
    """The single-device reference."""


def _metas(js: tuple, like: dict[int, torch.Tensor]) -> list:
    return [(like[j].shape, like[j].dtype) for j in js]


def _trainable(m: nn.Module) -> list[torch.Tensor]:
    return [p for p in m.parameters() if p.requires_grad]


def _needs_grad(net: PararealNetwork, inputs: dict[int, torch.Tensor]) -> bool:
    if not torch.is_grad_enabled():
        return False
    if any(x.requires_grad for x in inputs.values()):
        return True
    return any(_trainable(net.fine[j]) for j in inputs)


class _FineStage(torch.autograd.Function):
    """The fine stage as one autograd node whose forward and backward the executor runs.

    Inputs: the chunk inputs, then the trainable parameters of the chunks this process
    computes. ``ex.forward`` returns the outputs and a state kept for ``ex.backward``.
    """

    @staticmethod
    def forward(
        ctx: Any, ex: Any, net: Any, js: tuple, metas: list, n_in: int, *tensors: torch.Tensor
    ):
        state, outs = ex._forward(net, js, metas, tensors[:n_in])
        ctx.ex, ctx.net, ctx.js, ctx.state = ex, net, js, state
        ctx.in_meta = [(x.shape, x.dtype, x.device) for x in tensors[:n_in]]
        ctx.n_params = len(tensors) - n_in
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None):
        in_grads, p_grads = ctx.ex._backward(ctx, grads)
        ctx.state = None  # free the chunk graphs
        assert len(p_grads) == ctx.n_params
        return (None, None, None, None, None, *in_grads, *p_grads)


def _chunk_forward(net: PararealNetwork, j: int, x: torch.Tensor) -> tuple:
    """Run chunk j with grad on a detached copy of its input: (input leaf, output)."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(x.requires_grad)
        return xi, net.fine[j](xi)


def _chunk_backward(
    net: PararealNetwork, j: int, xi: torch.Tensor, out: torch.Tensor, g: torch.Tensor | None
) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
    """Gradients of chunk j's input and trainable parameters for output gradient ``g``."""
    gx, by_id = _grads([out], [g], xi, [net.fine[j]])
    return gx, [by_id.get(id(p)) for p in _trainable(net.fine[j])]


def _unique_trainable(modules: list[nn.Module]) -> list[torch.Tensor]:
    """The trainable parameters of ``modules``, each once (C_j may share F_j's)."""
    seen: dict[int, torch.Tensor] = {}
    for m in modules:
        for p in _trainable(m):
            seen.setdefault(id(p), p)
    return list(seen.values())


def _grads(
    outs: list[torch.Tensor | None],
    gos: list[torch.Tensor | None],
    x: torch.Tensor,
    modules: list[nn.Module],
) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
    """Backpropagate ``gos`` through ``outs`` (both may hold None) to the leaf ``x`` and the
    trainable parameters of ``modules``: ``(grad of x or None, {id(param): grad})``."""
    pairs = [(o, g) for o, g in zip(outs, gos, strict=True) if o is not None and g is not None]
    pairs = [(o, g) for o, g in pairs if o.requires_grad]
    params = _unique_trainable(modules)
    wrt = ([x] if x.requires_grad else []) + params
    if not pairs or not wrt:
        return None, {}
    gs = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
    gx = gs[0] if x.requires_grad else None
    by_id = {id(p): g for p, g in zip(params, gs[len(gs) - len(params) :], strict=True)}
    return gx, {k: g for k, g in by_id.items() if g is not None}


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b


class _FirstIteration(torch.autograd.Function):
    """Iteration 0 of the threads executor as one autograd node (see
    ``ThreadsExecutor.first_iteration``). Inputs: ``u = P(x)``, then the trainable
    parameters of all F_j and C_j (each once); outputs: ``f_0..f_{N-1}, g_1..g_{N-1}``."""

    @staticmethod
    def forward(ctx: Any, ex: Any, net: Any, u: torch.Tensor, *params: torch.Tensor):
        state, f, g = ex._pipeline(net, u, grad=True)
        ctx.ex, ctx.net, ctx.state, ctx.params = ex, net, state, params
        return (*(t.detach() for t in f), *(t.detach() for t in g[1:]))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None):
        gu, by_id = ctx.ex._pipeline_backward(ctx.net, ctx.state, grads)
        ctx.state = None  # free the graphs
        return (None, None, gu, *(by_id.get(id(p)) for p in ctx.params))


class _Worker:
    """A daemon thread that runs submitted calls in order: one per chunk, so chunks never
    share a thread (a pool may hand two short tasks to one thread)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._loop, daemon=True, name="torchpint-chunk").start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            n, fn, args, fut = item
            try:
                if torch.get_num_threads() != n:  # OpenMP keeps the count per thread
                    torch.set_num_threads(n)
                fut.set_result(fn(*args))
            except BaseException as e:
                fut.set_exception(e)

    def stop(self) -> None:
        self._queue.put(None)

    def submit(self, n: int, fn: Any, *args: Any) -> Future:
        fut: Future = Future()
        self._queue.put((n, fn, args, fut))
        return fut


class ThreadsExecutor(Executor):
    """The chunks in parallel on CPU threads, forward and backward.

    Args:
        intra_op_threads: torch threads while the chunks run (set globally for that span,
            restored after). Default: the current count divided by the number of chunks
            running, at least 1, so N chunks on N cores do not oversubscribe.
        overlap: run iteration 0 with the coarse sweep overlapped (``first_iteration``);
            False runs the sweep first, as the other executors do (for comparisons).
    """

    name = "threads"

    def __init__(self, intra_op_threads: int | None = None, overlap: bool = True) -> None:
        self.intra_op_threads = intra_op_threads
        self.overlaps_sweep = overlap
        self._workers: list[_Worker] = []

    def _clone(self) -> Executor:
        return ThreadsExecutor(self.intra_op_threads, self.overlaps_sweep)

    def __del__(self) -> None:
        for w in getattr(self, "_workers", []):
            w.stop()

    def setup(self, net: PararealNetwork) -> None:
        for m in net.modules():
            for p in m.parameters(recurse=False):
                if p.device.type != "cpu":
                    raise ValueError(
                        "the 'threads' executor runs on the CPU; the network has parameters "
                        f"on {p.device}. Use executor='devices' for GPUs."
                    )

    def _ensure_workers(self, n: int) -> None:
        while len(self._workers) < n:
            self._workers.append(_Worker())

    @contextlib.contextmanager
    def _intra_op(self, running: int) -> Iterator[int]:
        """Set the torch thread count for ``running`` concurrent chunks; restore it after."""
        before = torch.get_num_threads()
        n = self.intra_op_threads or max(1, before // max(1, running))
        torch.set_num_threads(n)
        try:
            yield n
        finally:
            torch.set_num_threads(before)

    def _map(self, fn: Any, items: list) -> list:
        """``[fn(*item) for item in items]``, item 0 on this thread, item j on worker j."""
        self._ensure_workers(len(items) - 1)
        with self._intra_op(len(items)) as n:
            work = zip(self._workers[: len(items) - 1], items[1:], strict=True)
            futures = [w.submit(n, fn, *it) for w, it in work]
            first = fn(*items[0])
            return [first] + [f.result() for f in futures]

    def run(
        self, net: PararealNetwork, inputs: dict[int, torch.Tensor], like: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        js = tuple(inputs)
        if len(js) == 1:  # nothing to overlap
            return super().run(net, inputs, like)
        if not _needs_grad(net, inputs):
            grad = torch.is_grad_enabled()

            def fwd(j: int, x: torch.Tensor) -> torch.Tensor:
                with torch.set_grad_enabled(grad):
                    return net.fine[j](x)

            return dict(zip(js, self._map(fwd, [(j, inputs[j]) for j in js]), strict=True))
        params = [p for j in js for p in _trainable(net.fine[j])]
        outs = _FineStage.apply(self, net, js, _metas(js, like), len(js), *inputs.values(), *params)
        return dict(zip(js, outs, strict=True))

    def first_iteration(
        self, net: PararealNetwork, u: torch.Tensor
    ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Iteration 0 with the coarse sweep overlapped: ``({j: F_j(lam_j)}, {j: C_j(lam_j)})``
        for ``j >= 1`` in the second dict.

        F_0 starts on its thread as soon as ``u`` is known, while this thread runs the sweep
        ``lam_{j+1} = C_j(lam_j)`` and hands each chunk its input the moment it is ready;
        chunk j (j >= 1) also computes ``g_j = C_j(lam_j)`` on its own thread, and the last
        chunk runs on this thread after the sweep. Backward mirrors it: every chunk on its
        thread, then the sweep's backward here while chunk 0 may still be running. Forward
        values are the serial executor's bit for bit (same modules, same inputs); gradients
        are summed in another order, so they agree to rounding.
        """
        grad = torch.is_grad_enabled() and (
            u.requires_grad or bool(_unique_trainable([*net.fine, *net.coarse]))
        )
        if not grad:
            _, f, g = self._pipeline(net, u, grad=False)
        else:
            params = _unique_trainable([*net.fine, *net.coarse])
            outs = _FirstIteration.apply(self, net, u, *params)
            n = net.parts
            f, g = list(outs[:n]), [None, *outs[n:]]
        return dict(enumerate(f)), {j: g[j] for j in range(1, net.parts)}

    def _pipeline(self, net: PararealNetwork, u: torch.Tensor, grad: bool) -> tuple:
        n = net.parts
        self._ensure_workers(n - 1)

        def chunk(j: int, lam: torch.Tensor) -> tuple:
            with torch.set_grad_enabled(grad):
                x = lam.detach().requires_grad_(lam.requires_grad) if grad else lam
                return x, net.fine[j](x), net.coarse[j](x) if j else None

        with self._intra_op(n) as nt:
            futures = [self._workers[0].submit(nt, chunk, 0, u)]
            with torch.set_grad_enabled(grad):
                lam = [u.detach().requires_grad_(u.requires_grad) if grad else u]
                for j in range(1, n):
                    lam.append(net.coarse[j - 1](lam[-1]))
                    if j < n - 1:
                        futures.append(self._workers[j].submit(nt, chunk, j, lam[-1]))
            last = chunk(n - 1, lam[-1])
            res = [*(fut.result() for fut in futures), last]
        f = [r[1] for r in res]
        g = [r[2] for r in res]
        return (res, lam), f, g

    def _pipeline_backward(self, net: PararealNetwork, state: tuple, grads: tuple) -> tuple:
        (res, lam), n = state, net.parts
        gf, gg = grads[:n], (None, *grads[n:])

        def back(j: int) -> tuple:
            x, f, g = res[j]
            mods = [net.fine[j], net.coarse[j]] if j else [net.fine[j]]
            return _grads([f, g], [gf[j], gg[j]], x, mods)

        with self._intra_op(n) as nt:
            futures = [self._workers[j].submit(nt, back, j) for j in range(n - 1)]
            last = back(n - 1)
            done = [*(fut.result() for fut in futures[1:]), last]  # chunks 1..N-1
            # the sweep's backward while chunk 0 may still run
            gu, by_id = _grads(lam[1:], [d[0] for d in done], lam[0], list(net.coarse[: n - 1]))
            g0, by_id0 = futures[0].result()
        gu = _add(gu, g0)
        for _, d in [*done, (None, by_id0)]:
            for k, v in d.items():
                by_id[k] = _add(by_id.get(k), v)
        return gu, by_id

    def _forward(self, net: PararealNetwork, js: tuple, metas: list, xs: tuple) -> tuple:
        res = self._map(lambda j, x: _chunk_forward(net, j, x), list(zip(js, xs, strict=True)))
        return res, [out.detach() for _, out in res]

    def _backward(self, ctx: Any, grads: tuple) -> tuple[list, list]:
        items = [(j, xi, out, g) for j, (xi, out), g in zip(ctx.js, ctx.state, grads, strict=True)]
        res = self._map(lambda j, xi, out, g: _chunk_backward(ctx.net, j, xi, out, g), items)
        in_grads = [r[0] for r in res]
        p_grads = [g for r in res for g in r[1]]
        return in_grads, p_grads


def _check_device(d: torch.device | str | int) -> torch.device:
    dev = torch.device(d)
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        idx = 0 if dev.index is None else dev.index
        if idx >= n:
            raise ValueError(
                f"device {dev} does not exist: this machine has {n} CUDA device(s)"
                + (f" (cuda:0..cuda:{n - 1})" if n else "")
            )
        return torch.device("cuda", idx)
    if dev.type == "cpu":
        return dev
    try:
        torch.empty(0, device=dev)
    except Exception as e:
        raise ValueError(f"device {dev} is not usable here: {e}") from e
    return dev


class DevicesExecutor(Executor):
    """Fine chunk j on ``devices[j]``; P, the coarse networks and Q on ``devices[0]``.

    Forward: each chunk's input is copied to its device and all chunks are launched before
    any result is copied back, so the devices compute at the same time. Backward: PyTorch's
    autograd engine has one thread per device, so the chunks' backward passes overlap too.
    ``devices=["cpu", "cpu"]`` runs the same code path on the CPU (without overlap).
    """

    name = "devices"

    def __init__(self, devices: list | tuple | None = None) -> None:
        if not devices:
            raise ValueError(
                "executor 'devices' needs devices=[...], one per chunk, e.g. ['cuda:0', 'cuda:1']"
            )
        self.devices = [_check_device(d) for d in devices]

    def _clone(self) -> Executor:
        return DevicesExecutor(self.devices)

    def setup(self, net: PararealNetwork) -> None:
        if len(self.devices) != net.parts:
            raise ValueError(
                f"executor 'devices' needs one device per chunk: {net.parts} chunks, "
                f"{len(self.devices)} devices given ({[str(d) for d in self.devices]})"
            )
        main = self.devices[0]
        net.pre.to(main)
        net.post.to(main)
        net.coarse.to(main)
        for j, f in enumerate(net.fine):
            f.to(self.devices[j])

    def run(
        self, net: PararealNetwork, inputs: dict[int, torch.Tensor], like: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        outs = {}
        home = {}
        for j, x in inputs.items():  # launch everything first
            home[j] = x.device
            outs[j] = net.fine[j](x.to(self.devices[j], non_blocking=True))
        # non-blocking only towards a GPU: a CPU result must be complete when returned
        return {j: o.to(home[j], non_blocking=home[j].type == "cuda") for j, o in outs.items()}


class DistributedExecutor(Executor):
    """Rank j of ``group`` (default: the world) computes fine chunk j.

    Every rank runs P, the coarse sweeps and Q redundantly on the same batch (they are
    cheap), so every rank returns the same output. Each iteration exchanges the chunk
    outputs with one all-reduce (every rank fills only its own slot, so the sum is exact),
    and the backward exchanges the gradients of the chunk inputs the same way. Nothing is
    summed over ranks: every rank computes the same loss, so the gradient each rank receives
    for its chunk's output is already the full one (no world-size factor).

    After ``backward`` rank j holds the gradients of P, of all coarse networks, of Q and of
    F_j; the other fine chunks' parameters get no gradient there and are not updated by
    the optimizer, which is fine since rank j never runs them. Call
    ``PararealNetwork.synchronize()`` before saving or evaluating a single replica.
    """

    name = "distributed"

    def __init__(self, group: Any = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "executor 'distributed' needs torch.distributed initialised "
                "(dist.init_process_group, e.g. under torchrun)"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def _clone(self) -> Executor:
        return DistributedExecutor(self.group)

    def owns(self, j: int) -> bool:
        return j == self.rank

    def _device(self, net: PararealNetwork) -> torch.device:
        p = next(net.fine[self.rank].parameters(), None)
        if p is not None:
            return p.device
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def setup(self, net: PararealNetwork) -> None:
        if self.world != net.parts:
            raise ValueError(
                f"executor 'distributed' runs one fine chunk per rank: the network has "
                f"{net.parts} chunks but the group has {self.world} ranks"
            )
        # every rank must have cut the network in the same place
        mine = torch.tensor([b for r in net.block_ranges for b in r], dtype=torch.long)
        dev = self._device(net)
        mine = mine.to(dev)
        allr = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(allr, mine, group=self.group)
        if any(not torch.equal(a, mine) for a in allr):
            raise ValueError(
                "ranks split the network differently "
                f"({[a.tolist() for a in allr]}); pass cut_points=... or balance='flops' "
                "so every rank gets the same chunks"
            )

    def _exchange(self, parts: dict[int, torch.Tensor | None], metas: list, dev: Any) -> list:
        """All ranks get every part; the owner of part i fills slot i, the others zeros."""
        sizes = [int(torch.Size(s).numel()) for s, _ in metas]
        dtype = metas[0][1]
        buf = torch.zeros(sum(sizes), dtype=dtype, device=dev)
        offs = [0]
        for s in sizes:
            offs.append(offs[-1] + s)
        for i, t in parts.items():
            if t is not None:
                buf[offs[i] : offs[i + 1]].copy_(t.reshape(-1))
        dist.all_reduce(buf, group=self.group)
        return [buf[offs[i] : offs[i + 1]].view(metas[i][0]).clone() for i in range(len(metas))]

    def run(
        self, net: PararealNetwork, inputs: dict[int, torch.Tensor], like: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        js = tuple(inputs)
        mine = self.rank in inputs
        if not _needs_grad(net, inputs):
            out = {}
            if mine:
                out[js.index(self.rank)] = net.fine[self.rank](inputs[self.rank])
            res = self._exchange(out, _metas(js, like), next(iter(inputs.values())).device)
            return dict(zip(js, res, strict=True))
        params = _trainable(net.fine[self.rank]) if mine else []
        outs = _FineStage.apply(self, net, js, _metas(js, like), len(js), *inputs.values(), *params)
        return dict(zip(js, outs, strict=True))

    def _forward(self, net: PararealNetwork, js: tuple, metas: list, xs: tuple) -> tuple:
        state = None
        out = {}
        if self.rank in js:
            i = js.index(self.rank)
            xi, o = _chunk_forward(net, self.rank, xs[i])
            state = (i, xi, o)
            out[i] = o.detach()
        return state, self._exchange(out, metas, xs[0].device)

    def _backward(self, ctx: Any, grads: tuple) -> tuple[list, list]:
        p_grads: list = []
        local = {}
        if ctx.state is not None:
            i, xi, o = ctx.state
            gx, p_grads = _chunk_backward(ctx.net, self.rank, xi, o, grads[i])
            local[i] = gx
        dev = ctx.in_meta[0][2]
        metas = [(s, dt) for s, dt, _ in ctx.in_meta]
        in_grads = self._exchange(local, metas, dev)
        return in_grads, p_grads


def make_executor(name: str | Executor, devices: Any = None, group: Any = None) -> Executor:
    """An executor from its name (or pass one through)."""
    if isinstance(name, Executor):
        return name
    if name == "serial":
        return SerialExecutor()
    if name == "threads":
        return ThreadsExecutor()
    if name == "devices":
        return DevicesExecutor(devices)
    if name == "distributed":
        return DistributedExecutor(group)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
