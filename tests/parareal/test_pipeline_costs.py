"""The cost model of parareal vs pipeline vs DDP: hand-checked steps on made-up costs,
scaling, the sweep's summary, and the measured inputs of a small network."""

from __future__ import annotations

import math

import pytest
import torch

from torchpint.common.memory import tensor_bytes
from torchpint.models import build_model
from torchpint.parareal import decompose
from torchpint.parareal.pipeline_costs import (
    CostInputs,
    compare,
    measure_cost_inputs,
    model_step,
    ring_allreduce_time,
    scaled,
)

pytestmark = pytest.mark.usefixtures("one_thread")

KEY_IN, KEY_OUT = ((4, 8, 8), False), ((4, 8, 8), True)


def _inputs(blocks: int = 4, batch: int = 16) -> CostInputs:
    """P and Q 1 s, every block 2 s; a flat batch-size efficiency; coarse nets 0.1 s."""
    return CostInputs(
        batch=batch, pre=1.0, post=1.0, pre_act=100, post_act=100, pre_params=10,
        post_params=10, cost=[2.0] * blocks, act=[1000] * blocks, params=[50] * blocks,
        iface=[400] * blocks, in_key=[KEY_IN] * blocks, out_key=[KEY_OUT] * blocks,
        eff={batch: 1.0}, coarse={(KEY_IN, KEY_OUT): (0.1, 20, 5)},
    )  # fmt: skip


def test_one_step_on_two_free_links_by_hand():
    r = model_step(_inputs(), 2, math.inf, 0.0)
    assert r["original_s"] == 10.0
    # P + Q + C_0 + C_1 (sweep) + max F_j (2 blocks) + C_1 (correction)
    assert r["parareal_s"] == pytest.approx(2 + 0.2 + 4 + 0.1)
    # stages of 5 s; the most micro-batches that keep 2 samples: M = 8, (8 + 1) x 5 / 8
    assert r["pipeline_M"] == 8
    assert r["pipeline_s"] == pytest.approx(9 * 5 / 8)
    assert r["pipeline_bubble"] == pytest.approx(1 / 9)
    assert r["ddp_s"] == pytest.approx(5.0) and r["ddp_speedup"] == pytest.approx(2.0)
    # every rank holds all parameters, its own chunk's and the coarse nets' grads twice
    w_all, w_c = 10 + 4 * 50 + 10, 2 * 5
    own = 10 + 10 + w_c + 2 * 50
    act = 100 + 100 + 2 * 2 * 20 + 2 * 1000
    assert r["parareal_memory"] == w_all + w_c + 2 * own + act
    assert r["ddp_memory"] == 3 * w_all + (200 + 4 * 1000) / 2


def test_methods_that_cannot_use_n_devices_are_nan():
    r = model_step(_inputs(blocks=4, batch=16), 5, 1e9, 1e-6)  # 5 > 4 blocks
    assert math.isnan(r["parareal_s"]) and math.isnan(r["pipeline_s"])
    assert r["pipeline_M"] is None and not math.isnan(r["ddp_s"])
    r = model_step(_inputs(blocks=40, batch=16), 16, 1e9, 1e-6)  # 1 sample per device
    assert math.isnan(r["ddp_s"]) and not math.isnan(r["parareal_s"])


def test_links_cost_time():
    assert ring_allreduce_time(100.0, 2, 10.0, 1.0) == pytest.approx(100 / 10 + 2)
    slow = model_step(_inputs(), 2, 1e3, 1e-3)
    fast = model_step(_inputs(), 2, math.inf, 0.0)
    for k in ("parareal_s", "pipeline_s", "ddp_s_no_overlap"):
        assert slow[k] > fast[k]


def test_scaled_deeper_wider_faster():
    ci = _inputs(blocks=4)  # two stages of 2 blocks
    s = scaled(ci, 2, 3, 2.0, speed=4.0)
    assert len(s.cost) == 6 and s.cost == ci.cost[:1] * 6  # time x 2^2 / 4
    assert s.params == [200] * 6 and s.act == [2000] * 6 and s.iface == [800] * 6
    assert s.coarse_cost(0, 6) == (pytest.approx(0.1), 40, 20)
    assert ci.cost == [2.0] * 4  # the original is untouched


def test_compare_summarizes_the_rows():
    c = compare(_inputs(blocks=8, batch=16), (2, 4, 8, 16), 1e9, 1e-5)
    rows = {r["N"]: r for r in c["rows"]}
    assert c["max_N"] == {"parareal": 8, "pipeline": 8, "ddp": 8}
    assert c["parareal_faster_than_ddp_at_N"] == [
        n for n, r in rows.items() if r["parareal_s"] < r["ddp_s"]
    ]
    best = c["best_speedup"]["pipeline"]
    assert best["speedup"] == max(r["pipeline_speedup"] for n, r in rows.items() if n <= 8)


def test_measured_inputs_of_a_small_network():
    torch.manual_seed(0)
    model = build_model("vgg-small", num_classes=10, in_channels=3)
    x = torch.randn(8, 3, 16, 16)
    before = [t.clone() for t in model.state_dict().values()]
    ci = measure_cost_inputs(model, x, quick=True)
    d = decompose(model)
    n = len(d.blocks)
    assert len(ci.cost) == len(ci.act) == len(ci.params) == len(ci.iface) == n
    assert ci.params == [tensor_bytes(b.parameters()) for b in d.blocks]
    assert all(a > 0 for a in ci.act) and all(t > 0 for t in ci.cost)
    assert ci.eff[8] == 1.0 and set(ci.eff) == {2, 4, 8}
    assert ci.coarse_cost(0, n)[0] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values(), strict=True))
    assert model_step(ci, 2, 1e9, 1e-5)["parareal_speedup"] > 0
