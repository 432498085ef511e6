"""The distributed solver on 1-4 Gloo processes must reproduce the serial iterates."""

import time

import pytest
import torch

from torchpint.core import MGRIT, PeerClosedError, RankTimeoutError
from torchpint.problems import AllenCahn, Heat1D
from torchpint.runtime.comm import is_peer_closed, peer_failure
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


def _collectives(rank, world):
    """The in-place collectives, the gather to one rank (forward and mirrored ranks), and
    the timeouts a communicator takes from the group it is handed."""
    import torch.distributed as dist

    from torchpint.runtime.comm import Comm, GroupComm, group_timeout, new_group

    comm, back = GroupComm(None, 30.0), GroupComm(None, 30.0, reverse=True)
    buf = torch.full((3,), float(rank + 1))
    assert comm.all_reduce_(buf, "sum", "a buffer") is buf  # in place, no copy
    assert buf.tolist() == [world * (world + 1) / 2] * 3
    t = torch.arange(4.0)[::2] * (rank + 1)  # not contiguous: reduced through a copy
    assert comm.all_reduce_(t, "max", "a view").tolist() == [0.0, 2.0 * world]
    b = torch.full((2,), float(rank))
    assert comm.broadcast_(b, 1, "rank 1's values") is b and b.tolist() == [1.0, 1.0]
    shards = {"rank": rank, "layers": list(range(rank + 1))}  # of different sizes
    got = comm.gather_object(shards, 0, "the shards")
    assert got == ([{"rank": r, "layers": list(range(r + 1))} for r in range(world)]
                   if rank == 0 else None)
    mirrored = back.gather_object(back.rank, 0, "mirrored ranks")  # on world rank world-1
    assert mirrored == (list(range(world)) if back.rank == 0 else None)
    assert Comm().gather_object("x", 0, "one") == ["x"]
    one = torch.ones(2)
    assert Comm().all_reduce_(one, "sum", "x") is one and Comm().broadcast_(one, 0, "x") is one
    sub = new_group(list(range(world)), 7.0)
    assert group_timeout(sub) == 7.0 and GroupComm(sub).timeout.total_seconds() == 7.0
    assert group_timeout(None, default=12.0) == 12.0  # spawn_gloo's world: not recorded
    assert GroupComm(None).timeout.total_seconds() == 300.0
    dist.barrier()
    return True


def test_in_place_collectives_and_gather_to_one_rank():
    assert spawn_gloo(_collectives, 3) == [True] * 3


def test_a_peer_missing_at_the_rendezvous_is_a_typed_error():
    """A store that times out (a peer never came) or whose host went away is a typed peer
    failure; a network error of this rank's own (a port in use) is not."""
    import torch.distributed as dist

    from torchpint.runtime.comm import PeerError, _joining

    def boom(err):
        def start():
            raise err
        return start

    with pytest.raises(RankTimeoutError, match="joining the process group did not complete "
                                                "within 5 s"):
        _joining(boom(dist.DistStoreError("Timed out after 6 seconds waiting for clients. "
                                          "1/2 clients joined.")), "joining the process group",
                 5.0, 0)
    with pytest.raises(PeerClosedError):
        _joining(boom(dist.DistNetworkError("Failed to recv, got 0 bytes. Connection was "
                                            "likely closed.")), "creating a group", 5.0, 1)
    with pytest.raises(dist.DistNetworkError) as err:
        _joining(boom(dist.DistNetworkError("The server socket has failed to listen on any "
                                            "local network address. port: 29500, useIpv6: "
                                            "false, code: -98, name: EADDRINUSE")), "x", 5.0, 0)
    assert not isinstance(err.value, PeerError)
