"""SIGINT and SIGTERM stop a run at its next boundary, where it can checkpoint.

A cluster sends SIGTERM some seconds before it kills a job (SLURM, Kubernetes), a person
presses Ctrl-C. Inside a :func:`boundaries` block (a training loop, an MGRIT solve) the
first signal only sets a flag; the loop calls :func:`poll` at each batch or iteration
boundary, which agrees with every rank (one tiny all-reduce) and raises
:class:`Interrupted` on all of them at the same boundary, after the loop wrote its
checkpoint. Outside such a block, or at a second signal, the run stops at once. Nested
blocks (a solve inside a training step) leave the stop to the outermost loop, whose
boundaries are the ones a checkpoint can resume from.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import torch

NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Interrupted(Exception):
    """The run was stopped by a signal at a boundary; ``exit_code`` is 128 + the signal
    (130 for SIGINT, 143 for SIGTERM), and ``checkpoint`` what was saved, if anything."""

    def __init__(self, signum: int, where: str = "", checkpoint: str | None = None) -> None:
        self.signum = int(signum)
        self.where = where
        self.checkpoint = checkpoint
        super().__init__(self.describe())

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return NAMES.get(self.signum, f"signal {self.signum}")

    def describe(self) -> str:
        at = f" at {self.where}" if self.where else ""
        saved = (f"checkpoint at {self.checkpoint}, resume with --resume" if self.checkpoint
                 else "nothing saved (a checkpoint option keeps progress)")
        return f"stopped by {self.name}{at}; {saved}"


_state: dict[str, Any] = {"depth": 0, "pending": 0, "installed": 0, "previous": {}}


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["depth"] > 0 and not _state["pending"]:
        _state["pending"] = signum  # stop at the next boundary
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def install() -> None:
    """Handle SIGINT and SIGTERM in this process (main thread only; a no-op elsewhere).
    Calls nest (a command that runs others): each :func:`install` is undone by one
    :func:`uninstall`, and the handlers go with the last."""
    if threading.current_thread() is not threading.main_thread():
        return
    if not _state["installed"]:
        for sig in NAMES:
            _state["previous"][sig] = signal.signal(sig, _handler)
    _state["installed"] += 1


def uninstall() -> None:
    """Undo one :func:`install`; the last restores the handlers it replaced."""
    if not _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    _state["installed"] -= 1
    if _state["installed"] == 0:
        for sig, old in _state["previous"].items():
            signal.signal(sig, old)
        _state.update(previous={}, pending=0)


@contextmanager
def boundaries() -> Iterator[bool]:
    """A loop whose boundaries can stop the run; yields whether it is the outermost one
    (only that one's :func:`poll` acts)."""
    _state["depth"] += 1
    try:
        yield _state["depth"] == 1
    except BaseException:
        _state["depth"] -= 1
        raise
    _state["depth"] -= 1
    if _state["depth"] == 0 and _state["pending"]:
        signum, _state["pending"] = _state["pending"], 0
        raise Interrupted(signum)  # the loop ended before it reached a boundary


def polled(outer: bool) -> bool:
    """Whether :func:`poll` acts at the boundaries of a loop (``outer``: what
    :func:`boundaries` yielded): the outermost one, with the handlers installed."""
    return outer and bool(_state["installed"])


def pending() -> int:
    """The signal waiting for the next boundary on this rank (0: none)."""
    return int(_state["pending"])


def poll(comm: Any = None) -> int:
    """At a boundary of the outermost loop: the signal any rank received (0: none).

    With a communicator of several ranks, one all-reduce makes every rank agree, so all
    stop at the same boundary. Collective: every rank of ``comm`` calls it at the same
    boundaries. The caller writes its checkpoint, then raises :class:`Interrupted`
    (:func:`clear` first, so that the exit is not raised twice).
    """
    if _state["depth"] != 1 or not _state["installed"]:
        return 0
    mine = pending()
    if comm is not None and getattr(comm, "size", 1) > 1:
        t = comm.all_reduce(torch.tensor([float(mine)]), "max", "the stop flag")
        return int(t.item())
    return mine


def clear() -> None:
    """Forget the pending signal (the loop is about to raise :class:`Interrupted`)."""
    _state["pending"] = 0
