"""Learning-rate rules, data rules and the model problems' setups."""

import math

import numpy as np
import pytest
import torch

from torchpint.training import adder_task, digits_task, xor_task
from torchpint.training.rules import DataRule, make_lr_rule
from torchpint.training.tasks import adder_data, adder_options, make_task

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_rules():
    assert [make_lr_rule(0.5, "naive")(l) for l in range(3)] == [0.5, 0.5, 0.5]
    geo = make_lr_rule(1.0, "geometric", growth=2.0, lr_max=8.0)
    assert [geo(l) for l in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    slow = make_lr_rule(1.0, "geometric", growth=1.25)
    assert slow(2) == pytest.approx(1.5625)
    assert make_lr_rule(1.0, "geometric")(10) == 1024.0  # no cap by default
    assert make_lr_rule(1.0, lambda l: 3.0 + l)(2) == 5.0
    with pytest.raises(ValueError):
        make_lr_rule(1.0, "exponential")
    with pytest.raises(ValueError):
        make_lr_rule(math.nan)


def test_data_rules():
    assert DataRule("full", 4).indices(7, 2) is None
    serial = DataRule("serial", 4)
    assert [serial.indices(i, 0) for i in (0, 5, 11)] == [slice(0, 1), slice(1, 2), slice(3, 4)]
    mb = DataRule("minibatch", 10, batch_size=4, seed=1)
    # steps 0..4 of a level cover two epochs: each epoch is a permutation of all examples
    got = np.concatenate([mb.indices(i, 0) for i in range(5)])
    assert sorted(got[:10]) == list(range(10)) and sorted(got[10:20]) == list(range(10))
    again = DataRule("minibatch", 10, batch_size=4, seed=1)
    assert np.array_equal(mb.indices(3, 1), again.indices(3, 1))  # keyed, not stateful
    assert not np.array_equal(mb.indices(0, 0), mb.indices(0, 1))  # levels differ
    other = DataRule("minibatch", 10, batch_size=4, seed=2)
    assert not np.array_equal(mb.indices(0, 0), other.indices(0, 0))
    with pytest.raises(ValueError, match="batch_size"):
        DataRule("minibatch", 10)
    with pytest.raises(ValueError):
        DataRule("random", 10)


def test_xor_setup():
    t = xor_task(0)
    assert sum(p.numel() for p in t.model.parameters()) == 16
    assert all(m.bias is None for m in t.model if isinstance(m, torch.nn.Linear))
    x, y = t.data
    assert x.tolist() == [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]]
    assert y.flatten().tolist() == [0, 1, 1, 0]
    w = torch.cat([p.flatten() for p in t.model.parameters()])
    assert w.abs().max() <= 1 and not torch.equal(w, torch.cat(
        [p.flatten() for p in xor_task(1).model.parameters()]))


def test_adder_setup():
    t = adder_task(0)
    sizes = [(m.in_features, m.out_features) for m in t.model if isinstance(m, torch.nn.Linear)]
    assert sizes == [(24, 128), (128, 64), (64, 12)]
    assert sum(p.numel() for p in t.model.parameters()) == 12032
    x, y = adder_data(500, 12, seed=0)
    assert x.shape == (500, 24) and y.shape == (500, 12)
    pw = 2 ** torch.arange(12, dtype=torch.float64)
    a, b, s = x[:, :12] @ pw, x[:, 12:] @ pw, y @ pw
    assert torch.equal((a + b) % 4096, s)


def test_adder_variants_follow_their_sources():
    """trask (default): N(-0.1, 0.2^2) weights and 11-bit operands whose sum never wraps;
    uniform: U[-1, 1) weights and wrapping 12-bit sums. Both default to Solver 2."""
    pw = 2 ** torch.arange(12, dtype=torch.float64)
    trask, uniform = adder_task(0), adder_task(0, variant="uniform")
    w = torch.cat([p.detach().flatten() for p in trask.model.parameters()])
    assert abs(float(w.mean()) + 0.1) < 0.01 and abs(float(w.std()) - 0.2) < 0.01
    u = torch.cat([p.detach().flatten() for p in uniform.model.parameters()])
    assert u.min() >= -1 and u.max() < 1 and abs(float(u.mean())) < 0.02
    x, y = trask.data
    a, b, s = x[:, :12] @ pw, x[:, 12:] @ pw, y @ pw
    assert a.max() < 2**11 and b.max() < 2**11 and torch.equal(a + b, s)  # no overflow
    x, y = uniform.data
    a, b = x[:, :12] @ pw, x[:, 12:] @ pw
    assert (a + b >= 4096).any()  # some sums wrap
    assert trask.defaults["data_rule"] == "serial" and trask.defaults["solver"] == "two-level"
    with pytest.raises(ValueError, match="variant"):
        adder_task(0, variant="other")


def test_adder_options_apply_to_the_adder_only():
    """Tools pass their adder flags whatever the problem; only the adder receives them."""
    assert adder_options("xor", "uniform", 50) == {}
    assert adder_options("adder") == {}
    assert adder_options("adder", "uniform", 50) == {"variant": "uniform", "pairs": 50}
    task = make_task("adder", 0, **adder_options("adder", pairs=50))
    assert task.data[0].shape == (50, 24)
    make_task("xor", 0, **adder_options("xor", "uniform"))  # no stray option reaches xor


def test_digits_setup():
    t = digits_task(0)
    x, y = t.data
    assert x.shape == (1797, 64) and int(y.max()) == 9 and float(x.max()) <= 1.0
    assert t.defaults["data_rule"] == "minibatch"
