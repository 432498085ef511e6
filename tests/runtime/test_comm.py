"""The distributed solver on 1-4 Gloo processes must reproduce the serial iterates."""

import time

import pytest
import torch

from torchpint.core import MGRIT, PeerClosedError, RankTimeoutError
from torchpint.core.distributed import is_peer_closed, peer_failure
from torchpint.problems import AllenCahn, Heat1D
from torchpint.testing import spawn_gloo

CASES = [
    (Heat1D, dict(cycle="V", relax="F")),
    (Heat1D, dict(cycle="F", relax="FCF", cf_iter=2, nested=True)),
    (AllenCahn, dict(cycle="F", relax="FCF")),
    (AllenCahn, dict(levels=2, cfactor=4, relax="F")),
]
# uneven slabs; [2, 1, 1, 61] and [30, 1, 34] have ranks that own no C-point on coarse levels
SLABS = {1: [None], 2: [None, [60, 5]], 3: [None, [30, 1, 34]], 4: [[2, 1, 1, 61], [20, 21, 3, 21]]}


def _solve(problem_cls, kw, group=None, slabs=None):
    return MGRIT(problem_cls(nt=64, nx=17), tol=1e-11, max_iter=40, group=group, slabs=slabs,
                 **kw).solve()


def _worker(rank, world):
    out = []
    for cls, kw in CASES:
        for slabs in SLABS[world]:
            r = _solve(cls, kw, "world", slabs)
            out.append((r.residuals, r.u, r.points, r.final))
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_distributed_equals_serial(world):
    results = spawn_gloo(_worker, world)
    serial = [_solve(cls, kw) for cls, kw in CASES for _ in SLABS[world]]
    for j, ref in enumerate(serial):
        ranks = [results[r][j] for r in range(world)]
        u = torch.cat([rk[1] for rk in ranks])
        assert torch.equal(u, ref.u)  # same operations per point: identical iterates
        assert [p for rk in ranks for p in rk[2]] == list(range(65))
        assert ranks[0][0] == pytest.approx(ref.residuals, rel=1e-13, abs=0)
        assert all(torch.equal(rk[3], ref.final) for rk in ranks)


def _silent_peer(rank, world):
    if rank == 1:
        time.sleep(4.0)  # never takes part: like a hung rank
        return "slept"
    t = time.perf_counter()
    try:
        MGRIT(Heat1D(nt=16, nx=9), group="world", timeout=1.0).solve()
    except RankTimeoutError as err:
        return ("timeout", time.perf_counter() - t, str(err))
    return "no error"


def test_a_hung_rank_is_an_error_not_a_hang():
    out = spawn_gloo(_silent_peer, 2)
    kind, elapsed, msg = out[0]
    assert kind == "timeout" and elapsed < 3.5
    assert "did not complete within 1 s" in msg and "rank" in msg


def _early_exit(rank, world):
    if rank == 1:
        return "left"  # exits at once: its connections close
    time.sleep(1.0)
    try:
        MGRIT(Heat1D(nt=16, nx=9), group="world", timeout=20.0).solve()
    except RankTimeoutError as err:
        return (type(err).__name__, str(err))
    return "no error"


def test_a_peer_that_exited_is_named_not_a_timeout():
    kind, msg = spawn_gloo(_early_exit, 2)[0]
    assert kind == "PeerClosedError"
    assert "rank 1 closed the connection (it exited or crashed" in msg
    assert "did not complete" not in msg


@pytest.mark.parametrize("text, closed", [
    ("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1234", True),
    ("[gloo/transport/tcp/pair.cc:598] Connection reset by peer", True),
    ("Timed out waiting 1000ms for recv operation to complete", False),
])
def test_peer_failure_messages(text, closed):
    err = peer_failure(0, "receiving a boundary state on level 0 from rank 1",
                       RuntimeError(text), 20.0, peer=1)
    assert isinstance(err, RankTimeoutError) and is_peer_closed(text) == closed
    assert isinstance(err, PeerClosedError) == closed
    if closed:
        assert "rank 1 closed the connection (it exited or crashed" in str(err)
    else:
        assert "did not complete within 20 s" in str(err)
