"""A cost model that replays the real MGRIT schedule on a virtual clock.

Why: a formula for MGRIT's parallel time (``history.iteration_cost``) must guess which
rank waits for which message. Here the real :class:`~torchpint.core.MGRIT` runs on P
threads of one process, each rank talking through a :class:`VirtualComm`: a step adds its
modelled cost to its rank's clock; a message carries its sender's clock and sets the
receiver's to ``max(own, stamp + latency + bytes / bandwidth)``; a collective sets every
clock to the largest plus ``ceil(log2 P)`` message times (a broadcast: the others wait for
the root). The prediction is the largest final clock; with a :class:`Machine` of zero
latency and overhead it is the algorithm's critical path. States are tiny and stay finite.

:func:`mgrit_time` models a solve (layer-parallel training's step is
:func:`torchpint.layerparallel.layer_parallel_time`), :func:`choose_hierarchy` picks
levels, cfactor and relaxation by a model.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from torchpint.core.mgrit import MGRIT
from torchpint.core.problem import Problem
from torchpint.runtime.comm import Comm, PeerError, RankTimeoutError


@dataclass(frozen=True)
class Machine:
    """What the model charges besides the steps: ``latency`` seconds per message (one
    way), ``bandwidth`` bytes per second, ``overhead`` seconds of solver bookkeeping per
    step. The defaults (all free) give the algorithm's critical path."""

    latency: float = 0.0
    bandwidth: float = math.inf
    overhead: float = 0.0
    name: str = "critical path"

    def message(self, nbytes: int) -> float:  # seconds from a send to its receive
        return self.latency + nbytes / self.bandwidth

    def collective(self, size: int, nbytes: int) -> float:
        """Seconds a collective over ``size`` ranks adds after the last arrival (a tree)."""
        return math.ceil(math.log2(size)) * self.message(nbytes) if size > 1 else 0.0


