"""Layer-parallel x data parallelism on 4 Gloo processes (2 slabs x 2 replicas, float64):
the replicas train as one process with the whole batch, batch norm synced; local batch
norm differs; a rank lost in either direction stops every rank with exit code 4."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchpint.common.process_grid import process_grid
from torchpint.common.syncbn import SyncBatchNorm
from torchpint.layerparallel import LayerParallel
from torchpint.testing import free_port, spawn_gloo

C, N = 3, 6  # channels, layers: 6 over 2 slabs with cfactor 2 needs an edge layer
_g = torch.Generator().manual_seed(1)
X = torch.randn(5, 2, 4, 4, dtype=torch.float64, generator=_g)  # 3 rows and 2 per replica
Y = torch.randint(0, 3, (5,), generator=_g)


def _net(group, levels: int, replica_bn: str = "sync") -> LayerParallel:
    torch.manual_seed(0)
    open_ = nn.Sequential(nn.Conv2d(2, C, 3, padding=1), nn.BatchNorm2d(C), nn.ReLU())
    steps = [nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.BatchNorm2d(C), nn.Tanh())
             for _ in range(N)]
    close = nn.Sequential(nn.Flatten(), nn.Linear(C * 16, 3))
    return LayerParallel(open_, steps, close, T=1.0, levels=levels, cfactor=2,
                         fwd_iterations=2, bwd_iterations=1, bwd_start="cold", group=group,
                         replica_bn=replica_bn).double()


def _sgd(net: nn.Module, state: dict, lr: float = 0.1, momentum: float = 0.9) -> None:
    """SGD with momentum by hand (torch.optim would import dynamo: slow)."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.grad is not None:
                buf = state.get(name)
                buf = p.grad.clone() if buf is None else buf.mul_(momentum).add_(p.grad)
                state[name] = buf
                p.add_(buf, alpha=-lr)


def _train(net: nn.Module, shard=lambda x, y: (x, y)) -> None:
    """Three SGD steps on three batches (each replica on its rows of them)."""
    state: dict = {}
    for b in range(3):
        x, y = shard(X + 0.1 * b, Y)
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        _sgd(net, state)


def _weights(net: nn.Module | None) -> dict[str, torch.Tensor] | None:
    return None if net is None else {k: v.clone() for k, v in net.state_dict().items()}


def _worker(rank: int, world: int) -> dict:
    grid = process_grid(2, 2, timeout=60)
    out: dict = {"place": (grid.replica, grid.stage)}
    for levels in (2, 1):
        net = _net(grid, levels)
        assert net.fit_comm().size == 4 and net.comm.size == 2 and net.sharded_state()
        assert any(isinstance(m, SyncBatchNorm) for m in net.modules())
        _train(net, net.shard_batch)
        net.synchronize()
        out[levels] = _weights(net.serial())  # rank 0 of each replica
    local = _net(grid, 2, "local")
    assert not any(isinstance(m, SyncBatchNorm) for m in local.modules())
    _train(local, local.shard_batch)
    local.synchronize()  # the replicas' running statistics: replica 0's
    out["local"] = _weights(local.serial())
    assert local.sum_over_replicas([1.0, float(rank)]) == [2.0, float(2 * grid.stage + 2)]
    try:
        local.shard_batch(X[:1], Y[:1])
    except ValueError as err:
        out["small"] = str(err)
    return out


@pytest.fixture(scope="module")
def grid_runs() -> list[dict]:
    return spawn_gloo(_worker, 4)


def _close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


