"""The receive schedule of a distributed MGRIT iteration (XBraid's communication.c).

Sends never wait (their completion is checked once per iteration). Receives are posted
at the start of an iteration, in the order the last iteration of its kind (the first of
a solve, or a later one) made them, so a message lands while this rank works instead of
waiting for a handshake with a busy sender. An iteration of a kind whose order is not
known yet receives directly and records the order for the next one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torchpint.runtime.comm import Comm

TAG_F, TAG_V, TAG_SOLVE = 1, 2, 3
"""Message tags: F-relaxation boundaries, restricted states, the coarsest solve."""

Receive = tuple[int, int, str, tuple[int, ...]]
"""(source rank, tag, what the message is, for errors, the state's shape): a problem's
levels may hold states of different shapes (spatial coarsening)."""


class ReceiveSchedule:
    """One rank's receives: posted early by the order recorded per kind of iteration.

    Call :meth:`begin` at the start of an iteration, :meth:`recv` for every receive in
    it, and :meth:`end` after it. On one rank it does nothing.
    """

    def __init__(self, comm: Comm) -> None:
        self.comm = comm
        self._patterns: dict[bool, list[Receive]] = {}  # by kind: first iteration or not
        self._posted: dict[tuple[int, int], list[tuple[Any, torch.Tensor]]] = {}
        self._recording: list[Receive] | None = None
        self._boxes: list[torch.Tensor] = []  # one buffer per posted receive, reused
        self._kind = True

    def begin(self, first: bool, like: torch.Tensor) -> None:
        """Post this iteration's receives (buffers of ``like``'s dtype and device, each of
        its receive's shape), in the order the last iteration of its kind (``first``: the
        first of a solve) made them; record them if not known."""
        if self.comm.size == 1:
            return
        self._kind = first
        pattern = self._patterns.get(first)
        self._recording = None if pattern is not None else []
        self._posted = {}
        for j, (src, tag, what, shape) in enumerate(pattern or ()):
            if j == len(self._boxes):
                self._boxes.append(like.new_empty(shape))
            elif tuple(self._boxes[j].shape) != shape:
                self._boxes[j] = like.new_empty(shape)
            box = self._boxes[j]
            handle = self.comm.irecv(box, src, tag, what)
            self._posted.setdefault((src, tag), []).append((handle, box))

    def end(self) -> None:
        """Keep the order this iteration recorded, for the next of its kind."""
        if self._recording is not None:
            self._patterns[self._kind] = self._recording
        self._recording = None

    def recv(self, buf: torch.Tensor, src: int, tag: int, what: str) -> None:
        """Receive into ``buf``: from the receive posted for it when there is one, else
        directly (waiting); record the order when this kind of iteration is new."""
        posted = self._posted.get((src, tag))
        if posted:
            handle, box = posted.pop(0)
            self.comm.wait(handle)
            buf.copy_(box)
        else:
            self.comm.recv_into(buf, src, tag, what)
        if self._recording is not None:
            self._recording.append((src, tag, what, tuple(buf.shape)))
