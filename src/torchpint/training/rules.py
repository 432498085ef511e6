"""Coarse-level learning-rate rules and per-step data rules for training by MGRIT.

MGRIT needs every level's propagator to be a fixed function of ``(w, i, level)``, so
the learning rate of a level and the examples a step sees are functions of the step
index ``i`` (counted on that level), the level and a seed, never of global RNG state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from torchpint.common.seeds import mix_seed

LR_RULES = ("naive", "geometric")
DATA_RULES = ("full", "serial", "minibatch")


def make_lr_rule(
    lr: float,
    rule: str | Callable[[int], float] = "geometric",
    *,
    growth: float = 2.0,
    lr_max: float = math.inf,
) -> Callable[[int], float]:
    """The learning rate of each level: ``rule(level) -> lr``.

    - ``"naive"``: ``lr`` on every level (the paper shows this scales badly).
    - ``"geometric"``: ``min(growth**level * lr, lr_max)``; growth 2, or 1.25 ("slow").
    - a callable ``level -> lr``: used as is (level 0 should give the fine rate).
    """
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if callable(rule):
        return rule
    if rule == "naive":
        return lambda level: float(lr)
    if rule == "geometric":
        if not growth >= 1:
            raise ValueError(f"lr growth must be >= 1, got {growth!r}")
        if not lr_max > 0:
            raise ValueError(f"lr_max must be > 0, got {lr_max!r}")
        return lambda level: float(min(growth**level * lr, lr_max))
    raise ValueError(f"lr_rule must be one of {LR_RULES} or a callable, got {rule!r}")


class DataRule:
    """Which examples step ``i`` of ``level`` trains on: ``indices(i, level)``.

    Args:
        rule: ``"full"`` (every example, every step, every level: the paper's Solver 1),
            ``"serial"`` (example ``i mod K``: Solver 2) or ``"minibatch"`` (``batch_size``
            examples; epoch ``e`` of a level is a permutation keyed by
            ``(seed, level, e)``, and step ``i`` takes positions ``i*B .. i*B + B - 1``
            of the concatenated epochs: ordinary shuffled minibatch SGD, but keyed).
        n_examples: K, the size of the training set.
        batch_size: B for ``"minibatch"`` (``"serial"`` is B = 1 without shuffling).
        seed: the data seed.

    ``i`` is the step index on its own level, so every level cycles through the data.
    ``indices`` returns ``None`` for the full batch, else a ``numpy`` int64 array or a
    ``slice``.
    """

    def __init__(
        self, rule: str, n_examples: int, batch_size: int | None = None, seed: int = 0
    ) -> None:
        if rule not in DATA_RULES:
            raise ValueError(f"data rule must be one of {DATA_RULES}, got {rule!r}")
        if n_examples < 1:
            raise ValueError("the training set is empty")
        if rule == "minibatch":
            if batch_size is None or int(batch_size) != batch_size or batch_size < 1:
                raise ValueError(f"minibatch needs a batch_size >= 1, got {batch_size!r}")
            if batch_size > n_examples:
                raise ValueError(
                    f"batch_size {batch_size} is larger than the {n_examples} examples"
                )
        self.rule = rule
        self.n = int(n_examples)
        self.batch_size = int(batch_size) if batch_size is not None else None
        self.seed = int(seed)
        self._perm = lru_cache(maxsize=64)(self._permutation)

    def _permutation(self, level: int, epoch: int) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64(mix_seed(self.seed, level, epoch)))
        return rng.permutation(self.n)

    def indices(self, i: int, level: int) -> np.ndarray | slice | None:
        if self.rule == "full":
            return None
        if self.rule == "serial":
            k = i % self.n
            return slice(k, k + 1)
        b, n = self.batch_size, self.n
        start = i * b
        epoch, pos = divmod(start, n)
        perm = self._perm(level, epoch)
        if pos + b <= n:
            return perm[pos : pos + b]
        return np.concatenate((perm[pos:], self._perm(level, epoch + 1)[: pos + b - n]))
