"""LayerParallel against exact serial forward and backprop of ``serial()`` (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.layerparallel.backprop import errors, run
from torchpint.layerparallel import LayerParallel

pytestmark = pytest.mark.usefixtures("one_thread")

D = 6


class _HalfStep(nn.Module):
    """A layer whose forward takes the step size: it is the whole step."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, D)

    def forward(self, x: torch.Tensor, h: float) -> torch.Tensor:
        return x + h * torch.tanh(self.lin(x)) - 0.5 * h * x


def _net(levels: int, cfactor: int, iters: int, relax: str = "F", n: int = 16,
         layer: type[nn.Module] | None = None, **kw: str) -> LayerParallel:
    torch.manual_seed(0)
    steps = [layer() if layer else nn.Sequential(nn.Linear(D, D), nn.Tanh()) for _ in range(n)]
    return LayerParallel(nn.Linear(3, D), steps, nn.Linear(D, 2), T=2.0, levels=levels,
                         cfactor=cfactor, relax=relax, fwd_iterations=iters,
                         bwd_iterations=iters, **kw).double()


X = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _run(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return run(m, X)


def _errors(net: LayerParallel) -> tuple[float, float]:
    return errors(net, X)


STARTS = [dict(fwd_start=f, bwd_start=b) for f, b in
          [("warm", "cold"), ("skip", "skip"), ("cold", "warm"), ("skip", "cold")]]


@pytest.mark.parametrize("starts", STARTS)
@pytest.mark.parametrize("layer", [None, _HalfStep])
def test_one_level_is_backprop(layer, starts):
    assert max(_errors(_net(1, 2, 1, layer=layer, **starts))) <= 1e-12


@pytest.mark.parametrize("starts", STARTS)
@pytest.mark.parametrize("relax", ["F", "FCF"])
def test_iterated_to_convergence_is_backprop(relax, starts):
    assert max(_errors(_net(3, 2, 30, relax, **starts))) <= 1e-9


def test_gradcheck_at_one_level():
    """torch's own check of the node's backward against finite differences (float64)."""
    net = _net(1, 2, 1, n=4)
    x = X[:2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: net(x), (x,), eps=1e-6, atol=1e-7)


def test_a_layer_shared_by_several_steps_gets_all_their_gradients():
    """The adjoint's final sweep adds each step's parameter gradient to its parameter: a
    module used by several steps (tied weights) gets the sum, as in backprop."""
    torch.manual_seed(0)
    shared = nn.Sequential(nn.Linear(D, D), nn.Tanh())
    steps = [shared, nn.Sequential(nn.Linear(D, D), nn.Tanh())] * 4
    net = LayerParallel(nn.Linear(3, D), steps, nn.Linear(D, 2), levels=1).double()
    assert max(_errors(net)) <= 1e-12


def test_skip_ignores_the_warm_start_and_cold_adjoint_steps_of_zero_cost_nothing():
    net = _net(3, 2, 2, fwd_start="skip", bwd_start="cold")
    _run(net)
    first = net.report.step_counts
    out, grad = _run(net)  # the same batch: skip starts from scratch again
    assert net.report.step_counts == first
    ref = _net(3, 2, 2, fwd_start="skip", bwd_start="cold")
    assert torch.equal(out, _run(ref)[0])
    # a cold adjoint's first F-relaxation steps zeros past its first interval: not counted
    solver = net._adj[1]
    assert sum(first["adjoint"]) < sum(solver._cycler.step_counts)


def test_a_bad_start_is_refused():
    with pytest.raises(ValueError, match="fwd_start must be one of"):
        _net(2, 2, 1, fwd_start="hot")


def test_two_level_f_relaxation_is_exact_after_n_over_m_iterations_not_before():
    n, m = 16, 4
    assert max(_errors(_net(2, m, n // m))) <= 1e-12
    assert _errors(_net(2, m, n // m - 1))[1] > 1e-6  # the gradient is not exact yet


def test_gradient_error_falls_with_more_iterations():
    errs = [_errors(_net(3, 2, k))[1] for k in range(1, 5)]
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[0] > 1e-2 and errs[-1] < 1e-2


def test_warm_start_carries_iterations_across_batches():
    """One forward iteration per call, each from the last call's solution: on the same
    batch the output approaches the exact one, as iterations would."""
    net = _net(3, 2, 1)
    exact = net.serial()(X).detach()
    errs = []
    for _ in range(4):
        with torch.no_grad():
            errs.append(float((net(X) - exact).norm() / exact.norm()))
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 1e-2 < errs[0]


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="divisible by cfactor"):
        LayerParallel(nn.Identity(), [nn.Linear(D, D) for _ in range(10)], nn.Identity(),
                      levels=3, cfactor=2)
    shrink = LayerParallel(nn.Identity(), [nn.Linear(D, D - 1) for _ in range(4)],
                           nn.Identity(), levels=2, cfactor=2).double()
    with pytest.raises(ValueError, match="shape"):
        shrink(torch.zeros(2, D, dtype=torch.float64))
    with pytest.raises(ValueError, match="fwd_iterations"):
        _net(2, 2, 0)


def test_trains_with_a_torch_optimizer():
    net = _net(3, 2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    target = torch.zeros(5, 2, dtype=torch.float64)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = (net(X) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def _copies(extra: nn.Module, n: int = 8) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(D, D), copy.deepcopy(extra), nn.Tanh()) for _ in range(n)]


def test_batch_norm_statistics_are_updated_once_per_batch_as_serial_training_does():
    """Converged MGRIT with batch norm in the steps trains as the serial network does:
    the same weights and the same running statistics after a few SGD steps."""
    net = LayerParallel(nn.Linear(3, D), _copies(nn.BatchNorm1d(D)), nn.Linear(D, 2), T=2.0,
                        levels=3, cfactor=2, fwd_iterations=20, bwd_iterations=20).double()
    ref = copy.deepcopy(net).serial()
    for m in (net, ref):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for b in range(3):
            opt.zero_grad()
            m(X + b).square().sum().backward()
            opt.step()
    got = {k: v for k, v in net.state_dict().items() if k != "_extra_state"}  # warm start
    want = ref.state_dict()
    assert len(got) == len(want)
    for (k, a), b in zip(got.items(), want.values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=k)
    assert int(net.steps[0][1].num_batches_tracked) == 3


def test_dropout_masks_are_fixed_per_batch_and_layer():
    """With dropout, MGRIT iterations converge (every call of a layer in one batch draws
    the same mask) to the sequential sweep with those masks (one level); a new batch
    draws new masks, and eval mode none."""
    def net(levels: int) -> LayerParallel:
        torch.manual_seed(5)  # the same mask seed
        return LayerParallel(nn.Linear(3, D), _copies(nn.Dropout(0.3)), nn.Linear(D, 2),
                             T=2.0, levels=levels, cfactor=2, fwd_iterations=20,
                             bwd_iterations=20).double()

    multi, one = net(3), net(1)
    assert multi.keyed_rng and multi.fwd_residuals == []
    out_m, grad_m = _run(multi)
    out_1, grad_1 = _run(one)
    assert multi.fwd_residuals[-1] < 1e-10  # a fixed point exists: the masks are fixed
    torch.testing.assert_close(out_m, out_1, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad_m, grad_1, rtol=0, atol=1e-10)
    assert not torch.allclose(multi(X), out_m)  # the next batch: other masks
    multi.eval()
    with torch.no_grad():
        torch.testing.assert_close(multi(X), multi.serial()(X), rtol=0, atol=1e-10)


def test_other_running_statistics_are_refused_in_training():
    net = LayerParallel(nn.Identity(), _copies(nn.InstanceNorm1d(D, track_running_stats=True),
                                               4), nn.Identity(), levels=2, cfactor=2).double()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        net(torch.randn(8, D, D, dtype=torch.float64))
    net.eval()
    with torch.no_grad():
        net(torch.randn(8, D, D, dtype=torch.float64))


def test_relaxation_per_level():
    torch.manual_seed(0)
    layers = [nn.Linear(D, D) for _ in range(16)]
    assert LayerParallel(nn.Identity(), layers, nn.Identity(), levels=3, cfactor=2).relax == (
        "F", "FCF")  # TorchBraid's default
    assert LayerParallel(nn.Identity(), layers, nn.Identity(), levels=1).relax == ()
    with pytest.raises(ValueError, match="one per level"):
        LayerParallel(nn.Identity(), layers, nn.Identity(), levels=3, cfactor=2,
                      relax=("F",))
    errs = [max(_errors(_net(3, 2, 30, relax))) for relax in (("F", "FCF"), ("FCF", "F"))]
    assert max(errs) <= 1e-9


def test_steps_from_a_function():
    torch.manual_seed(0)
    made = LayerParallel(nn.Identity(), lambda k: nn.Linear(D, D), nn.Identity(),
                         num_steps=8, levels=2, cfactor=2)
    assert len(made.steps) == 8 and made.layers == range(8)
    with pytest.raises(ValueError, match="num_steps"):
        LayerParallel(nn.Identity(), lambda k: nn.Linear(D, D), nn.Identity())


def test_the_last_batch_is_reported_as_one_result_object():
    from torchpint.layerparallel import LayerParallel

    torch.manual_seed(0)
    net = LayerParallel(torch.nn.Linear(3, 4), [torch.nn.Linear(4, 4) for _ in range(8)],
                        torch.nn.Linear(4, 2), levels=2, cfactor=2).double()
    net(torch.randn(5, 3, dtype=torch.float64)).sum().backward()
    r = net.report
    assert r.fwd_residuals == net.fwd_residuals and len(r.fwd_residuals) == net.fwd_iterations
    assert r.bwd_residuals == net.bwd_residuals and len(r.bwd_residuals) == net.bwd_iterations
    assert set(r.step_counts) == {"forward", "adjoint"}
    assert r.to_dict()["timings"]["forward_solve"] > 0


def test_old_keyword_spellings_still_work_with_a_deprecation():
    with pytest.warns(DeprecationWarning, match="fwd_iterations"):
        net = LayerParallel(nn.Linear(3, 4), [nn.Linear(4, 4) for _ in range(4)],
                            nn.Linear(4, 2), levels=2, cfactor=2, fwd_iters=3)
    assert net.fwd_iterations == net.fwd_iters == 3


# -- the module contract: what an ordinary nn.Module allows -----------------------------
A, B = X, torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def _two_forwards(m: nn.Module) -> torch.Tensor:
    """``(f(m(a)) + f(m(b))).backward()``: both forwards before one backward."""
    m.zero_grad()
    (m(A).square().sum() + m(B).tanh().sum()).backward()
    return torch.cat([p.grad.reshape(-1) for p in m.parameters()])


@pytest.mark.parametrize(("levels", "cfactor", "iters", "tol"),
                         [(1, 2, 1, 1e-12), (2, 4, 20, 1e-9), (3, 2, 20, 1e-9)])
def test_two_forwards_then_one_backward_is_backprop(levels, cfactor, iters, tol):
    """Each forward's node keeps its own states and graphs: the second forward (same
    shape, warm-started from the first) does not overwrite what the first one saved."""
    net = _net(levels, cfactor, iters)
    got, want = _two_forwards(net), _two_forwards(net.serial())
    assert float((got - want).norm() / want.norm()) <= tol
    torch.testing.assert_close(_two_forwards(net), got, rtol=0, atol=1e-13)  # and again


def test_two_forwards_with_dropout_keep_each_batchs_masks():
    """With keyed masks, the first forward's backward uses the first batch's masks even
    after the second forward drew others (its coarse adjoint steps, recorded in the
    backward, too: one adjoint iteration shows them), as backpropagating each alone."""
    def net() -> LayerParallel:
        torch.manual_seed(5)
        return LayerParallel(nn.Linear(3, D), _copies(nn.Dropout(0.3)), nn.Linear(D, 2),
                             T=2.0, levels=2, cfactor=2, fwd_iterations=2,
                             bwd_iterations=1).double()
    together, apart = net(), net()
    _two_forwards(together)
    apart.zero_grad()
    apart(A).square().sum().backward()
    apart(B).tanh().sum().backward()
    torch.testing.assert_close(together.gathered_grads(), apart.gathered_grads(), rtol=0,
                               atol=1e-10)


@pytest.mark.parametrize("close", [nn.Identity, lambda: nn.Linear(D, 2)])
def test_retain_graph_backward_twice_accumulates_as_backprop(close):
    def run(m: nn.Module, net: LayerParallel) -> torch.Tensor:
        net.zero_grad()
        loss = m(A).square().sum()
        loss.backward(retain_graph=True)
        loss.backward()
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            loss.backward()  # torch's error, from our node or one before it
        return net.gathered_grads()

    torch.manual_seed(0)
    net = LayerParallel(nn.Linear(3, D), [nn.Sequential(nn.Linear(D, D), nn.Tanh())
                                          for _ in range(8)], close(), T=2.0, levels=1,
                        cfactor=2).double()
    got = run(net, net)
    once = _run(net.serial())[1]
    torch.testing.assert_close(got, 2 * once, rtol=0, atol=1e-12)


def test_graphs_are_freed_after_backward_and_kept_with_retain_graph():
    net = _net(2, 4, 2)
    loss = net(A).square().sum()
    recorded = net._recorded
    loss.backward(retain_graph=True)
    assert recorded() is not None  # kept for the next backward
    loss.backward()
    assert recorded() is None  # freed though the loss (and its nodes) live on
    fine = net._fwd[1]._cycler.U[0]
    net(B).sum().backward()
    assert net._fwd[1]._cycler.U[0] is fine  # one forward, one backward: no copy
    kept = net(A).sum()  # noqa: F841  (its graph lives)
    net(B).sum().backward()  # the first graph is alive: the solver goes on in a copy
    assert net._fwd[1]._cycler.U[0] is not fine


def test_no_grad_forward_and_state_dict_round_trip():
    net = _net(3, 2, 20)
    with torch.no_grad():
        out = net(A)
    assert not out.requires_grad
    torch.testing.assert_close(out, net.serial()(A), rtol=0, atol=1e-9)
    loss = net(A).square().sum()  # a no-grad forward between a forward and its backward
    with torch.no_grad():
        net(B)
    loss.backward()
    got = net.gathered_grads()
    torch.testing.assert_close(got, _run(net.serial())[1], rtol=0, atol=1e-9)
    other = _net(3, 2, 20)
    for p in other.parameters():
        p.data.add_(1.0)
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(A), out, rtol=0, atol=1e-9)



def _sgd(net: LayerParallel, opt: torch.optim.Optimizer, batches: range) -> None:
    for i in batches:
        opt.zero_grad()
        (net(X + 0.1 * i) - 1.0).square().mean().backward()
        opt.step()


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("bwd_start", ["cold", "warm"])
def test_state_dict_holds_the_warm_start_so_a_resumed_run_goes_on_bit_for_bit(tmp_path,
                                                                              bwd_start):
    kw = dict(bwd_start=bwd_start)
    full = _net(3, 2, 1, **kw)
    _sgd(full, torch.optim.SGD(full.parameters(), lr=0.05), range(5))
    first = _net(3, 2, 1, **kw)
    assert first.state_dict()["_extra_state"] == {"forward": None, "adjoint": None}
    opt = torch.optim.SGD(first.parameters(), lr=0.05)
    _sgd(first, opt, range(3))
    torch.save({"net": first.state_dict(), "opt": opt.state_dict()}, tmp_path / "ck.pt")
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert saved["net"]["_extra_state"]["forward"].device.type == "cpu"
    assert (saved["net"]["_extra_state"]["adjoint"] is None) == (bwd_start == "cold")

    def resume(state: dict) -> LayerParallel:
        net = _net(3, 2, 1, **kw)
        for p in net.parameters():
            p.data.add_(1.0)
        net.load_state_dict(state)
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        opt.load_state_dict(saved["opt"])
        _sgd(net, opt, range(3, 5))
        return net

    assert _same(resume(saved["net"]), full)
    # an old checkpoint, without the warm start: loads (strictly), and starts cold
    old = {k: v for k, v in saved["net"].items() if k != "_extra_state"}
    assert not _same(resume(old), full)
    # a batch of another shape starts cold, as the uninterrupted run would
    warm, cold = _net(3, 2, 1, **kw), _net(3, 2, 1, **kw)
    warm.load_state_dict(saved["net"])
    cold.load_state_dict(old)
    with torch.no_grad():
        assert torch.equal(warm(X[:2]), cold(X[:2]))


def test_a_warm_start_loaded_into_a_cold_module_is_ignored():
    saved = _net(3, 2, 1, bwd_start="warm")
    _sgd(saved, torch.optim.SGD(saved.parameters(), lr=0.05), range(2))
    state = saved.state_dict()
    assert state["_extra_state"]["forward"] is not None
    cold, ref = _net(3, 2, 1, fwd_start="cold"), _net(3, 2, 1, fwd_start="cold")
    cold.load_state_dict(state)
    ref.load_state_dict({k: v for k, v in state.items() if k != "_extra_state"})
    with torch.no_grad():
        assert torch.equal(cold(X), ref(X))
