"""Parareal x data parallelism on 4 Gloo processes: 2 replicas of a 2-chunk network train
as 2 ranks (here: one serial process) with the whole batch."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchpint.common.syncbn import convert_sync_batchnorm
from torchpint.models import preact_resnet
from torchpint.parareal import parareal_network, process_grid
from torchpint.runtime.comm import RankTimeoutError
from torchpint.testing import spawn_gloo


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                         nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))  # fmt: skip


def _sgd(net: nn.Module, state: dict, lr: float = 0.1, momentum: float = 0.9) -> None:
    """SGD with momentum by hand (torch.optim would import dynamo: slow)."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.grad is None:
                continue
            buf = state.get(name)
            buf = p.grad.clone() if buf is None else buf.mul_(momentum).add_(p.grad)
            state[name] = buf
            p.add_(buf, alpha=-lr)


def _worker(rank: int, world: int, kind: str) -> None:
    grid = process_grid(2, 2, timeout=60)
    assert (grid.replica, grid.chunk) == divmod(rank, 2)
    torch.manual_seed(0)
    if kind == "mlp":
        model, x = _mlp().double(), torch.randn(5, 12, dtype=torch.float64)
    else:
        model = preact_resnet(depth=29, num_classes=3, width=2).double()
        x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    net = parareal_network(model, 2, balance="flops", example_input=x)
    ref = copy.deepcopy(net)  # serial, the whole batch
    net.set_executor("distributed", group=grid)
    if kind == "resnet":  # batch statistics of the whole batch
        convert_sync_batchnorm(net, grid.data_group)
    assert net.grid is grid
    assert grid.timeout == 60 and net.executor.timeout == 60  # the grid's, by default
    assert net.executor.comm.size == 4  # every rank that trains the network: all replicas
    assert grid.data_comm is grid.data_comm and grid.data_comm.size == 2
    assert grid.sum([1.0, float(rank)]) == [2.0, float(grid.chunk * 2 + 2)]  # ranks j, 2 + j
    xs, ys = grid.shard(x, y)  # 3 rows and 2: the average is weighted by rows
    assert len(xs) == (3 if grid.replica == 0 else 2)
    owned = ("pre.", "coarse.", "post.", f"fine.{grid.chunk}.")
    s_net, s_ref = {}, {}
    for _ in range(3):
        for m in (net, ref):
            m.zero_grad(set_to_none=True)
        out = net(xs)
        torch.nn.functional.cross_entropy(out, ys).backward()
        out_ref = ref(x)
        torch.nn.functional.cross_entropy(out_ref, y).backward()
        rows = torch.tensor_split(torch.arange(5), 2)[grid.replica]
        torch.testing.assert_close(out, out_ref[rows], atol=1e-10, rtol=1e-9)
        for (name, p), (_, q) in zip(net.named_parameters(), ref.named_parameters(), strict=True):
            if name.startswith(owned):
                torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=1e-9, msg=name)
        _sgd(net, s_net), _sgd(ref, s_ref)
    net.synchronize()
    for (name, p), (_, q) in zip(net.state_dict().items(), ref.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-10, rtol=1e-9, msg=name)
    with pytest.raises(ValueError, match="at least 2"):
        grid.shard(x[:1])


@pytest.mark.parametrize("kind", ["mlp", "resnet"])
def test_two_replicas_of_two_chunks_equal_the_whole_batch(kind):
    """MLP: the row-weighted gradient average alone; ResNet (batch norm): with
    ``convert_sync_batchnorm`` on the data groups, running statistics included."""
    spawn_gloo(_worker, 4, kind)


def _wrong_world(rank: int, world: int) -> None:
    with pytest.raises(ValueError, match="needs 4 ranks, the world has 2"):
        process_grid(2, 2)


def test_grid_must_fill_the_world():
    spawn_gloo(_wrong_world, 2)


def _hung_replica(rank: int, world: int) -> tuple:
    """Rank 3 (replica 1, chunk 1) hangs after the setup; the others take one step."""
    import time

    grid = process_grid(2, 2, timeout=1.5)
    torch.manual_seed(0)
    model, x = _mlp().double(), torch.randn(4, 12, dtype=torch.float64)
    net = parareal_network(model, 2, balance="flops", example_input=x, executor="distributed",
                           group=grid)
    assert net.executor.timeout == 1.5
    if rank == 3:
        time.sleep(5.0)
        return ("peer",)
    (xs,) = grid.shard(x)
    try:
        net(xs).square().sum().backward()
    except RankTimeoutError as err:
        return type(err).__name__, str(err)
    return ("no error",)


def test_a_hung_replica_is_a_typed_error_on_every_rank():
    """Its replica's partner fails in the chunk exchange; its chunk's partner in the other
    replica in the gradient average, which runs in a callback of the autograd engine: the
    error keeps its type through ``backward``, and names the world's ranks."""
    out = spawn_gloo(_hung_replica, 4)
    assert all(o[0] in ("RankTimeoutError", "PeerClosedError") for o in out[:3]), out
    assert "chunk outputs" in out[2][1]  # rank 2: the same replica
    assert out[1][0] == "RankTimeoutError" and "replicas' gradients" in out[1][1]
    # named by their world ranks (rank 2 is rank 0 of its replica's group)
    assert out[1][1].startswith("rank 1: ") and out[2][1].startswith("rank 2: "), out
