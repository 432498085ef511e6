"""Every executor gives the serial executor's outputs, gradients and BN statistics."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tests.parareal.parareal_helpers import assert_grads_close, grads
from torchpint.models import preact_resnet
from torchpint.parareal import EXECUTORS, Executor, ThreadsExecutor, parareal_network
from torchpint.runtime.comm import Comm, GroupComm, PeerClosedError, RankTimeoutError
from torchpint.testing import spawn_gloo

pytestmark = pytest.mark.usefixtures("one_thread")


def _loss(out: torch.Tensor) -> torch.Tensor:
    return (out * torch.arange(out.shape[1], dtype=out.dtype)).sum()


def _step(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    net.zero_grad(set_to_none=True)
    out = net(x)
    _loss(out).backward()
    return out.detach()


def _pair(model, batch, chunks=3, k=1):
    net = parareal_network(model, chunks, iterations=k, balance="flops", example_input=batch)
    return net, copy.deepcopy(net)


def _assert_same(net, ref, batch):
    out, out_ref = _step(net, batch), _step(ref, batch)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=1e-9)
    assert_grads_close(grads(net), grads(ref))
    for (n, b), (_, b_ref) in zip(net.named_buffers(), ref.named_buffers(), strict=True):
        torch.testing.assert_close(b, b_ref, atol=1e-12, rtol=1e-12, msg=n)


@pytest.mark.parametrize("k, overlap", [(1, True), (2, True), (2, False)])
def test_threads_equals_serial(small_resnet, batch, k, overlap):
    net, ref = _pair(small_resnet, batch, k=k)
    net.set_executor(ThreadsExecutor(overlap=overlap))
    assert net.executor.name == "threads"
    _assert_same(net, ref, batch)
    net.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(batch), ref(batch), atol=1e-10, rtol=1e-9)


def test_threads_runs_chunks_on_their_own_threads(small_vgg, batch):
    """Forward and backward of the two chunks run on two distinct threads."""
    net = parareal_network(small_vgg, 2, balance="flops", example_input=batch, executor="threads")
    seen: dict[str, set] = {"fwd0": set(), "fwd1": set(), "bwd0": set(), "bwd1": set()}
    for j, f in enumerate(net.fine):
        f.register_forward_hook(lambda *a, j=j: seen[f"fwd{j}"].add(threading.get_ident()))
        f.register_full_backward_hook(lambda *a, j=j: seen[f"bwd{j}"].add(threading.get_ident()))
    _step(net, batch)
    assert all(len(s) == 1 for s in seen.values()), seen
    assert seen["fwd0"] != seen["fwd1"] and seen["bwd0"] != seen["bwd1"]


def test_threads_overlaps_the_sweep_with_chunk_0(small_vgg, batch):
    """F_0 starts before the coarse sweep C_0 has finished (the sweep is not a barrier)."""
    net = parareal_network(small_vgg, 2, balance="flops", example_input=batch, executor="threads")
    started = threading.Event()
    net.fine[0].register_forward_pre_hook(lambda *a: started.set())
    overlapped = []
    net.coarse[0].register_forward_hook(lambda *a: overlapped.append(started.wait(10.0)))
    _step(net, batch)
    assert overlapped == [True]


@pytest.mark.parametrize("k", [1, 3])
def test_threads_with_shared_coarse_equals_serial(small_resnet, batch, k):
    """C_j = F_j (parameters used by two chunks' nodes, gradients summed once each), and a
    frozen P, so that u = P(x) needs no gradient. (BN running statistics are not compared:
    a module shared by two chunks updates them in another order.)"""
    net = parareal_network(
        small_resnet,
        3,
        iterations=k,
        coarse=lambda j, f, a, b: f,
        balance="flops",
        example_input=batch,
    )
    net.pre.requires_grad_(False)
    ref = copy.deepcopy(net)
    net.set_executor("threads")
    torch.testing.assert_close(_step(net, batch), _step(ref, batch), atol=1e-10, rtol=1e-9)
    assert_grads_close(grads(net), grads(ref))


def test_threads_restores_thread_count(small_vgg, batch):
    net = parareal_network(small_vgg, 2, balance="flops", example_input=batch, executor="threads")
    before = torch.get_num_threads()
    _step(net, batch)
    assert torch.get_num_threads() == before


def test_devices_cpu_code_path_equals_serial(small_vgg, batch):
    net, ref = _pair(small_vgg, batch, chunks=2, k=2)
    net.set_executor("devices", devices=["cpu", "cpu"])
    _assert_same(net, ref, batch)


def test_devices_errors(small_vgg, batch):
    net = parareal_network(small_vgg, 2, balance="flops", example_input=batch)
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"cuda:{n + 3} does not exist"):
        net.set_executor("devices", devices=["cpu", f"cuda:{n + 3}"])
    with pytest.raises(ValueError, match="one device per chunk"):
        net.set_executor("devices", devices=["cpu", "cpu", "cpu"])
    with pytest.raises(ValueError, match="needs devices"):
        net.set_executor("devices")
    assert net.executor.name == "serial"  # a failed switch keeps the old executor


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_devices_on_two_gpus_equals_serial(small_resnet, batch):
    net, ref = _pair(small_resnet.float(), batch.float(), chunks=2, k=1)
    net.set_executor("devices", devices=["cuda:0", "cuda:1"])
    assert next(net.fine[1].parameters()).device == torch.device("cuda", 1)
    out = _step(net, batch.float().cuda(0))
    out_ref = _step(ref, batch.float())
    torch.testing.assert_close(out.cpu(), out_ref, atol=1e-4, rtol=1e-4)
    for (n, p), (_, q) in zip(net.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad.cpu(), q.grad, atol=1e-4, rtol=1e-3, msg=n)


def _dist_worker(rank: int, world: int, k: int) -> None:
    """One rank: distributed parareal network vs. a serial copy, forward, backward, step.

    ``spawn_gloo`` starts the process group (one intra-op thread) and ends it after.
    """
    torch.manual_seed(0)  # every rank builds the same model
    model = preact_resnet(depth=29, num_classes=4, width=2).double()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)).double()
    net = parareal_network(model, world, iterations=k, balance="flops", example_input=x)
    ref = copy.deepcopy(net)
    net.set_executor("distributed")
    out, out_ref = _step(net, x), _step(ref, x)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=1e-9)
    owned = ("pre.", "coarse.", "post.", f"fine.{rank}.")
    g, g_ref = grads(net), grads(ref)
    for name, v in g.items():
        if name.startswith(owned):  # full gradient, no world-size factor
            torch.testing.assert_close(v, g_ref[name], atol=1e-10, rtol=1e-9, msg=name)
        else:  # other ranks' chunks: no gradient here
            assert v is None, name
    # an optimizer step keeps the owned parameters equal to serial training
    with torch.no_grad():  # plain SGD (torch.optim would import dynamo: slow)
        for p in list(net.parameters()) + list(ref.parameters()):
            if p.grad is not None:
                p.add_(p.grad, alpha=-0.1)
    net.synchronize()  # and the other chunks come from their owners
    for (n, p), (_, q) in zip(net.state_dict().items(), ref.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-10, rtol=1e-9, msg=n)
    net.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), atol=1e-10, rtol=1e-9)
    # cut points measured by time are taken from rank 0
    timed = parareal_network(model, world, example_input=x, executor="distributed")
    assert timed.executor.name == "distributed"
    wrong = parareal_network(model, world + 1, balance="flops", example_input=x)
    try:
        wrong.set_executor("distributed")
        raise AssertionError("world size != chunks must fail")
    except ValueError as e:
        assert "chunks but the group has" in str(e)


@pytest.mark.parametrize("world, k", [(2, 1), (3, 2)])
def test_distributed_gloo_equals_serial(world, k):
    spawn_gloo(_dist_worker, world, k)


def test_distributed_needs_init(small_vgg, batch):
    net = parareal_network(small_vgg, 2, balance="flops", example_input=batch)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="init_process_group"):
            net.set_executor("distributed")


def test_deepcopy_keeps_executor(small_vgg, batch):
    net = parareal_network(small_vgg, 2, balance="flops", example_input=batch, executor="threads")
    other = copy.deepcopy(net)
    assert other.executor.name == "threads" and other.executor is not net.executor
    torch.testing.assert_close(other(batch), net(batch))


def test_registry_and_single_process_hooks(small_vgg, batch):
    """Names map to classes; in one process the replica hooks do nothing."""
    assert list(EXECUTORS) == ["serial", "threads", "devices", "distributed"]
    assert all(cls.name == name and issubclass(cls, Executor) for name, cls in EXECUTORS.items())
    net = parareal_network(small_vgg, 2, balance="flops", example_input=batch)
    before = copy.deepcopy(net.state_dict())
    for name in ("serial", "threads"):
        net.set_executor(name)
        ex = net.executor
        assert isinstance(ex, EXECUTORS[name]) and not ex.spans_processes
        assert type(ex.comm) is Comm and ex.comm.size == 1  # one process: no peers
        assert ex.agree_cuts([3]) == [3]
        ex.barrier()
        net.synchronize(torch.optim.SGD(net.parameters(), lr=0.1))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def _faulty_peer(rank: int, world: int, fault: str) -> tuple:
    """Rank 1 builds the network with rank 0, then hangs (sleeps past the timeout) or
    exits; rank 0's next step must fail with the typed error, within the timeout."""
    import time

    torch.manual_seed(0)
    model = preact_resnet(depth=29, num_classes=4, width=2).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    net = parareal_network(model, world, balance="flops", example_input=x,
                           executor="distributed", timeout=1.5)
    ex = net.executor
    assert ex.timeout == 1.5 and isinstance(ex.comm, GroupComm)
    assert ex.comm.timeout.total_seconds() == 1.5 and ex.comm.size == world
    other = copy.deepcopy(net)
    assert other.executor.timeout == 1.5  # a copy keeps it
    other.set_executor("distributed")  # by default: the group's own (unknown here), or 300
    assert other.executor.timeout == 300.0
    if rank == 1:
        if fault == "hang":
            time.sleep(4.0)
        return ("peer",)
    if fault == "exit":
        time.sleep(1.0)  # rank 1 has left
    t = time.perf_counter()
    try:
        _step(net, x)
    except RankTimeoutError as err:
        return type(err).__name__, time.perf_counter() - t, str(err)
    return ("no error",)


@pytest.mark.parametrize("fault", ["hang", "exit"])
def test_distributed_peer_failure_is_a_typed_error(fault):
    """A hung peer is a RankTimeoutError after the executor's timeout; one that exited a
    PeerClosedError (a RankTimeoutError too), not a backend traceback or a hang."""
    kind, elapsed, msg = spawn_gloo(_faulty_peer, 2, fault)[0]
    if fault == "hang":
        assert kind == "RankTimeoutError" and elapsed < 3.5, (kind, elapsed)
        assert "did not complete within 1.5 s" in msg and "chunk outputs" in msg
    else:
        assert kind == PeerClosedError.__name__, msg
        assert "closed the connection" in msg

