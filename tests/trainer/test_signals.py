"""SIGTERM and SIGINT stop fit at the next batch with a checkpoint that resumes bit for bit,
in one process and on 2 Gloo ranks (a parareal network on the distributed executor)."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torch import nn

from torchpint.data import make_loaders
from torchpint.runtime import signals
from torchpint.trainer import FitConfig, fit, load_checkpoint

CFG = FitConfig(epochs=2, lr=0.05, schedule="step", milestones=(0.4,))


@pytest.fixture(scope="module")
def data():
    return make_loaders("digits", image_size=8, batch_size=128, seed=3, augment=True)


class _Signal(nn.Module):
    """Sends ``sig`` to this process in its ``at``-th training forward (mid-step)."""

    def __init__(self, inner: nn.Module, at: int, sig: int) -> None:
        super().__init__()
        self.inner, self.at, self.sig, self.calls = inner, at, sig, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), self.sig)
        return self.inner(x)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(32, 10))


@pytest.fixture
def handlers():
    signals.install()
    yield
    signals.uninstall()


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(("sig", "at"), [(signal.SIGTERM, 3), (signal.SIGINT, 12),
                                         (signal.SIGTERM, 11)])
def test_a_signal_stops_at_the_next_batch_and_resumes_bit_for_bit(tmp_path, data, handlers,
                                                                  sig, at):
    """at 3: mid-epoch 1; at 12: mid-epoch 2; at 11: the last batch of epoch 1 (steps = 11)."""
    steps = len(data.train)
    full = _model()
    ref = fit(full, data.train, data.test, CFG, log=None, progress=False)
    ckpt = str(tmp_path / "c.pt")
    stopped = _Signal(_model(), at, sig)
    with pytest.raises(signals.Interrupted) as err:
        fit(stopped, data.train, data.test, CFG, checkpoint=ckpt, log=None, progress=False)
    assert err.value.exit_code == 128 + sig and err.value.checkpoint == ckpt
    state = load_checkpoint(ckpt)
    done = state["epoch"] * steps + state["batch"]
    assert done == at  # the batch in flight finished; nothing after it ran
    resumed = _Signal(_model(), 0, sig)  # the same module tree, never signalling
    res = fit(resumed, data.train, data.test, CFG, checkpoint=ckpt, resume=True, log=None,
              progress=False)
    assert _equal(full, resumed.inner)
    assert [h.train_loss for h in res.history] == [h.train_loss for h in ref.history]
    assert [h.test_accuracy for h in res.history] == [h.test_accuracy for h in ref.history]


def test_without_a_checkpoint_the_stop_says_nothing_was_saved(data, handlers):
    with pytest.raises(signals.Interrupted, match="nothing saved") as err:
        fit(_Signal(_model(), 2, signal.SIGTERM), data.train, data.test, CFG, log=None,
            progress=False)
    assert err.value.exit_code == 143


def test_without_handlers_sigint_is_an_ordinary_keyboard_interrupt(data):
    # Python's own handler, as in a terminal (a shell's background job starts with SIGINT
    # ignored, and Python then leaves it so)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(_Signal(_model(), 2, signal.SIGINT), data.train, data.test, CFG, log=None,
                progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)


def _two_ranks(rank: int, world: int, ckpt: str, at: int | None) -> dict:
    """A parareal network over 2 ranks; rank 1 alone gets SIGTERM at training step ``at``."""
    from torchpint.models import build_model
    from torchpint.parareal import parareal_network

    signals.install()
    try:
        bundle = make_loaders("digits", image_size=8, batch_size=128, seed=3, augment=True)
        torch.manual_seed(0)
        model = build_model("vgg-small", width=4, num_classes=10, in_channels=1)
        x = next(iter(bundle.train))[0][:4]
        net = parareal_network(model, 2, example_input=x, balance="flops",
                               executor="distributed", cut_points=[2])
        if at is not None and rank == 1:
            calls = {"n": 0}

            def hook(mod, inp):
                if mod.training:
                    calls["n"] += 1
                    if calls["n"] == at:
                        os.kill(os.getpid(), signal.SIGTERM)

            net.register_forward_pre_hook(hook)
        try:
            fit(net, bundle.train, bundle.test, CFG, checkpoint=ckpt, log=None,
                progress=False, resume=at is None and os.path.exists(ckpt))
            code = 0
        except signals.Interrupted as err:
            code = err.exit_code
        return {"code": code, "state": {k: v.clone() for k, v in net.state_dict().items()}}
    finally:
        signals.uninstall()


def test_sigterm_on_one_rank_stops_both_and_resumes_bit_for_bit(tmp_path):
    from torchpint.testing import spawn_gloo

    full = spawn_gloo(_two_ranks, 2, str(tmp_path / "full.pt"), None, timeout=60)
    ckpt = str(tmp_path / "c.pt")
    stopped = spawn_gloo(_two_ranks, 2, ckpt, 5, timeout=60)
    assert [r["code"] for r in stopped] == [143, 143]
    assert load_checkpoint(ckpt)["batch"] == 5
    resumed = spawn_gloo(_two_ranks, 2, ckpt, None, timeout=60)
    for a, b in zip(full, resumed, strict=True):
        assert a["state"].keys() == b["state"].keys()
        assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
