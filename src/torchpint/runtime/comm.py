"""Every message between ranks, over a ``torch.distributed`` group: the one communicator.

Solvers, executors and training loops are written once against :class:`Comm`, which is
itself the one-rank case (no messages); :class:`GroupComm` sends states to neighbours,
reduces, gathers and broadcasts over a process group (Gloo on CPU, NCCL on GPU). Every
wait has a timeout, so a rank that died, hangs or closed its connection is a typed
:class:`PeerError` on its peers, never a hang or a backend traceback. No module outside
this floor calls ``torch.distributed``'s communication functions (an architecture test).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import sys
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist


class PeerError(RuntimeError):
    """A peer rank failed: it died, hung or closed its connection (exit code 4)."""


class RankTimeoutError(PeerError):
    """A peer rank did not answer within the timeout (it hung, or died silently)."""


class PeerClosedError(RankTimeoutError):
    """A peer rank closed its connection: it exited or crashed (a kind of peer failure,
    so code that handles :class:`RankTimeoutError` handles it too)."""


# What Gloo (and the TCP stack under it) says when the other end went away.
_PEER_CLOSED = ("connection closed by peer", "connection reset by peer", "broken pipe",
                "connection refused", "connection was likely closed")


def is_peer_closed(err: BaseException | str) -> bool:
    """True when a communication error says the peer closed or reset the connection."""
    text = str(err).lower()
    return any(marker in text for marker in _PEER_CLOSED)


# The timeout each process group was made with (by init_distributed or new_group), so a
# communicator over a group it is handed waits as long as the group itself does.
_TIMEOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def group_timeout(group: Any = None, default: float = 300.0) -> float:
    """The seconds a collective on ``group`` (``None`` / ``"world"``: the default group)
    waits, as :func:`init_distributed` or :func:`new_group` set it; ``default`` for a
    group made elsewhere."""
    pg = dist.group.WORLD if group in (None, "world") else group
    return float(_TIMEOUTS.get(pg, default)) if pg is not None else float(default)


def peer_failure(rank: int, what: str, err: BaseException, timeout: float,
                 peer: int | None = None) -> RankTimeoutError:
    """The typed error for a failed message: :class:`PeerClosedError` when the peer's
    connection closed, else :class:`RankTimeoutError` (it did not answer in time)."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if is_peer_closed(err):
        who = f"rank {peer}" if peer is not None else "a peer rank"
        return PeerClosedError(
            f"rank {rank}: {what} failed: {who} closed the connection (it exited or "
            f"crashed; {detail}). Check the other ranks' output for the first error."
        )
    return RankTimeoutError(
        f"rank {rank}: {what} did not complete within {timeout:g} s ({detail}). A peer "
        "rank died, hung, or stopped early; check the other ranks' output."
    )


