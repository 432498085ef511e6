"""The parareal network equals the original network where theory says it must."""

import copy
import importlib

import pytest
import torch

from tests.parareal.parareal_helpers import assert_grads_close, grads, textbook
from torchpint.parareal import PararealNetwork, parareal_network

pytestmark = pytest.mark.usefixtures("one_thread")


def _loss_backward(m, x):
    m.zero_grad(set_to_none=True)
    out = m(x)
    (out * torch.arange(out.shape[1], dtype=out.dtype)).sum().backward()
    return out.detach()


def _with_reference(request, model_name, x):
    """The fixture model, an untouched copy after one loss backward, and that copy's output."""
    model = request.getfixturevalue(model_name)
    ref_model = copy.deepcopy(model)
    return model, ref_model, _loss_backward(ref_model, x)


@pytest.mark.parametrize("model_name", ["small_resnet", "small_vgg"])
@pytest.mark.parametrize("chunks", [2, 3])
def test_coarse_equal_fine_is_exact_after_one_iteration(model_name, chunks, batch, request):
    model, ref_model, ref = _with_reference(request, model_name, batch)
    net = parareal_network(
        model, chunks, coarse=lambda j, f, a, b: f, balance="flops", example_input=batch
    )
    assert all(c is f for c, f in zip(net.coarse, net.fine, strict=True))
    out = _loss_backward(net, batch)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-9)
    assert_grads_close(grads(model), grads(ref_model))  # net shares model's parameters


@pytest.mark.parametrize("model_name", ["small_resnet", "small_vgg"])
@pytest.mark.parametrize("chunks", [2, 3])
def test_n_iterations_is_exact_for_any_coarse(model_name, chunks, batch, request):
    model, ref_model, ref = _with_reference(request, model_name, batch)
    net = parareal_network(model, chunks, iterations=chunks, balance="flops", example_input=batch)
    net.double()
    out = _loss_backward(net, batch)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-9)
    assert_grads_close(grads(model), grads(ref_model))  # net shares model's parameters
    for n, v in grads(net).items():  # the coarse networks drop out of the exact output
        if n.startswith("coarse") and v is not None:
            assert v.abs().max() < 1e-10, n


def test_one_iteration_differs_from_original(small_resnet, batch):
    """Sanity: with a random coarse net and k < N the output is not the original's."""
    ref = small_resnet(batch)
    net = parareal_network(small_resnet, 3, balance="flops", example_input=batch).double()
    assert (net(batch) - ref).abs().max() > 1e-3


@pytest.mark.parametrize("k", [1, 2, 3])
def test_matches_textbook_equations(small_resnet, batch, k):
    """Outputs and gradients equal a literal implementation of the equations."""
    net = parareal_network(small_resnet, 3, iterations=k, balance="flops", example_input=batch)
    net.double()
    other = copy.deepcopy(net)
    out = _loss_backward(net, batch)
    other.zero_grad(set_to_none=True)
    ref = textbook(other.pre, other.fine, other.coarse, other.post, batch, k)
    (ref * torch.arange(ref.shape[1], dtype=ref.dtype)).sum().backward()
    torch.testing.assert_close(out, ref.detach(), atol=1e-10, rtol=1e-9)
    assert_grads_close(grads(net), grads(other))


def test_iterations_converge(small_resnet, batch):
    """The error to the original network does not grow with k and vanishes at k = N."""
    small_resnet.eval()
    ref = small_resnet(batch)
    errs = []
    for k in range(1, 5):
        net = parareal_network(small_resnet, 4, iterations=k, balance="flops", example_input=batch)
        net.double().eval()
        errs.append((net(batch) - ref).abs().max().item())
    assert errs[-1] < 1e-10 and errs[0] > 1e-6


def test_network_attributes_and_errors(small_vgg, batch):
    net = parareal_network(small_vgg, 2, balance="flops", example_input=batch)
    assert net.num_chunks == 2 and net.iterations == 1 and net.executor.name == "serial"
    assert len(net.fine) == len(net.coarse) == 2
    assert net.block_ranges[0][0] == 0 and net.block_ranges[-1][1] == len(small_vgg.body)
    assert net.cut_points == [net.block_ranges[1][0]]
    assert net.fine[0][0] is small_vgg.body[0]  # shared, not copied
    with pytest.raises(ValueError, match="iterations"):
        PararealNetwork(net.pre, list(net.fine), list(net.coarse), net.post, iterations=0)
    with pytest.raises(ValueError, match="one coarse network per fine chunk"):
        PararealNetwork(net.pre, list(net.fine), list(net.coarse)[:1], net.post)
    with pytest.raises(ValueError, match="unknown executor"):
        net.set_executor("gpu-magic")


