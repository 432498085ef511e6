"""The paper's model problems (XOR, 12-bit adder) and a real data set (scikit-learn digits).

Each builder returns a :class:`Task`: the model with seeded initial weights, the loss,
the data ``(X, Y)`` and the paper's default settings for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from torchpint.training.engines import HalfSSELoss, sigmoid_mlp


@dataclass
class Task:
    """A model, its loss and data, and default training settings."""

    name: str
    model: nn.Module
    loss_fn: Any
    data: tuple[torch.Tensor, torch.Tensor]
    defaults: dict[str, Any] = field(default_factory=dict)
    accuracy: Any = None  # callable(model) -> float, where it makes sense


def _uniform_init(model: nn.Module, seed: int) -> nn.Module:
    """Weights uniform in [-1, 1) from a seeded generator (the paper's NumPy XOR code)."""
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1)
    return model


XOR_X = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=torch.float64)
XOR_Y = torch.tensor([[0], [1], [1], [0]], dtype=torch.float64)


def xor_task(seed: int = 0) -> Task:
    """XOR: inputs [0 0 1] .. [1 1 1], targets 0 1 1 0; 3-4-1 sigmoid MLP, no biases (16 weights).

    Loss 1/2 ||y - yhat||^2 summed over the batch, plain gradient descent. The defaults
    are the paper's Solver 2 F-cycle (lr 0.1, coarse rates up to 30, example i mod 4 at
    step i), the setting that converges in a few iterations at any N, so that the first
    ``torchpint train-mgrit`` converges; Solver 1's full batch is ``data_rule="full"``.
    """
    model = _uniform_init(sigmoid_mlp((3, 4, 1), bias=False), seed)

    def accuracy(m: nn.Module) -> float:
        with torch.no_grad():
            pred = m(XOR_X.to(next(m.parameters()).dtype)) > 0.5
        return float((pred == (XOR_Y > 0.5)).float().mean())

    return Task("xor", model, HalfSSELoss(), (XOR_X.clone(), XOR_Y.clone()),
                {"lr": 0.1, "lr_max": 30.0, "data_rule": "serial", "solver": "F"}, accuracy)


ADDER_VARIANTS = ("trask", "uniform")


def adder_data(
    n_pairs: int = 500, bits: int = 12, seed: int = 0, operand_bits: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pairs of ``operand_bits``-bit numbers (default ``bits``) written in ``bits``
    bits each (2*bits input bits, LSB first) and their ``bits``-bit sum (LSB first). With
    ``operand_bits = bits - 1`` the sum never overflows (Trask's data); with ``bits`` it
    wraps mod 2**bits."""
    ob = bits if operand_bits is None else int(operand_bits)
    if not 1 <= ob <= bits:
        raise ValueError(f"operand_bits must be in [1, {bits}], got {operand_bits!r}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    a = rng.integers(0, 2**ob, n_pairs)
    b = rng.integers(0, 2**ob, n_pairs)
    s = (a + b) % 2**bits
    shifts = np.arange(bits)

    def to_bits(v: np.ndarray) -> np.ndarray:
        return ((v[:, None] >> shifts) & 1).astype(np.float64)

    x = np.concatenate((to_bits(a), to_bits(b)), axis=1)
    return torch.from_numpy(x), torch.from_numpy(to_bits(s))


def _trask_init(model: nn.Module, seed: int) -> nn.Module:
    """Weights normal with mean -0.1 and sd 0.2 from a seeded generator: Trask's
    ``np.random.randn(n_in, n_out) * 0.2 - 0.1`` (the layers' own shape order does not
    change the distribution)."""
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.2 - 0.1)
    return model


def adder_task(seed: int = 0, data_seed: int | None = None, variant: str = "trask",
               pairs: int = 500) -> Task:
    """12-bit binary adder: 24-128-64-12 sigmoid MLP, no biases (12,032 weights), ``pairs``
    pairs (500; the paper's Table 12 uses 50), half sum-of-squares loss.

    ``variant="trask"`` (default) follows the code the paper takes its adder from (Trask's
    synthetic-gradients tutorial, "plain vanilla" backprop): weights N(-0.1, 0.2^2) and
    operands in [0, 2^11), so the 12-bit sum never overflows. ``"uniform"`` is this
    library's first reading: weights uniform in [-1, 1) (the paper's XOR code) and 12-bit
    operands whose sum wraps mod 2^12 (it reproduces the table in the appendix of
    docs/training-mgrit.md).

    Defaults: the paper's Solver 2, two-level (one example per step, ``i mod 500``), lr
    0.025 growing by 2 per level up to 0.2 (Tables 13-16: the reproducible, scalable one).
    """
    if variant not in ADDER_VARIANTS:
        raise ValueError(f"adder variant must be one of {ADDER_VARIANTS}, got {variant!r}")
    ds = seed if data_seed is None else data_seed
    if variant == "trask":
        x, y = adder_data(pairs, 12, ds, operand_bits=11)
        model = _trask_init(sigmoid_mlp((24, 128, 64, 12), bias=False), seed)
    else:
        x, y = adder_data(pairs, 12, ds)
        model = _uniform_init(sigmoid_mlp((24, 128, 64, 12), bias=False), seed)

    def accuracy(m: nn.Module) -> float:  # fraction of correct output bits
        with torch.no_grad():
            pred = m(x.to(next(m.parameters()).dtype)) > 0.5
        return float((pred == (y > 0.5)).float().mean())

    return Task("adder", model, HalfSSELoss(), (x, y),
                {"lr": 0.025, "lr_max": 0.2, "lr_growth": 2.0, "data_rule": "serial",
                 "solver": "two-level"}, accuracy)


def digits_task(seed: int = 0, hidden: int = 32) -> Task:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package): a 64-32-10 tanh
    MLP with cross-entropy, minibatches of 32 keyed by the step index.

    Inputs are scaled to [0, 1]. Uses the general autograd engine.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float64)
    y = torch.tensor(d.target, dtype=torch.long)
    with torch.random.fork_rng(devices=[]):  # PyTorch's default init, seeded, global RNG kept
        torch.manual_seed(int(seed))
        model = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))

    def accuracy(m: nn.Module) -> float:
        with torch.no_grad():
            pred = m(x.to(next(m.parameters()).dtype)).argmax(1)
        return float((pred == y).float().mean())

    return Task("digits", model, nn.CrossEntropyLoss(), (x, y),
                {"lr": 0.1, "lr_max": 0.4, "data_rule": "minibatch", "batch_size": 32},
                accuracy)


TASKS = {"xor": xor_task, "adder": adder_task, "digits": digits_task}


def make_task(name: str, seed: int = 0, **options: Any) -> Task:
    """One of :data:`TASKS` by name (``options`` go to its builder, e.g. the adder's
    ``variant``)."""
    if name not in TASKS:
        raise ValueError(f"unknown problem {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name](seed, **options)


def adder_options(problem: str, variant: str | None = None,
                  pairs: int | None = None) -> dict[str, Any]:
    """:func:`make_task` options from the adder-only settings (``--adder-variant``, the
    pair count): empty for any other problem, so a tool can pass its adder flags whatever
    the problem, and ``None`` keeps the adder's default."""
    if problem != "adder":
        return {}
    given = {"variant": variant, "pairs": pairs}
    return {k: v for k, v in given.items() if v is not None}
