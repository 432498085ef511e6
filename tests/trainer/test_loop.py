"""The one training loop: schedule, learning on digits, checkpoint + resume exactness."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from torchpint.core import DivergenceError
from torchpint.data import make_loaders
from torchpint.parareal import parareal_network
from torchpint.trainer import FitConfig, evaluate, fit, load_checkpoint, lr_factor


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
    cos = FitConfig(epochs=2, schedule="cosine")
    assert lr_factor(0, 100, cos) == 1.0
    assert math.isclose(lr_factor(50, 100, cos), 0.5)
    assert lr_factor(100, 100, cos) < 1e-12
    step = FitConfig(epochs=2, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    assert [lr_factor(s, 100, step) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


@pytest.mark.parametrize(
    "kw", [{"epochs": 0}, {"lr": 0.0}, {"schedule": "linear"}, {"milestones": (1.5,)}]
)
def test_bad_recipe(kw):
    with pytest.raises(ValueError):
        FitConfig(**kw)


def test_fit_learns_digits_and_reports(digits8):
    model = _tiny_cnn()
    before = evaluate(model, digits8.test)[1]
    res = fit(
        model, digits8.train, digits8.test, FitConfig(epochs=5, lr=0.1), log=None, progress=False
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
    cfg = FitConfig(epochs=2, lr=0.05, schedule="step", milestones=(0.4,))
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

    def resume(model: nn.Module, config: FitConfig):
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
        resume(_tiny_cnn(), FitConfig(epochs=2, lr=0.1))


def test_fit_trains_a_parareal_network(digits8):
    """The loop drives a PararealNetwork (threads executor) like any module."""
    torch.manual_seed(0)
    from torchpint.models import build_model

    model = build_model("vgg-small", width=4, num_classes=10, in_channels=1)
    x = next(iter(digits8.train))[0][:4]
    net = parareal_network(model, 2, example_input=x, balance="flops", executor="threads")
    res = fit(
        net, digits8.train, digits8.test, FitConfig(epochs=1, lr=0.05), log=None, progress=False
    )
    assert res.history[0].train_accuracy > 15.0  # learning, from 10% chance
    assert res.params == sum(p.numel() for p in net.parameters())
    net.synchronize(torch.optim.SGD(net.parameters(), lr=0.1))  # no-op in one process


@pytest.mark.parametrize(
    "field, value",
    [
        ("lr", float("nan")),
        ("lr", float("inf")),
        ("momentum", float("nan")),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("weight_decay", float("nan")),
        ("weight_decay", float("inf")),
        ("gamma", float("nan")),
        ("gamma", 0.0),
        ("milestones", (0.5, float("nan"))),
        ("epochs", 2.5),
    ],
)
def test_non_finite_or_out_of_range_recipe_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        FitConfig(**{field: value})


def test_fit_refuses_resume_without_a_checkpoint_and_negative_stop_after(digits8):
    cfg = FitConfig(epochs=1)
    with pytest.raises(ValueError, match="resume=True needs the checkpoint"):
        fit(_tiny_mlp(), digits8.train, digits8.test, cfg, resume=True, log=None, progress=False)
    with pytest.raises(ValueError, match="stop_after must be >= 0"):
        fit(_tiny_mlp(), digits8.train, digits8.test, cfg, stop_after=-1, log=None, progress=False)


def _tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


class _Loader:
    """Wraps a loader: ``poison`` (epoch, step), both 0-based, makes the images NaN from
    there on; ``steps`` keeps only the first batches; ``scale`` multiplies the images.
    Epochs come from the sampler."""

    def __init__(self, loader, poison=None, steps=None, scale=1.0):
        self.loader, self.sampler, self.poison = loader, loader.sampler, poison
        self.steps = len(loader) if steps is None else steps
        self.scale = scale

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for i, (x, y) in enumerate(self.loader):
            if i == self.steps:
                return
            if self.poison is not None and (self.sampler.epoch, i) >= self.poison:
                x = torch.full_like(x, float("nan"))
            yield x * self.scale, y


def test_diverging_learning_rate_stops_naming_epoch_and_step(tmp_path, digits8):
    ckpt = tmp_path / "m.pt"
    cfg = FitConfig(epochs=2, lr=1e4)
    with pytest.raises(DivergenceError) as err:
        fit(
            _tiny_mlp(),
            digits8.train,
            digits8.test,
            cfg,
            checkpoint=str(ckpt),
            log=None,
            progress=False,
        )
    msg = str(err.value)
    assert "loss is" in msg and "epoch 1/2, step" in msg and "/22" in msg
    assert "lr=10000 is likely too large" in msg and "nothing was written" in msg
    assert not ckpt.exists()


def test_failure_in_epoch_two_keeps_the_checkpoint_of_epoch_one(tmp_path, digits8):
    """Non-finite data from epoch 2, step 3 on: the error names both, blames the data,
    and the checkpoint written after epoch 1 stays as it was."""
    cfg = FitConfig(epochs=3, lr=0.05)
    ckpt, ref = tmp_path / "m.pt", tmp_path / "ref.pt"
    fit(
        _tiny_mlp(),
        digits8.train,
        digits8.test,
        cfg,
        checkpoint=str(ref),
        stop_after=1,
        log=None,
        progress=False,
    )
    with pytest.raises(DivergenceError) as err:
        fit(
            _tiny_mlp(),
            _Loader(digits8.train, poison=(1, 2)),
            digits8.test,
            cfg,
            checkpoint=str(ckpt),
            log=None,
            progress=False,
        )
    msg = str(err.value)
    assert "epoch 2/3, step 3/22 (step 25 of the run)" in msg
    assert "non-finite values: check the training data" in msg
    assert f"{ckpt} after epoch 1, is kept" in msg
    kept, expected = load_checkpoint(ckpt), load_checkpoint(ref)
    assert kept["epoch"] == 1 and _states_equal(kept["model"], expected["model"])
    assert not (tmp_path / "m.pt.tmp").exists()


def test_weights_blown_up_by_the_last_step_of_an_epoch_are_not_saved(tmp_path, digits8):
    """A finite loss whose update leaves non-finite weights is caught after the epoch."""
    ckpt = tmp_path / "m.pt"
    with pytest.raises(DivergenceError, match=r"after epoch 1/2 .*lr=1e\+30 is likely") as err:
        fit(
            _tiny_mlp(),
            _Loader(digits8.train, steps=1),
            digits8.test,
            FitConfig(epochs=2, lr=1e30),
            checkpoint=str(ckpt),
            log=None,
            progress=False,
        )
    assert "nothing was written" in str(err.value) and not ckpt.exists()


_RAN: list[str] = []


def _mark_ran(what: str) -> None:
    _RAN.append(what)


class _Payload:
    """Unpickling this calls ``_mark_ran``: a stand-in for code hidden in a checkpoint."""

    def __reduce__(self):
        return (_mark_ran, ("code ran",))


def test_non_finite_test_data_and_weights_are_named(tmp_path, digits8):
    """Non-finite test images are blamed as such; non-finite weights are never saved."""
    x, y = next(iter(digits8.test))
    bad_test = [(x, y), (torch.full_like(x, float("inf")), y)]
    with pytest.raises(DivergenceError, match="after epoch 1/1 .*test data holds non-finite"):
        fit(
            _tiny_mlp(),
            _Loader(digits8.train, steps=2),
            bad_test,
            FitConfig(epochs=1),
            log=None,
            progress=False,
        )
    ckpt = tmp_path / "m.pt"
    big = _Loader(digits8.train, steps=1, scale=1e6)  # a finite loss, an overflowing step
    with pytest.raises(DivergenceError, match="weights are non-finite after epoch 1/2"):
        fit(
            _tiny_mlp(),
            big,
            [],
            FitConfig(epochs=2, lr=1e35),
            checkpoint=str(ckpt),
            log=None,
            progress=False,
        )
    assert not ckpt.exists()


def test_checkpoints_load_as_weights_only(tmp_path, digits8):
    """What fit saves loads with weights_only=True; a file that would run code does not."""
    ckpt = tmp_path / "m.pt"
    fit(
        _tiny_mlp(),
        _Loader(digits8.train, steps=2),
        digits8.test,
        FitConfig(epochs=1),
        checkpoint=str(ckpt),
        log=None,
        progress=False,
        extra_state={"cut_points": [1, 3]},
    )
    state = torch.load(ckpt, weights_only=True)
    assert state["cut_points"] == [1, 3] and state["config"]["milestones"] == (0.5, 0.75)
    assert load_checkpoint(ckpt)["epoch"] == 1

    evil = tmp_path / "evil.pt"
    torch.save({**state, "extra": _Payload()}, evil)
    _RAN.clear()
    with pytest.raises(ValueError, match=rf"{evil}.*tensors and plain data.*must not run code"):
        load_checkpoint(evil)
    assert not _RAN
    torch.load(evil, weights_only=False)  # loaded freely, the file runs its code
    assert _RAN == ["code ran"]


def test_corrupt_empty_or_truncated_checkpoint_names_the_file(tmp_path, digits8):
    good = tmp_path / "good.pt"
    fit(
        _tiny_mlp(),
        _Loader(digits8.train, steps=1),
        digits8.test,
        FitConfig(epochs=1),
        checkpoint=str(good),
        log=None,
        progress=False,
    )
    data = good.read_bytes()
    cases = {"empty.pt": b"", "truncated.pt": data[: len(data) // 2], "junk.pt": b"junk" * 64}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        where = re.escape(str(path))
        with pytest.raises(ValueError, match=rf"{where}.*delete it, or drop --resume"):
            load_checkpoint(path)
        with pytest.raises(ValueError, match=where):  # so does fit(resume=True)
            fit(
                _tiny_mlp(),
                digits8.train,
                digits8.test,
                FitConfig(epochs=1),
                checkpoint=str(path),
                resume=True,
                log=None,
                progress=False,
            )
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match=rf"{other} is not a torchpint training checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_old_names_still_import_with_a_deprecation():
    import torchpint.parareal.train as old

    with pytest.warns(DeprecationWarning, match="FitConfig"):
        assert old.TrainConfig is FitConfig
    assert old.fit is fit
