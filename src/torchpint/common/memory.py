"""Bytes held by tensors: the peak of the activations a step saves for backward, on any
device (a CPU has no allocator statistics), and the bytes of a set of tensors.

``track_saved`` wraps a step in ``torch.autograd.graph.saved_tensors_hooks``: every
tensor an op saves for backward is counted once per storage (however many ops save it)
while the graph holds it, and the peak of the sum over the step is the step's activation
memory. Not counted: transient buffers of single ops, gradients in flight, communication
buffers, the allocator's slack. The hooks are thread-local, so modules that run in worker
threads (the ``threads`` executor's chunks) get them pushed around their forward.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn


class SavedBytes:
    """Peak bytes of the distinct tensors saved for backward that are alive together.

    ``pack`` counts a tensor's storage once however many ops save it, and releases it
    when autograd frees the graph; storages of ``exclude`` (the ids ``data_ptr()`` of the
    parameters' storages) are not counted. Thread-safe: a step may save from several
    threads (``push`` / ``pop`` install the hooks in the calling thread).
    """

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.live: dict[int, list[int]] = {}  # storage -> [bytes, saved references]
        self.current = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.local = threading.local()

    def pack(self, t: torch.Tensor) -> Any:
        """The saved-tensor hook: count ``t``'s storage if it is new."""
        try:
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. sparse tensors: not counted
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
        """One saved reference to storage ``key`` is gone (autograd freed it)."""
        with self.lock:
            entry = self.live[key]
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.live[key]

    @staticmethod
    def unpack(x: Any) -> torch.Tensor:
        """The unpack hook: the tensor itself."""
        return x.t if isinstance(x, _Saved) else x

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        """The hooks as a context manager (for the calling thread)."""
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def push(self, *_: Any) -> None:
        """Install the hooks in the calling thread (a forward pre-hook)."""
        ctx = self.hooks()
        ctx.__enter__()
        self.local.__dict__.setdefault("stack", []).append(ctx)

    def pop(self, *_: Any) -> None:
        """Remove the hooks ``push`` installed in the calling thread (a forward hook)."""
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
    params: Iterable[torch.Tensor], thread_modules: Iterable[nn.Module] = ()
) -> Iterator[SavedBytes]:
    """Track the bytes saved for backward in this thread and in any thread that runs one
    of ``thread_modules`` (hooks pushed around their forward); ``params`` are not counted.

    ``with track_saved(model.parameters()) as tr: step()`` leaves the peak in ``tr.peak``.
    """
    tracker = SavedBytes({p.untyped_storage().data_ptr() for p in params})
    handles = []
    for m in thread_modules:
        handles.append(m.register_forward_pre_hook(tracker.push))
        handles.append(m.register_forward_hook(tracker.pop))
    try:
        with tracker.hooks():
            yield tracker
    finally:
        for h in handles:
            h.remove()


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of ``tensors``, each counted once (by address and size: DDP's gradients are
    views into one bucket, so the storage would not tell them apart); ``None`` skipped."""
    seen: dict[tuple[int, int], int] = {}
    for t in tensors:
        if t is not None:
            seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
    return sum(seen.values())
