"""SyncBatchNorm on Gloo: replicas with uneven shares of a batch train as one process
with the whole batch (forward, gradients, running statistics)."""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from torchpint.common.syncbn import SyncBatchNorm, convert_sync_batchnorm
from torchpint.runtime.comm import GroupComm
from torchpint.testing import spawn_gloo


def _loss(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (y * c).sum(dim=(1, 2, 3)).pow(2).mean()  # a mean over rows, as cross entropy


def _worker(rank: int, world: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = (3.0 + torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)).requires_grad_()
    c = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64)
    ref = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=g)
        ref.bias.uniform_(-0.5, 0.5, generator=g)
    mod = convert_sync_batchnorm(nn.Sequential(copy.deepcopy(ref)))[0]
    assert isinstance(mod, SyncBatchNorm)
    alt = convert_sync_batchnorm(nn.Sequential(copy.deepcopy(ref)), GroupComm(None, 30.0))[0]
    rows = torch.tensor_split(torch.arange(5), world)[rank]  # 3 and 2 rows
    w = len(rows) / 5
    for _ in range(2):  # two steps: the running statistics move twice
        ref.zero_grad(), mod.zero_grad()
        x.grad = None
        y_ref = ref(x)
        _loss(y_ref, c).backward()
        gx_ref, gw_ref = x.grad[rows].clone(), ref.weight.grad.clone()
        xl = x.detach()[rows].clone().requires_grad_()
        y = mod(xl)
        torch.testing.assert_close(y, y_ref[rows].detach(), atol=1e-12, rtol=1e-10)
        _loss(y, c).backward()
        torch.testing.assert_close(w * xl.grad, gx_ref, atol=1e-12, rtol=1e-10)
        xa = x.detach()[rows].clone().requires_grad_()  # over a Comm: the same
        ya = alt(xa)
        _loss(ya, c).backward()
        torch.testing.assert_close(ya, y, atol=0, rtol=0)
        torch.testing.assert_close(xa.grad, xl.grad, atol=0, rtol=0)
        gw = w * mod.weight.grad  # the grid's row-weighted average of the replicas
        dist.all_reduce(gw)
        torch.testing.assert_close(gw, gw_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(mod.running_mean, ref.running_mean, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(mod.running_var, ref.running_var, atol=1e-12, rtol=1e-10)
    assert int(mod.num_batches_tracked) == 2
    mod.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(mod(x[rows]), ref(x[rows]), atol=1e-12, rtol=1e-10)


def test_sync_batchnorm_equals_whole_batch_on_uneven_shares():
    spawn_gloo(_worker, 2)


def test_convert_shares_parameters_and_keeps_sharing():
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Linear(3, 4), bn, nn.Sequential(bn))
    keys = set(model.state_dict())
    x = torch.randn(6, 3)
    y_ref = model(x)  # one process, no process group: plain batch norm
    out = convert_sync_batchnorm(model)
    assert isinstance(out[1], SyncBatchNorm) and out[1] is out[2][0]  # still one module
    assert out[1].weight is bn.weight and out[1].running_var is bn.running_var
    assert set(out.state_dict()) == keys  # checkpoints stay compatible
    bn.running_mean.zero_(), bn.running_var.fill_(1), bn.num_batches_tracked.zero_()
    torch.testing.assert_close(out(x), y_ref)


def test_a_pickled_copy_is_local_and_a_deep_copy_shares_the_group():
    """A process group never leaves its process: pickled (gathered to one rank), the copy
    normalises over its own batch; deep-copied, it keeps the group."""
    import pickle
    import threading

    from torchpint.runtime.comm import Comm

    group = threading.Lock()  # stands for a process group: it cannot be pickled
    mod = SyncBatchNorm(3, group).double()
    sent = pickle.loads(pickle.dumps(mod))
    assert type(sent.group) is Comm and sent.group.size == 1 and mod.group is group
    assert copy.deepcopy(mod).group is group
    ref = nn.BatchNorm2d(3).double()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(sent(x), ref(x), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(sent.running_var, ref.running_var, atol=1e-12, rtol=1e-12)
