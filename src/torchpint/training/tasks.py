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

    Loss 1/2 ||y - yhat||^2 summed over the batch, plain gradient descent, lr 1.0.
    """
    model = _uniform_init(sigmoid_mlp((3, 4, 1), bias=False), seed)

    def accuracy(m: nn.Module) -> float:
        with torch.no_grad():
            pred = m(XOR_X.to(next(m.parameters()).dtype)) > 0.5
        return float((pred == (XOR_Y > 0.5)).float().mean())

    return Task("xor", model, HalfSSELoss(), (XOR_X.clone(), XOR_Y.clone()),
                {"lr": 1.0, "lr_max": 8.0, "data_rule": "full"}, accuracy)


def adder_data(
    n_pairs: int = 500, bits: int = 12, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pairs of ``bits``-bit numbers (2*bits input bits, LSB first) and their
    ``bits``-bit sum (mod 2**bits, LSB first)."""
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    a = rng.integers(0, 2**bits, n_pairs)
    b = rng.integers(0, 2**bits, n_pairs)
    s = (a + b) % 2**bits
    shifts = np.arange(bits)

    def to_bits(v: np.ndarray) -> np.ndarray:
        return ((v[:, None] >> shifts) & 1).astype(np.float64)

    x = np.concatenate((to_bits(a), to_bits(b)), axis=1)
    return torch.from_numpy(x), torch.from_numpy(to_bits(s))


def adder_task(seed: int = 0, data_seed: int | None = None) -> Task:
    """12-bit binary adder: 24-128-64-12 sigmoid MLP, no biases (12,032 weights), 500 pairs.

    lr 0.1 (also 0.025), lr_max 0.2, full batch, half sum-of-squares loss.
    """
    x, y = adder_data(500, 12, seed if data_seed is None else data_seed)
    model = _uniform_init(sigmoid_mlp((24, 128, 64, 12), bias=False), seed)

    def accuracy(m: nn.Module) -> float:  # fraction of correct output bits
        with torch.no_grad():
            pred = m(x.to(next(m.parameters()).dtype)) > 0.5
        return float((pred == (y > 0.5)).float().mean())

    return Task("adder", model, HalfSSELoss(), (x, y),
                {"lr": 0.1, "lr_max": 0.2, "data_rule": "full"}, accuracy)


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


def make_task(name: str, seed: int = 0) -> Task:
    """One of :data:`TASKS` by name."""
    if name not in TASKS:
        raise ValueError(f"unknown problem {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name](seed)