class Comm:
    """One rank, no peers: the serial solver's communicator."""

    rank = 0
    size = 1

    def send(self, t: torch.Tensor, dst: int, tag: int, what: str) -> None:
        raise RuntimeError("a serial communicator has no peers")

    def recv_into(self, buf: torch.Tensor, src: int, tag: int, what: str) -> None:
        raise RuntimeError("a serial communicator has no peers")

    def irecv(self, buf: torch.Tensor, src: int, tag: int, what: str) -> Any:
        raise RuntimeError("a serial communicator has no peers")

    def wait(self, handle: Any) -> None:
        raise RuntimeError("a serial communicator has no peers")

    def flush(self) -> None:
        pass

    def all_reduce(self, t: torch.Tensor, op: str, what: str) -> torch.Tensor:
        return t

    def all_reduce_(self, t: torch.Tensor, op: str, what: str) -> torch.Tensor:
        """Reduce ``t`` over the ranks in place (a flat buffer of many tensors); ``t``."""
        return t

    def all_gather(self, t: torch.Tensor, what: str) -> torch.Tensor:
        return t.unsqueeze(0)

    def broadcast(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        return t

    def broadcast_(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        """``t`` := rank ``src``'s ``t``, in place; returns ``t``."""
        return t

    def barrier(self, what: str) -> None:
        pass

    def all_gather_object(self, obj: Any, what: str) -> list[Any]:
        return [obj]

    def gather_object(self, obj: Any, dst: int, what: str) -> list[Any] | None:
        return [obj]


class GroupComm(Comm):
    """A ``torch.distributed`` process group, with a timeout on every wait.

    ``reverse=True`` numbers the ranks backwards (rank ``r`` here is group rank
    ``size - 1 - r``): a problem solved backward in time (an adjoint) then gives each
    process the slab that mirrors its forward one. ``timeout``: seconds every wait may
    take (default: the group's own, see :func:`group_timeout`; else 300).
    """

    def __init__(self, group: Any = None, timeout: float | None = None,
                 reverse: bool = False) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "a distributed solve needs an initialized process group: launch with torchrun "
                "and call torchpint.core.init_distributed() (or dist.init_process_group) first"
            )
        self.group = None if group in (None, "world") else group
        self.size = dist.get_world_size(self.group)
        self.reverse = bool(reverse)
        self.rank = self._mirror(dist.get_rank(self.group))
        wait = group_timeout(self.group) if timeout is None else float(timeout)
        self.timeout = timedelta(seconds=wait)
        self.backend = str(dist.get_backend(self.group))
        self._ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
        self._pending: list[tuple[Any, torch.Tensor, int, str]] = []

    def _mirror(self, r: int) -> int:
        return self.size - 1 - r if self.reverse else r

    def _global(self, r: int) -> int:
        """The world rank of this communicator's rank ``r`` (what messages name, so a
        rank of a subgroup is named as the launcher and the other ranks' output name it)."""
        r = self._mirror(r)
        return r if self.group is None else dist.get_global_rank(self.group, r)

    def _wire(self, t: torch.Tensor) -> torch.Tensor:
        """Gloo talks CPU tensors; NCCL talks CUDA tensors (this rank's device)."""
        if self.backend == "gloo" and t.device.type != "cpu":
            return t.detach().cpu()
        if self.backend == "nccl" and t.device.type != "cuda":
            return t.detach().to(torch.device("cuda", torch.cuda.current_device()))
        return t.detach().contiguous()

    def _fail(self, err: RuntimeError, what: str, peer: int | None) -> RankTimeoutError:
        peer = None if peer is None else self._global(peer)  # name the world's ranks
        return peer_failure(self._global(self.rank), what, err, self.timeout.total_seconds(), peer)

    def _post(self, start: Callable[[], Any], what: str, peer: int | None) -> Any:
        """Start a message; a peer that already closed its connection fails here."""
        try:
            return start()
        except RuntimeError as err:
            if is_peer_closed(err):
                raise self._fail(err, what, peer) from err
            raise

    def _wait(self, work: Any, what: str, peer: int | None = None) -> None:
        try:
            work.wait(self.timeout)
        except RuntimeError as err:
            raise self._fail(err, what, peer) from err

    def send(self, t: torch.Tensor, dst: int, tag: int, what: str) -> None:
        """Start sending a copy of ``t`` and go on: the sender never waits for the
        receiver here; :meth:`flush` checks that the sends completed."""
        buf = self._wire(t)
        if buf.data_ptr() == t.data_ptr():
            buf = buf.clone()  # the caller may change t before the message leaves
        work = self._post(
            lambda: dist.isend(buf, self._global(dst), group=self.group, tag=tag),
            f"sending {what} to rank {self._global(dst)}", dst,
        )
        self._pending.append((work, buf, dst, what))

    def recv_into(self, buf: torch.Tensor, src: int, tag: int, what: str) -> None:
        self.wait(self.irecv(buf, src, tag, what))

    def irecv(self, buf: torch.Tensor, src: int, tag: int, what: str) -> Any:
        """Post a receive into ``buf`` now (so the sender's message can land while this
        rank works); :meth:`wait` completes it."""
        wire = self._wire(buf)  # buf itself, or a copy on the wire's device
        back = None if wire.data_ptr() == buf.data_ptr() else buf
        what = f"receiving {what} from rank {self._global(src)}"
        work = self._post(
            lambda: dist.irecv(wire, self._global(src), group=self.group, tag=tag), what, src
        )
        return work, wire, back, src, what

    def wait(self, handle: Any) -> None:
        """Complete a receive posted by :meth:`irecv`."""
        work, wire, back, src, what = handle
        self._wait(work, what, src)
        if back is not None:
            back.copy_(wire)

    def flush(self) -> None:
        """Wait for every send started since the last flush (a peer that died or hangs is
        an error here)."""
        pending, self._pending = self._pending, []
        for work, _buf, dst, what in pending:
            self._wait(work, f"sending {what} to rank {self._global(dst)}", dst)

    def all_reduce(self, t: torch.Tensor, op: str, what: str) -> torch.Tensor:
        """``t`` reduced over the ranks, in a new tensor (``t`` is left as it is)."""
        return self.all_reduce_(t.detach().clone(), op, what)

    @torch.no_grad()
    def all_reduce_(self, t: torch.Tensor, op: str, what: str) -> torch.Tensor:
        """Reduce ``t`` in place (no copy when it is already on the wire's device and
        contiguous, e.g. a flat buffer of gradients); returns ``t``."""
        wire = self._wire(t)
        what = f"all-reduce of {what}"
        work = self._post(
            lambda: dist.all_reduce(wire, op=self._ops[op], group=self.group, async_op=True),
            what, None,
        )
        self._wait(work, what)
        if wire.data_ptr() != t.data_ptr():
            t.copy_(wire)
        return t

    def all_gather(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """Every rank's ``t``, stacked in rank order (one collective for values that are
        reduced in different ways)."""
        wire = self._wire(t).contiguous()
        parts = [torch.empty_like(wire) for _ in range(self.size)]
        what = f"all-gather of {what}"
        work = self._post(
            lambda: dist.all_gather(parts, wire, group=self.group, async_op=True), what, None
        )
        self._wait(work, what)
        if self.reverse:
            parts.reverse()
        return torch.stack(parts).to(t.device)

    def broadcast(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        """Rank ``src``'s ``t``, in a new tensor (``t`` is left as it is)."""
        return self.broadcast_(t.detach().clone(), src, what)

    @torch.no_grad()
    def broadcast_(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        """``t`` := rank ``src``'s ``t``, in place (no copy when it is already on the
        wire's device and contiguous); returns ``t``."""
        wire = self._wire(t)
        what = f"broadcast of {what} from rank {self._global(src)}"
        work = self._post(
            lambda: dist.broadcast(wire, self._global(src), group=self.group, async_op=True),
            what, None,
        )
        self._wait(work, what)
        if wire.data_ptr() != t.data_ptr():
            t.copy_(wire)
        return t

    def barrier(self, what: str) -> None:
        """Wait until every rank of the group gets here (a one-element all-reduce, so
        it has the same timeout and typed errors as every other wait)."""
        self.all_reduce(torch.zeros(1), "sum", f"barrier ({what})")

    def _padded(self, obj: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``obj`` pickled into a byte tensor padded to the longest of the ranks', and
        every rank's length (one all-gather)."""
        data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
        dev = torch.device("cuda", torch.cuda.current_device()) \
            if self.backend == "nccl" else torch.device("cpu")
        sizes = self.all_gather(torch.tensor([data.numel()], device=dev), f"sizes of {what}")
        pad = torch.zeros(int(sizes.max()), dtype=torch.uint8, device=dev)
        pad[: data.numel()] = data.to(dev)
        return pad, sizes.cpu()

    @staticmethod
    def _unpickle(parts: torch.Tensor, sizes: torch.Tensor) -> list[Any]:
        return [pickle.loads(parts[r, : int(sizes[r])].numpy().tobytes())
                for r in range(len(sizes))]

    def all_gather_object(self, obj: Any, what: str) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order (two all-gathers: the sizes, then
        the padded bytes). Peers of one job are trusted to send plain data."""
        pad, sizes = self._padded(obj, what)
        return self._unpickle(self.all_gather(pad, what).cpu(), sizes)

    def gather_object(self, obj: Any, dst: int, what: str) -> list[Any] | None:
        """Every rank's ``obj``, in rank order, on rank ``dst`` (``None`` elsewhere): the
        sizes to all, the bytes to ``dst`` alone."""
        pad, sizes = self._padded(obj, what)
        parts = [torch.empty_like(pad) for _ in range(self.size)] if self.rank == dst else None
        what = f"gather of {what} to rank {self._global(dst)}"
        work = self._post(lambda: dist.gather(pad, parts, dst=self._global(dst),
                                              group=self.group, async_op=True), what, None)
        self._wait(work, what)
        if parts is None:
            return None
        if self.reverse:
            parts.reverse()
        return self._unpickle(torch.stack(parts).cpu(), sizes)


def new_group(ranks: Sequence[int], timeout: float) -> Any:
    """A ``torch.distributed`` subgroup of the world's ``ranks`` whose collectives fail
    after ``timeout`` seconds; every rank of the world must call it with the same lists in
    the same order."""
    wait = timedelta(seconds=float(timeout))
    group = _joining(lambda: dist.new_group(list(ranks), timeout=wait),
                     f"creating the process group of ranks {list(ranks)}", timeout, world_rank())
    if group is not None and group is not dist.GroupMember.NON_GROUP_MEMBER:
        _TIMEOUTS[group] = float(timeout)
    return group


def _joining(start: Callable[[], Any], what: str, timeout: float, rank: int) -> Any:
    """Run a step every rank takes together through the rendezvous store (joining the
    world, creating a subgroup): a peer that never came, or whose store went away, is a
    typed :class:`PeerError`, not a store traceback."""
    try:
        return start()
    except (dist.DistStoreError, dist.DistNetworkError) as err:
        text = str(err).lower()
        if any(m in text for m in ("address already in use", "eaddrinuse", "failed to listen")):
            raise  # the port is taken: not a peer's failure
        raise peer_failure(rank, what, err, timeout) from err


def world_rank() -> int:
    """This process's rank in the default group; before the group is joined, the rank
    torchrun gave it (``RANK``); 0 when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """The default group's size; before the group is joined, torchrun's ``WORLD_SIZE``;
    1 when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def make_comm(group: Any, timeout: float | None = None) -> Comm:
    """``None`` -> serial; ``"world"`` or a process group -> distributed (``timeout``:
    see :class:`GroupComm`); a :class:`Comm` is used as it is."""
    if isinstance(group, Comm):
        return group
    return Comm() if group is None else GroupComm(group, timeout)


def init_distributed(
    backend: str | None = None, timeout: float = 300.0, device: torch.device | None = None
) -> bool:
    """Join the default process group from torchrun's environment, if there is one.

    Returns True when running distributed (``WORLD_SIZE`` set by torchrun), else False.
    ``device`` is this rank's device: a CUDA device is made current and selects NCCL, a
    CPU device Gloo. Without it the backend defaults to NCCL when CUDA is available (on
    the GPU ``LOCAL_RANK``), Gloo otherwise. Every collective fails after ``timeout``
    seconds instead of torch's default 30 minutes. The group it joins is left at exit
    (:func:`leave`), so a process whose peer hung exits with its own code.
    """
    if dist.is_initialized():
        return True
    if "WORLD_SIZE" not in os.environ:
        return False
    if device is not None:
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    _joining(lambda: dist.init_process_group(backend, timeout=timedelta(seconds=timeout)),
             "joining the process group", timeout, int(os.environ.get("RANK", "0")))
    _TIMEOUTS[dist.group.WORLD] = float(timeout)
    atexit.unregister(leave)  # once, however often a process joins
    atexit.register(leave)
    return True


def abandon(code: int) -> NoReturn:
    """End the process with ``code`` now, without tearing the process group down. After a
    peer failed, Gloo's threads may still wait on it, and destroying them aborts the
    process (SIGABRT: "terminate called without an active exception"), which would lose
    the exit code. Claims are released and the streams flushed first."""
    from torchpint.runtime.files import release_all

    release_all()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def leave() -> None:
    """Destroy the default Gloo process group if it is still there. At exit, a Gloo send
    still pending to a peer that hung would otherwise abort the process ("terminate called
    without an active exception", SIGABRT) instead of letting it exit with its code. (An
    NCCL group is left to torch: destroying it may wait on the hung peer's kernels.)"""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        dist.destroy_process_group()