class VirtualNetwork:
    """The virtual ranks' clocks, messages in flight and collective in progress. Messages
    match per (source, destination, tag) in posting order, as Gloo's; every wait has a
    real-time ``timeout``, so a bad schedule raises."""

    def __init__(self, size: int, machine: Machine, timeout: float = 120.0) -> None:
        self.size, self.machine, self.timeout = int(size), machine, float(timeout)
        self.clocks = [0.0] * self.size
        self.counting, self.messages, self.failed = True, 0, False  # counting off: warm-up
        self._lock = threading.Lock()
        self._wake = [threading.Condition(self._lock) for _ in range(self.size)]
        self._mail: dict[tuple[int, int, int, int], tuple[torch.Tensor, float]] = {}
        self._sent: dict[tuple[int, int, int], int] = {}
        self._posted: dict[tuple[int, int, int], int] = {}
        self._gen, self._arrived, self._result = 0, 0, []
        self._values: list[Any] = [None] * self.size
        self._kinds: list[tuple[str, int | None]] = [("", None)] * self.size
        self._barrier = threading.Barrier(self.size, timeout=self.timeout)

    def advance(self, rank: int, seconds: float) -> None:
        """Rank ``rank`` computes for ``seconds`` (only its own thread moves its clock)."""
        self.clocks[rank] += seconds if self.counting else 0.0

    def _wait(self, cond: threading.Condition, ready: Callable[[], bool], rank: int,
              what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            if self.failed:
                raise PeerError(f"virtual rank {rank}: {what}: another virtual rank failed")
            if time.monotonic() > deadline:
                raise RankTimeoutError(f"virtual rank {rank}: {what} did not complete within "
                                       f"{self.timeout:g} s")
            cond.wait(max(1e-3, deadline - time.monotonic()))

    @staticmethod
    def _next(counter: dict[tuple[int, int, int], int], chan: tuple[int, int, int]
              ) -> tuple[int, int, int, int]:
        counter[chan] = counter.get(chan, 0) + 1
        return (*chan, counter[chan] - 1)

    def send(self, src: int, dst: int, tag: int, t: torch.Tensor) -> None:
        """Queue a copy of ``t`` stamped with the sender's clock."""
        with self._lock:
            key = self._next(self._sent, (src, dst, tag))
            self._mail[key] = (t.detach().clone(), self.clocks[src])
            self.messages += self.counting
            self._wake[dst].notify_all()

    def post(self, src: int, dst: int, tag: int) -> tuple[int, int, int, int]:
        """Reserve the next message of a channel for a receive."""
        with self._lock:
            return self._next(self._posted, (src, dst, tag))

    def deliver(self, key: tuple[int, int, int, int], buf: torch.Tensor, what: str) -> None:
        """Wait for the reserved message, copy it into ``buf``, advance the clock."""
        dst = key[1]
        with self._lock:
            self._wait(self._wake[dst], lambda: key in self._mail, dst, what)
            t, stamp = self._mail.pop(key)
        buf.copy_(t)
        if self.counting:
            arrival = stamp + self.machine.message(t.numel() * t.element_size())
            self.clocks[dst] = max(self.clocks[dst], arrival)

    def collective(self, rank: int, value: Any, nbytes: int, what: str,
                   root: int | None = None) -> list[Any]:
        """Every rank's ``value`` once all arrived; the clocks meet at the latest plus the
        collective's time (``root``: a broadcast, the others no earlier than the root's)."""
        with self._lock:
            gen = self._gen
            self._values[rank], self._kinds[rank] = value, (what, root)
            self._arrived += 1
            if self._arrived == self.size:
                if len(set(self._kinds)) > 1:  # the schedules differ (simulate ends all)
                    raise RuntimeError(f"virtual ranks disagree on a collective: {self._kinds}")
                if self.counting:
                    cost = self.machine.collective(self.size, nbytes)
                    if root is None:
                        self.clocks[:] = [max(self.clocks) + cost] * self.size
                    else:
                        ready = self.clocks[root] + cost
                        self.clocks[:] = [c if r == root else max(c, ready)
                                          for r, c in enumerate(self.clocks)]
                self._result, self._values = self._values, [None] * self.size
                self._arrived, self._gen = 0, gen + 1
                for c in self._wake:
                    c.notify_all()
                return self._result
            self._wait(self._wake[rank], lambda: self._gen != gen, rank, what)
            return self._result

    def restart(self, rank: int) -> None:
        """All ranks meet; then the clocks restart at 0 and count (after a warm-up)."""
        if self._barrier.wait() == 0:
            self.clocks[:], self.counting, self.messages = [0.0] * self.size, True, 0
        self._barrier.wait()

    def fail(self) -> None:
        """A rank raised: wake every waiting rank, which then raises too."""
        with self._lock:
            self.failed = True
            for c in self._wake:
                c.notify_all()
        self._barrier.abort()


class VirtualComm(Comm):
    """Virtual rank ``rank`` of a :class:`VirtualNetwork` as the solver's :class:`Comm`;
    ``reverse=True`` numbers the ranks backwards (its ``rank`` is then ``size - 1 - rank``),
    as ``GroupComm(reverse=True)`` does."""

    def __init__(self, net: VirtualNetwork, rank: int, reverse: bool = False) -> None:
        self.net, self.size, self.reverse, self.physical = net, net.size, bool(reverse), rank
        self.rank = self._mirror(rank)

    def _mirror(self, r: int) -> int:
        return self.size - 1 - r if self.reverse else r

    @property
    def clock(self) -> float:
        """This rank's virtual time, in seconds."""
        return self.net.clocks[self.physical]

    def advance(self, seconds: float) -> None:
        """This rank computes for ``seconds`` (virtually)."""
        self.net.advance(self.physical, seconds)

    def send(self, t: torch.Tensor, dst: int, tag: int, what: str) -> None:
        self.net.send(self.physical, self._mirror(dst), tag, t)

    def irecv(self, buf: torch.Tensor, src: int, tag: int, what: str) -> Any:
        return self.net.post(self._mirror(src), self.physical, tag), buf, what

    def wait(self, handle: Any) -> None:
        key, buf, what = handle
        self.net.deliver(key, buf, f"receiving {what}")

    def recv_into(self, buf: torch.Tensor, src: int, tag: int, what: str) -> None:
        self.wait(self.irecv(buf, src, tag, what))

    def _gather(self, value: Any, nbytes: int, what: str, root: int | None = None) -> list:
        out = self.net.collective(self.physical, value, nbytes, what,
                                  None if root is None else self._mirror(root))
        return [out[self._mirror(r)] for r in range(self.size)]  # in this comm's order

    def _tensors(self, t: torch.Tensor, what: str, root: int | None = None) -> torch.Tensor:
        return torch.stack(self._gather(t.detach().clone(), t.numel() * t.element_size(),
                                        what, root))

    def all_reduce_(self, t: torch.Tensor, op: str, what: str) -> torch.Tensor:
        parts = self._tensors(t, what)
        return t.copy_(parts.sum(0) if op == "sum" else parts.amax(0))

    def all_reduce(self, t: torch.Tensor, op: str, what: str) -> torch.Tensor:
        return self.all_reduce_(t.detach().clone(), op, what)

    def all_gather(self, t: torch.Tensor, what: str) -> torch.Tensor:
        return self._tensors(t, what)

    def broadcast_(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        return t.copy_(self._tensors(t, what, src)[src])

    def broadcast(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        return self.broadcast_(t.detach().clone(), src, what)

    def barrier(self, what: str) -> None:
        self._gather(None, 4, what)

    def all_gather_object(self, obj: Any, what: str) -> list[Any]:
        return self._gather(obj, 64, what)

    def gather_object(self, obj: Any, dst: int, what: str) -> list[Any] | None:
        parts = self._gather(obj, 64, what)
        return parts if self.rank == dst else None


class VirtualProblem(Problem):
    """``nt`` steps that cost virtual time: a step of level ``l`` advances the calling
    rank's clock by ``costs[l]`` (the last repeats) plus the machine's overhead, and
    returns a copy of its input (the identity: values stay finite)."""

    def __init__(self, nt: int, comm: VirtualComm, costs: float | Sequence[float],
                 state: torch.Tensor | None = None) -> None:
        super().__init__(nt)
        self.comm, self.costs = comm, [costs] if isinstance(costs, (int, float)) else costs
        self.state = torch.zeros(1, dtype=torch.float64) if state is None else state

    def initial_state(self) -> torch.Tensor:
        return self.state

    def cost(self, i: int, level: int) -> float:  # compute seconds of step i of level
        return self.costs[min(level, len(self.costs) - 1)]

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        self.comm.advance(self.cost(i, level) + self.comm.net.machine.overhead)
        return u.clone()


@dataclass
class Prediction:
    """A modelled run: ``seconds`` (the largest final clock), each rank's clock, the steps
    per level summed over the ranks, the messages sent, and what else the model tells."""

    seconds: float
    clocks: list[float]
    step_counts: list[int]
    messages: int
    detail: dict[str, Any] = field(default_factory=dict)


def simulate(procs: int, machine: Machine, rank_fn: Callable[[VirtualNetwork, int], Any],
             timeout: float = 120.0, warmup: bool = True) -> tuple[VirtualNetwork, list[Any]]:
    """Run ``rank_fn(net, rank)`` on ``procs`` threads over one network; the network and
    the ranks' return values. With ``warmup`` the clocks stand still until every rank
    calls ``net.restart(rank)``. A rank's error ends all and is raised here."""
    net = VirtualNetwork(procs, machine, timeout)
    net.counting = not warmup
    results: list[Any] = [None] * procs
    errors: list[tuple[int, BaseException]] = []

    def run(rank: int) -> None:
        try:
            results[rank] = rank_fn(net, rank)
        except BaseException as err:  # noqa: BLE001  (re-raised below, in the caller)
            errors.append((rank, err))
            net.fail()

    threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in range(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:  # the first is the cause: the others raised after it woke them
        raise errors[0][1]
    return net, results


def mgrit_time(nt: int, procs: int, *, costs: float | Sequence[float] = 1.0,
               machine: Machine = Machine(), state: torch.Tensor | None = None,
               slabs: Sequence[int] | None = None, timeout: float = 120.0,
               **options: Any) -> Prediction:
    """Modelled seconds of one :meth:`MGRIT.solve` of ``nt`` steps on ``procs`` ranks, a step
    of level ``l`` ``costs[l]`` seconds. ``options`` are MGRIT's and must fix ``iterations``
    (no tolerance is ever met). A first solve, not counted, warms up (its step checks)."""
    if "iterations" not in options:
        raise ValueError("the model runs a fixed number of iterations: give iterations=k")

    def rank_fn(net: VirtualNetwork, rank: int) -> tuple[list[int], float]:
        comm = VirtualComm(net, rank)
        problem = VirtualProblem(nt, comm, costs, state)
        solver = MGRIT(problem, group=comm, slabs=slabs, timeout=timeout, **options)
        solver.solve()
        net.restart(rank)
        return solver.solve().step_counts, comm.clock

    net, out = simulate(procs, machine, rank_fn, timeout)
    counts = [sum(c[l] for c, _ in out) for l in range(len(out[0][0]))]
    return Prediction(max(net.clocks), list(net.clocks), counts, net.messages)


@dataclass(frozen=True)
class Hierarchy:
    """An MGRIT hierarchy: levels, one cfactor for all, a relaxation per relaxing level."""

    levels: int
    cfactor: int
    relax: tuple[str, ...]

    def __str__(self) -> str:
        return f"levels={self.levels} cfactor={self.cfactor} relax={','.join(self.relax)}"


def candidate_hierarchies(n: int, default: Hierarchy = Hierarchy(3, 4, ("F", "FCF")),
                          cfactors: Sequence[int] = (2, 4, 8, 16), max_levels: int = 6
                          ) -> list[Hierarchy]:
    """The hierarchies that keep the default's accuracy, by a rule: the coarsest step
    ``m^(L-1) h`` is no longer than the default's and divides ``n``, the relaxation no
    weaker (FCF on every relaxing coarse level, F or FCF on the fine one); the caller
    keeps the default iteration counts."""
    largest = default.cfactor ** (default.levels - 1)
    return [Hierarchy(levels, m, (fine, *["FCF"] * (levels - 2)))
            for levels in range(2, max_levels + 1) for m in cfactors
            if m ** (levels - 1) <= largest and n % m ** (levels - 1) == 0
            for fine in ("F", "FCF")]


@dataclass
class Choice:
    """What :func:`choose_hierarchy` found: the best, its seconds, every candidate's in
    order, and the acceptance tests made (``checked``: hierarchy, accepted)."""

    best: Hierarchy
    seconds: float
    table: list[tuple[Hierarchy, float]]
    checked: list[tuple[Hierarchy, bool]] = field(default_factory=list)


def choose_hierarchy(n: int, procs: int, evaluate: Callable[[Hierarchy], float], *,
                     candidates: Sequence[Hierarchy] | None = None,
                     accept: Callable[[Hierarchy], bool] | None = None) -> Choice:
    """The hierarchy with the least modelled time ``evaluate(h)`` (seconds) for ``n``
    steps on ``procs`` ranks among ``candidates`` (default :func:`candidate_hierarchies`,
    the equal-accuracy rule). Ties go to fewer levels. With ``accept``, a measured test
    of accuracy, the fastest candidate it accepts (tried in order of modelled time; none
    accepted: ``ValueError``). Layer-parallel training's is
    :func:`torchpint.layerparallel.choose_layer_parallel`."""
    cands = list(candidate_hierarchies(n) if candidates is None else candidates)
    if not cands:
        raise ValueError(f"no candidate hierarchy for {n} steps")
    table = sorted(((h, evaluate(h)) for h in cands), key=lambda e: (e[1], e[0].levels))
    checked: list[tuple[Hierarchy, bool]] = []
    for h, seconds in table:
        ok = accept is None or accept(h)
        if accept is not None:
            checked.append((h, ok))
        if ok:
            return Choice(h, seconds, table, checked)
    raise ValueError(f"no candidate hierarchy for {n} steps passes the accuracy test")