@pytest.mark.parametrize("levels", [2, 1])
def test_two_replicas_of_two_slabs_train_as_one_process_with_the_whole_batch(grid_runs, levels):
    """Batch norm synced: weights and running statistics after 3 SGD steps equal one
    process's layer-parallel training on the whole batch (an edge layer with batch norm
    included); at one level, also ordinary serial backprop's."""
    assert [r["place"] for r in grid_runs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    ref = _net(None, levels)
    _train(ref)
    for r in (0, 2):  # rank 0 of each replica holds its replica's whole network
        _close(grid_runs[r][levels], _weights(ref.serial()), 1e-10)
    assert grid_runs[1][levels] is None and grid_runs[3][levels] is None
    if levels == 1:
        serial = _net(None, 1).serial()
        _train(serial)
        _close(grid_runs[0][1], _weights(serial), 1e-10)


def test_local_batch_norm_trains_and_differs_from_synced(grid_runs):
    local, synced = grid_runs[0]["local"], grid_runs[0][2]
    _close(grid_runs[2]["local"], local, 0.0)  # synchronize made the replicas equal
    assert all(torch.isfinite(v).all() for v in local.values() if v.is_floating_point())
    diff = max(float((local[k].double() - synced[k].double()).abs().max()) for k in local)
    assert diff > 1e-6


def test_a_batch_smaller_than_the_replicas_is_a_clear_error(grid_runs):
    for r in grid_runs:
        assert r["small"] == ("a batch of 1 rows cannot be split among 2 data-parallel "
                              "replicas; use a batch size of at least 2")


def test_replica_bn_is_checked():
    with pytest.raises(ValueError, match="replica_bn must be one of"):
        _net(None, 1, "fast")


# -- a rank lost: every other exits 4 ----------------------------------------------------
TIMEOUT = 5  # --timeout: seconds a rank waits for its peers
TINY = ["train-layer-parallel", "--image-size", "8", "--layers", "4", "--channels", "4",
        "--levels", "2", "--cfactor", "2", "--batch-size", "64", "--epochs", "50",
        "--no-progress", "--data-parallel", "2", "--timeout", str(TIMEOUT)]  # fmt: skip
# Rank 3 (replica 1, slab 1) dies at its second training step: in the replicas' gradient
# average, which its replica peer (rank 1) is waiting in, or at the start of a forward
# solve, which its slab peer (rank 2) is waiting in. The others learn it from a peer.
RANK = textwrap.dedent("""
    import os, sys
    from torchpint.cli import main
    from torchpint.runtime.comm import abandon
    where = os.environ["DIE_IN"]
    if os.environ["RANK"] == "3":
        from torchpint.common import process_grid
        from torchpint.layerparallel import module
        cls, name = (process_grid, "average_by_rows") if where == "replicas" else \\
            (module.LayerParallel, "forward_solve")
        real, calls = getattr(cls, name), []
        def dying(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:  # the gradient check's, a first step's, then this one
                os._exit(9)
            return real(*args, **kwargs)
        setattr(cls, name, dying)
    abandon(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("die_in", ["replicas", "slabs"])
def test_a_lost_replica_or_slab_peer_exits_4_on_every_rank(die_in, tmp_path: Path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT", "TORCHPINT_TRACEBACK")}  # fmt: skip
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE="4", LOCAL_WORLD_SIZE="4", DIE_IN=die_in)
    procs = []
    for r in range(4):
        with open(tmp_path / f"err{r}", "w") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", RANK, *TINY], cwd=tmp_path, stdout=subprocess.DEVNULL,
                stderr=err, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}))
    try:
        deadline = time.monotonic() + 180  # 4 processes start on a busy machine
        for r, p in enumerate(procs):
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"rank {r} still runs: {(tmp_path / f'err{r}').read_text()}")
        assert procs[3].returncode == 9
        for r in range(3):
            err = (tmp_path / f"err{r}").read_text()
            assert procs[r].returncode == 4, f"rank {r}: exit {procs[r].returncode}\n{err}"
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "a peer rank failed" in lines[0], err
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()


# -- the command line --------------------------------------------------------------------
CLI = ["train-layer-parallel", "--image-size", "8", "--layers", "4", "--channels", "4",
       "--levels", "2", "--cfactor", "2", "--batch-size", "256", "--epochs", "1",
       "--no-progress"]  # fmt: skip


def _cli_rank(rank: int, world: int, args: list[str]) -> int:
    import io
    from contextlib import redirect_stdout

    from torchpint.cli import main

    with redirect_stdout(io.StringIO()):
        return main(args)


def test_cli_two_replicas_of_two_slabs_train_as_one_process(tmp_path):
    """``--data-parallel 2`` on 4 ranks: the loss and accuracy of one process (conv_resnet
    has no batch norm; float32), every rank's own checkpoint file."""
    import json

    from torchpint.cli import main

    one, grid, d = tmp_path / "one.json", tmp_path / "grid.json", tmp_path / "ck"
    assert main([*CLI, "--json", str(one)]) == 0
    args = [*CLI, "--data-parallel", "2", "--checkpoint", str(d), "--json", str(grid)]
    assert spawn_gloo(_cli_rank, 4, args) == [0, 0, 0, 0]
    assert sorted(p.name for p in d.iterdir()) == [f"layer_parallel.pt.rank{r}" for r in range(4)]
    a, b = (json.loads(p.read_text()) for p in (one, grid))
    assert b["config"]["world"] == 4 and b["config"]["layer_slabs"] == [[0, 2], [2, 4]]
    for ha, hb in zip(a["layer_parallel"]["history"], b["layer_parallel"]["history"],
                      strict=True):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-5)
        assert hb["test_accuracy"] == pytest.approx(ha["test_accuracy"], abs=1e-9)


@pytest.mark.parametrize("world, message", [
    (None, "--data-parallel 2 trains 2 replicas on ranks of their own: launch with torchrun"),
    ("3", "--data-parallel 2 splits the ranks into 2 replicas, but torchrun started 3 ranks"),
])
def test_cli_a_world_the_replicas_do_not_divide_is_bad_input(world, message, monkeypatch,
                                                             capsys):
    """Refused before joining the process group (torchrun's WORLD_SIZE), on every rank."""
    from torchpint.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if world is not None:
        monkeypatch.setenv("WORLD_SIZE", world)
    assert main([*CLI, "--data-parallel", "2"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
