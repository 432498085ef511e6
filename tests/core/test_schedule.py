"""Receives posted early, in the order the last iteration of the same kind made them."""

import math

import pytest
import torch

from torchpint.core import MGRIT
from torchpint.core.schedule import ReceiveSchedule
from torchpint.problems import Dahlquist
from torchpint.testing import spawn_gloo


class _FakeComm:
    """Two ranks; every message holds its tag; logs what the schedule asks for."""

    rank, size = 1, 2

    def __init__(self):
        self.log = []

    def recv_into(self, buf, src, tag, what):
        self.log.append(("recv", src, tag))
        buf.fill_(tag)

    def irecv(self, buf, src, tag, what):
        self.log.append(("irecv", src, tag))
        buf.fill_(tag)
        return (src, tag)

    def wait(self, handle):
        self.log.append(("wait", *handle))


def _iteration(schedule, first, tags):
    schedule.begin(first, torch.zeros(2))
    for tag in tags:
        buf = torch.zeros(2)
        schedule.recv(buf, 0, tag, "a state")
        assert torch.equal(buf, torch.full((2,), float(tag)))
    schedule.end()


def test_each_kind_of_iteration_records_then_posts_its_order():
    comm = _FakeComm()
    s = ReceiveSchedule(comm)
    _iteration(s, True, [1, 2])  # first of a solve: unknown, received directly
    _iteration(s, False, [1, 3, 1])  # a later one: unknown too
    assert [e[0] for e in comm.log] == ["recv"] * 5
    comm.log.clear()
    _iteration(s, False, [1, 3, 1])
    assert comm.log == [("irecv", 0, 1), ("irecv", 0, 3), ("irecv", 0, 1),
                        ("wait", 0, 1), ("wait", 0, 3), ("wait", 0, 1)]
    comm.log.clear()
    _iteration(s, True, [1, 2])
    assert comm.log[:2] == [("irecv", 0, 1), ("irecv", 0, 2)]
    assert len(s._boxes) == 3  # buffers are kept for reuse


def test_one_rank_posts_nothing():
    comm = _FakeComm()
    comm.size = 1
    s = ReceiveSchedule(comm)
    s.begin(True, torch.zeros(1))
    s.end()
    assert comm.log == []


def _problem():
    # a scalar multiply per step: no BLAS kernel whose rounding could depend on the
    # process (the alignment of its buffers), so the iterates compare bit for bit
    return Dahlquist(nt=48, lam=-2.0)


def _distributed(rank, world):
    res = MGRIT(_problem(), cycle="F", iterations=3, group="world").solve()
    again = MGRIT(_problem(), cycle="F", iterations=3, group="world").solve()  # new schedule
    return res.u, res.points, res.residuals, again.residuals


def test_distributed_iterates_equal_the_serial_ones():
    ref = MGRIT(_problem(), cycle="F", iterations=3).solve()
    ranks = spawn_gloo(_distributed, 3)
    assert [i for _, points, _, _ in ranks for i in points] == list(range(49))
    assert torch.equal(torch.cat([u for u, _, _, _ in ranks]), ref.u)
    for _, _, residuals, again in ranks:
        assert residuals == again and len(residuals) == 3
        # the distributed norm adds the ranks' squares in another order
        assert residuals == pytest.approx(ref.residuals, rel=1e-12, abs=0)


def _skipped(rank, world):
    res = MGRIT(_problem(), levels=3, cfactor=4, iterations=2, skip=True, group="world").solve()
    return res.u, res.residuals


def test_distributed_skip_equals_the_serial_skip():
    """The skipped first iteration sends no restriction: its own receive order is learnt."""
    ref = MGRIT(_problem(), levels=3, cfactor=4, iterations=2, skip=True).solve()
    ranks = spawn_gloo(_skipped, 3)
    assert torch.equal(torch.cat([u for u, _ in ranks]), ref.u)
    assert ranks[0][1] == pytest.approx(ref.residuals, rel=1e-12, abs=0)


def _unwatched(rank, world):
    kw = {"levels": 3, "cfactor": 4, "iterations": 3, "divergence_factor": math.inf}
    res = MGRIT(_problem(), group="world", **kw).solve()  # residuals agreed at its end
    again = MGRIT(_problem(), group="world", **kw).solve()
    return res.u, res.residuals, again.u


def test_distributed_unwatched_fixed_solves_equal_the_serial_one():
    """Ranks no longer held in step by a collective per iteration still meet every
    message in order: the iterates equal the serial solve's bit for bit, twice."""
    ref = MGRIT(_problem(), levels=3, cfactor=4, iterations=3,
                divergence_factor=math.inf).solve()
    ranks = spawn_gloo(_unwatched, 3)
    assert torch.equal(torch.cat([u for u, _, _ in ranks]), ref.u)
    assert torch.equal(torch.cat([a for _, _, a in ranks]), ref.u)
    for _, residuals, _ in ranks:
        assert residuals == pytest.approx(ref.residuals, rel=1e-12, abs=0)
