"""The virtual-clock cost model: hand-counted critical paths, the real solvers' step
counts, the virtual communicator, and the hierarchy chooser."""


import pytest
import torch

from torchpint.core import MGRIT
from torchpint.core.costmodel import (
    Hierarchy,
    Machine,
    VirtualComm,
    candidate_hierarchies,
    choose_hierarchy,
    mgrit_time,
    simulate,
)
from torchpint.problems import Heat1D


@pytest.mark.parametrize("procs", [1, 2, 4])
def test_serial_stepping_costs_n(procs):
    """One level is sequential time stepping, pipelined over the ranks: N unit steps cost
    N with free messages, wherever the slabs are cut."""
    assert mgrit_time(8, procs, levels=1, iterations=1).seconds == 8.0


def test_latency_counts_the_messages_on_the_path():
    """Sequential stepping over 4 ranks with latency 0.5: 8 steps, 3 hand-offs along the
    pipeline, then the residual's all-gather and the final state's broadcast from the
    last rank, each ceil(log2 4) = 2 message times: 8 + 0.5 (3 + 2 + 2) = 11.5."""
    assert mgrit_time(8, 4, levels=1, iterations=1, machine=Machine(0.5)).seconds == 11.5


@pytest.mark.parametrize(("procs", "n", "k"), [(1, 8, 1), (2, 8, 1), (2, 8, 3), (4, 16, 1),
                                               (4, 16, 2), (4, 16, 3), (8, 32, 2)])
def test_parareal_critical_path(procs, n, k):
    """Two levels, F-relaxation, one chunk of m = N / P steps per rank, unit costs.

    Iteration 1: F-relaxation (m - 1 steps, all ranks at once); restriction (a fine and a
    coarse step at the rank's C-point); the coarse solve, one step per rank in turn (P);
    correction and F-relaxation (m - 1); the residual at the C-point (1): 2m + P + 1.
    Each later iteration starts with no F-relaxation and restricts from the residual's
    cached fine step (1 coarse step): m + P + 1.
    """
    m = n // procs
    want = (2 * m + procs + 1) + (k - 1) * (m + procs + 1)
    got = mgrit_time(n, procs, levels=2, cfactor=m, relax="F", iterations=k)
    assert got.seconds == want


def test_costs_scale_per_level():
    """Twice the cost on every level is twice the critical path; a costlier coarse level
    adds exactly its steps on the path (P of them in iteration 1's coarse solve, one per
    rank, and one in the restriction)."""
    base = mgrit_time(16, 4, levels=2, cfactor=4, relax="F", iterations=1)
    assert mgrit_time(16, 4, levels=2, cfactor=4, relax="F", iterations=1,
                      costs=2.0).seconds == 2 * base.seconds
    coarse = mgrit_time(16, 4, levels=2, cfactor=4, relax="F", iterations=1, costs=[1.0, 3.0])
    assert coarse.seconds == base.seconds + 2 * (4 + 1)


@pytest.mark.parametrize("procs", [1, 3])
@pytest.mark.parametrize("kw", [
    dict(levels=3, cfactor=2, relax="FCF", cycle="V"),
    dict(levels=3, cfactor=4, relax=("F", "FCF"), cycle="F"),
    dict(levels=2, cfactor=4, relax="F"),
])
def test_step_counts_equal_a_real_serial_solve(procs, kw):
    """The model runs the real solver: its steps per level (summed over the ranks) are
    those of a real serial MGRIT solve with the same settings."""
    real = MGRIT(Heat1D(nt=32, nx=9), iterations=3, **kw).solve()
    assert mgrit_time(32, procs, iterations=3, **kw).step_counts == real.step_counts


def test_critical_path_shrinks_and_overhead_adds():
    free = [mgrit_time(64, p, levels=3, cfactor=4, iterations=2).seconds for p in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(free, free[1:], strict=False))
    slow = mgrit_time(64, 1, levels=3, cfactor=4, iterations=2, machine=Machine(overhead=0.5))
    steps = sum(slow.step_counts)
    assert slow.seconds == pytest.approx(free[0] + 0.5 * steps)


