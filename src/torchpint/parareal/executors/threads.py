"""The ``threads`` executor: every chunk on its own CPU thread, forward and backward.

Torch ops release the GIL, and a custom autograd node runs each chunk's backward in its
thread. In iteration 0 the coarse sweep overlaps the chunks instead of preceding them.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import torch

from torchpint.parareal.executors._autograd import (
    add,
    chunk_backward,
    chunk_forward,
    fine_stage,
    grads,
    needs_grad,
    trainable,
    unique_trainable,
)
from torchpint.parareal.executors.base import Executor, Stages


class _FirstIteration(torch.autograd.Function):
    """Iteration 0 of the threads executor as one autograd node (see
    ``ThreadsExecutor.first_iteration``). Inputs: ``u = P(x)``, then the trainable
    parameters of all F_j and C_j (each once); outputs: ``f_0..f_{N-1}, g_1..g_{N-1}``."""

    @staticmethod
    def forward(ctx: Any, ex: Any, stages: Any, u: torch.Tensor, *params: torch.Tensor):
        state, f, g = ex._pipeline(stages, u, grad=True)
        ctx.ex, ctx.stages, ctx.state, ctx.params = ex, stages, state, params
        return (*(t.detach() for t in f), *(t.detach() for t in g[1:]))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None):
        gu, by_id = ctx.ex._pipeline_backward(ctx.stages, ctx.state, grads)
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
            n, fn, args, fut = self._queue.get()
            try:
                if torch.get_num_threads() != n:  # OpenMP keeps the count per thread
                    torch.set_num_threads(n)
                fut.set_result(fn(*args))
            except BaseException as e:
                fut.set_exception(e)

    def submit(self, n: int, fn: Any, *args: Any) -> Future:
        fut: Future = Future()
        self._queue.put((n, fn, args, fut))
        return fut


# One pool of chunk threads for the process, shared by every ThreadsExecutor and never
# stopped: a thread that ran torch ops and ended mid-run made the interpreter abort at exit
# ("terminate called without an active exception"), and executors come and go (tuning
# builds one per candidate split).
_POOL: list[_Worker] = []
_POOL_LOCK = threading.Lock()


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
        self._workers = _POOL

    def clone(self) -> Executor:
        return ThreadsExecutor(self.intra_op_threads, self.overlaps_sweep)

    def bind(self, stages: Stages) -> None:
        mods = [stages.pre, *stages.fine, *stages.coarse, stages.post]
        for p in (p for m in mods for p in m.parameters()):
            if p.device.type != "cpu":
                raise ValueError(
                    "the 'threads' executor runs on the CPU; the network has parameters "
                    f"on {p.device}. Use executor='devices' for GPUs."
                )

    def _ensure_workers(self, n: int) -> None:
        with _POOL_LOCK:
            while len(_POOL) < n:
                _POOL.append(_Worker())

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
        self, stages: Stages, inputs: dict[int, torch.Tensor], like: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        js = tuple(inputs)
        if len(js) == 1:  # nothing to overlap
            return super().run(stages, inputs, like)
        if not needs_grad(stages, inputs):
            grad = torch.is_grad_enabled()

            def fwd(j: int, x: torch.Tensor) -> torch.Tensor:
                with torch.set_grad_enabled(grad):
                    return stages.fine[j](x)

            return dict(zip(js, self._map(fwd, [(j, inputs[j]) for j in js]), strict=True))
        params = [p for j in js for p in trainable(stages.fine[j])]
        return fine_stage(self, stages, inputs, like, params)

    def first_iteration(
        self, stages: Stages, u: torch.Tensor
    ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Iteration 0 with the coarse sweep overlapped (when ``overlap`` is on and there
        is more than one chunk; else the base class's sweep first).

        F_0 starts on its thread as soon as ``u`` is known, while this thread runs the sweep
        ``lam_{j+1} = C_j(lam_j)`` and hands each chunk its input the moment it is ready;
        chunk j (j >= 1) also computes ``g_j = C_j(lam_j)`` on its own thread, and the last
        chunk runs on this thread after the sweep. Backward mirrors it: every chunk on its
        thread, then the sweep's backward here while chunk 0 may still be running. Forward
        values are the serial executor's bit for bit (same modules, same inputs); gradients
        are summed in another order, so they agree to rounding.
        """
        n = stages.num_chunks
        if not self.overlaps_sweep or n < 2:
            return super().first_iteration(stages, u)
        params = unique_trainable([*stages.fine, *stages.coarse])
        if torch.is_grad_enabled() and (u.requires_grad or bool(params)):
            outs = _FirstIteration.apply(self, stages, u, *params)
            f, g = list(outs[:n]), [None, *outs[n:]]
        else:
            _, f, g = self._pipeline(stages, u, grad=False)
        return dict(enumerate(f)), {j: g[j] for j in range(1, n)}

    def _pipeline(self, stages: Stages, u: torch.Tensor, grad: bool) -> tuple:
        n = stages.num_chunks
        fine, coarse = stages.fine, stages.coarse
        self._ensure_workers(n - 1)

        def chunk(j: int, lam: torch.Tensor) -> tuple:
            with torch.set_grad_enabled(grad):
                x = lam.detach().requires_grad_(lam.requires_grad) if grad else lam
                return x, fine[j](x), coarse[j](x) if j else None

        with self._intra_op(n) as nt:
            futures = [self._workers[0].submit(nt, chunk, 0, u)]
            with torch.set_grad_enabled(grad):
                lam = [u.detach().requires_grad_(u.requires_grad) if grad else u]
                for j in range(1, n):
                    lam.append(coarse[j - 1](lam[-1]))
                    if j < n - 1:
                        futures.append(self._workers[j].submit(nt, chunk, j, lam[-1]))
            last = chunk(n - 1, lam[-1])
            res = [*(fut.result() for fut in futures), last]
        f = [r[1] for r in res]
        g = [r[2] for r in res]
        return (res, lam), f, g

    def _pipeline_backward(self, stages: Stages, state: tuple, out_grads: tuple) -> tuple:
        (res, lam), n = state, stages.num_chunks
        gf, gg = out_grads[:n], (None, *out_grads[n:])

        def back(j: int) -> tuple:
            x, f, g = res[j]
            mods = [stages.fine[j], stages.coarse[j]] if j else [stages.fine[j]]
            return grads([f, g], [gf[j], gg[j]], x, mods)

        with self._intra_op(n) as nt:
            futures = [self._workers[j].submit(nt, back, j) for j in range(n - 1)]
            last = back(n - 1)
            done = [*(fut.result() for fut in futures[1:]), last]  # chunks 1..N-1
            # the sweep's backward while chunk 0 may still run
            gu, by_id = grads(lam[1:], [d[0] for d in done], lam[0], list(stages.coarse[: n - 1]))
            g0, by_id0 = futures[0].result()
        gu = add(gu, g0)
        for _, d in [*done, (None, by_id0)]:
            for k, v in d.items():
                by_id[k] = add(by_id.get(k), v)
        return gu, by_id

    def fine_forward(self, stages: Stages, js: tuple, metas: list, xs: tuple) -> tuple:
        items = list(zip(js, xs, strict=True))
        res = self._map(lambda j, x: chunk_forward(stages, j, x), items)
        return res, [out.detach() for _, out in res]

    def fine_backward(self, ctx: Any, out_grads: tuple) -> tuple[list, list]:
        items = [
            (j, xi, out, g) for j, (xi, out), g in zip(ctx.js, ctx.state, out_grads, strict=True)
        ]
        res = self._map(lambda j, xi, out, g: chunk_backward(ctx.stages, j, xi, out, g), items)
        in_grads = [r[0] for r in res]
        p_grads = [g for r in res for g in r[1]]
        return in_grads, p_grads
