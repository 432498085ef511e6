"""The training loop: schedule, learning on digits, checkpoint + resume exactness."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchpint.data import make_loaders
from torchpint.parareal import parareal_network
from torchpint.parareal.train import (
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    lr_factor,
)


def _tiny_cnn(in_channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


@pytest.fixture(scope="module")
def digits8():
    return make_loaders("digits", image_size=8, batch_size=64, seed=0)


def test_lr_schedules():
    cos = TrainConfig(epochs=2, schedule="cosine")
    assert lr_factor(0, 100, cos) == 1.0
    assert math.isclose(lr_factor(50, 100, cos), 0.5)
    assert lr_factor(100, 100, cos) < 1e-12
    step = TrainConfig(epochs=2, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    assert [lr_factor(s, 100, step) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


@pytest.mark.parametrize(
    "kw", [{"epochs": 0}, {"lr": 0.0}, {"schedule": "linear"}, {"milestones": (1.5,)}]
)
def test_bad_recipe(kw):
    with pytest.raises(ValueError):
        TrainConfig(**kw)


def test_fit_learns_digits_and_reports(digits8):
    model = _tiny_cnn()
    before = evaluate(model, digits8.test)[1]
    res = fit(
        model, digits8.train, digits8.test, TrainConfig(epochs=5, lr=0.1), log=None, progress=False
    )
    assert len(res.history) == 5 and len(res.step_times) == 5 * (len(digits8.train) - 1)
    assert res.history[-1].train_loss < res.history[0].train_loss
    assert res.test_accuracy > 80.0 > before + 30
    assert res.test_accuracy == evaluate(model, digits8.test)[1]
    d = res.to_dict()
    assert d["params"] == sum(p.numel() for p in model.parameters())
    assert d["step_time_s"] > 0 and d["epochs"] == 5


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_matches_uninterrupted_training(tmp_path, digits8):
    """A run stopped after epoch 1 and resumed ends with the same weights and history."""
    cfg = TrainConfig(epochs=2, lr=0.05, schedule="step", milestones=(0.4,))
    full = _tiny_cnn()
    r_full = fit(full, digits8.train, digits8.test, cfg, log=None, progress=False)

    ckpt = str(tmp_path / "m.pt")
    part = _tiny_cnn()
    fit(
        part,
        digits8.train,
        digits8.test,
        cfg,
        checkpoint=ckpt,
        stop_after=1,
        log=None,
        progress=False,
    )
    assert load_checkpoint(ckpt)["epoch"] == 1

    def resume(model: nn.Module, config: TrainConfig):
        return fit(
            model,
            digits8.train,
            digits8.test,
            config,
            checkpoint=ckpt,
            resume=True,
            log=None,
            progress=False,
        )

    resumed = _tiny_cnn()  # a fresh process would build the same untrained model
    r_res = resume(resumed, cfg)
    assert r_res.resumed_from == 1 and len(r_res.history) == 2
    assert _states_equal(full.state_dict(), resumed.state_dict())
    for a, b in zip(r_full.history, r_res.history, strict=True):
        assert (a.train_loss, a.test_accuracy, a.lr) == (b.train_loss, b.test_accuracy, b.lr)
    assert load_checkpoint(ckpt)["epoch"] == 2
    # another network's checkpoint is refused with what to check
    with pytest.raises(ValueError, match="another network's weights"):
        resume(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), cfg)
    # a different recipe is refused, naming what differs
    with pytest.raises(ValueError, match="lr"):
        resume(_tiny_cnn(), TrainConfig(epochs=2, lr=0.1))


def test_fit_trains_a_parareal_network(digits8):
    """The loop drives a PararealNetwork (threads executor) like any module."""
    torch.manual_seed(0)
    from torchpint.models import build_model

    model = build_model("vgg-small", width=4, num_classes=10, in_channels=1)
    x = next(iter(digits8.train))[0][:4]
    net = parareal_network(model, 2, example_input=x, balance="flops", executor="threads")
    res = fit(
        net, digits8.train, digits8.test, TrainConfig(epochs=1, lr=0.05), log=None, progress=False
    )
    assert res.history[0].train_accuracy > 15.0  # learning, from 10% chance
    assert res.params == sum(p.numel() for p in net.parameters())
    net.synchronize(torch.optim.SGD(net.parameters(), lr=0.1))  # no-op in one process