def test_virtual_comm_collectives_and_reversed_ranks():
    """all_gather in the communicator's rank order (reversed too), a broadcast that waits
    for its root, sums, and point-to-point messages matched in order."""

    def rank_fn(net, rank):
        comm, back = VirtualComm(net, rank), VirtualComm(net, rank, reverse=True)
        net.restart(rank)
        comm.advance(float(rank))  # rank r is busy until r
        got = comm.all_gather(torch.tensor([float(rank)]), "ranks").flatten().tolist()
        rev = back.all_gather(torch.tensor([float(rank)]), "ranks").flatten().tolist()
        total = comm.all_reduce(torch.tensor([1.0]), "sum", "count").item()
        after_gather = comm.clock
        if rank == 0:
            comm.advance(5.0)
        b = comm.broadcast(torch.tensor([float(rank)]), 0, "from 0").item(), comm.clock
        if rank == 1:
            comm.send(torch.tensor([1.0]), 2, 7, "a")
            comm.send(torch.tensor([2.0]), 2, 7, "b")
        got_msgs = []
        if rank == 2:
            for _ in range(2):
                buf = torch.zeros(1)
                comm.recv_into(buf, 1, 7, "a or b")
                got_msgs.append(buf.item())
        objs = comm.gather_object({"r": rank}, 0, "objects")
        return got, rev, total, after_gather, b, comm.clock, got_msgs, objs

    net, out = simulate(3, Machine(latency=0.25), rank_fn)
    for rank, (got, rev, total, after, b, clock, _, objs) in enumerate(out):
        assert got == [0.0, 1.0, 2.0] and rev == [2.0, 1.0, 0.0] and total == 3.0
        assert after == 2.0 + 3 * 2 * 0.25  # max clock 2, then 3 collectives of 2 hops
        # the root (busy until 3.5 + 5) goes on; the others wait for it plus 2 hops
        assert b == (0.0, 8.5 if rank == 0 else 9.0)
        assert objs == ([{"r": 0}, {"r": 1}, {"r": 2}] if rank == 0 else None)
        assert clock == 9.25 + 0.5  # rank 2 got rank 1's messages at 9 + 0.25; a gather
    assert out[2][6] == [1.0, 2.0]


def test_a_failing_rank_raises_instead_of_hanging():
    def rank_fn(net, rank):
        if rank == 1:
            raise ValueError("boom")
        VirtualComm(net, rank).recv_into(torch.zeros(1), 1, 1, "never sent")

    with pytest.raises(ValueError, match="boom"):
        simulate(2, Machine(), rank_fn, timeout=30.0, warmup=False)


def test_candidates_keep_the_defaults_accuracy_rule():
    cands = candidate_hierarchies(128)
    assert Hierarchy(3, 4, ("F", "FCF")) in cands
    for h in cands:
        assert h.cfactor ** (h.levels - 1) <= 16 and 128 % h.cfactor ** (h.levels - 1) == 0
        assert len(h.relax) == h.levels - 1 and all(r == "FCF" for r in h.relax[1:])
    assert Hierarchy(3, 8, ("F", "FCF")) not in cands  # coarsest step 64 h: cruder


def test_chooser_follows_its_model():
    """The pick is the candidate with the least modelled time; ties go to fewer levels."""
    pick = choose_hierarchy(32, 4, lambda h: abs(h.levels - 4) + h.cfactor / 100)
    assert (pick.best.levels, pick.best.cfactor) == (4, 2)
    times = [s for _, s in pick.table]
    assert times == sorted(times) and pick.seconds == times[0]
    flat = choose_hierarchy(32, 4, lambda h: 1.0)
    assert flat.best.levels == 2


def test_the_chooser_takes_the_fastest_candidate_a_measured_test_accepts():
    cost = lambda h: h.cfactor ** (h.levels - 1) * -1.0  # noqa: E731  (coarser is faster)
    free = choose_hierarchy(32, 4, cost)
    tried = []

    def accept(h):
        tried.append(h)
        return h.cfactor ** (h.levels - 1) <= 4  # only the mildest coarsening is accurate

    pick = choose_hierarchy(32, 4, cost, accept=accept)
    assert free.best.cfactor ** (free.best.levels - 1) == 16
    assert pick.best.cfactor ** (pick.best.levels - 1) == 4
    assert [h for h, _ in pick.checked] == tried and pick.checked[-1] == (pick.best, True)
    assert not any(ok for _, ok in pick.checked[:-1])  # the faster ones were refused
    with pytest.raises(ValueError, match="passes the accuracy test"):
        choose_hierarchy(32, 4, cost, accept=lambda h: False)