def test_cost_report(small_resnet, batch):
    net = parareal_network(small_resnet, 3, balance="flops", example_input=batch)
    r = net.cost_report()
    assert r["num_chunks"] == 3 and len(r["chunks"]) == 3
    for c in r["chunks"]:
        assert c["fine_time_s"] > 0 and c["coarse_time_s"] > 0
        assert 0 < c["relative_flops"] < 1  # the default coarse net is cheaper
        assert c["coarse_params"] > 0 and c["fine_params"] > 0
    assert r["params"] == sum(p.numel() for p in net.parameters())
    assert r["fine_params"] + r["coarse_params"] <= r["params"]
    # Amdahl: between 1 / (1 + coarse share) and N
    assert r["ideal_speedup"] > 0 and 0 < r["ideal_speedup_flops"] < 3
    serial = r["pre_time_s"] + r["post_time_s"] + sum(c["fine_time_s"] for c in r["chunks"])
    assert r["serial_time_s"] == pytest.approx(serial)
    assert r["schedule"] == "sweep first"
    net.set_executor("threads")  # overlapped schedule: iteration 0 no longer waits for the sweep
    over = net.cost_report()
    assert over["schedule"] == "overlapped"
    assert over["parareal_time_s"] <= r["parareal_time_s"]


@pytest.mark.parametrize(("start", "target"), [([1, 4], [2, 6]), ([1, 2], [4, 7])])
def test_tune_searches_cut_points(small_resnet, batch, monkeypatch, start, target):
    """The search walks each cut towards the fastest timed split (a synthetic cost here),
    beyond its first window (radius 2) and with the neighbouring cut making room."""
    tuning = importlib.import_module("torchpint.parareal.tuning")
    factory = importlib.import_module("torchpint.parareal.factory")

    def fake_time(net, x):
        cuts = [a for a, _ in net.block_ranges[1:]]
        return 1.0 + sum(abs(c - t) for c, t in zip(cuts, target, strict=True))

    monkeypatch.setattr(tuning, "pass_time", fake_time)
    monkeypatch.setattr(factory, "balanced_cuts", lambda costs, chunks: start)
    net = parareal_network(small_resnet, 3, balance="tune", example_input=batch)
    got = [a for a, _ in net.block_ranges[1:]]
    assert got == target
    assert net.tuning and min(net.tuning, key=lambda r: r[1])[0] == got


def test_tune_leaves_the_model_untouched(small_resnet, batch):
    """Real timing on the threads executor: BN statistics and .grad are as before, and the
    candidates do not draw from the RNG (the coarse nets are those of a plain build)."""
    before = copy.deepcopy(small_resnet.state_dict())
    torch.manual_seed(5)
    net = parareal_network(small_resnet, 2, balance="tune", example_input=batch, executor="threads")
    for k, v in small_resnet.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    assert all(p.grad is None for p in small_resnet.parameters())
    cuts = [a for a, _ in net.block_ranges[1:]]
    assert len(net.tuning) >= 2 and [c for c, _ in net.tuning].count(cuts) == 1
    assert net.executor.name == "threads"
    torch.manual_seed(5)
    plain = parareal_network(small_resnet, 2, cut_points=cuts, example_input=batch)
    for p, q in zip(net.coarse.parameters(), plain.coarse.parameters(), strict=True):
        assert torch.equal(p, q)


def test_tune_errors(small_resnet, batch):
    with pytest.raises(ValueError, match="balance must be one of"):
        parareal_network(small_resnet, 2, balance="fastest", example_input=batch)
    mods = list(parareal_network(small_resnet, 2, balance="flops", example_input=batch).coarse)
    with pytest.raises(ValueError, match="default coarse builder"):
        parareal_network(small_resnet, 2, balance="tune", coarse=mods, example_input=batch)
