"""Multilevel time grids: levels, C- and F-points, and the time slab each rank owns.

Level ``l`` has points ``0 .. n_l``; with coarsening factor ``m_l`` its C-points are
``0, m_l, 2 m_l, ...`` and they are the points of level ``l + 1`` (``n_{l+1} = n_l // m_l``).
When ``m_l`` does not divide ``n_l`` the last points are F-points after the last C-point
(as in XBraid). Ownership is by fine index: rank ``r`` owns the level-0 points
``[lo_r, hi_r)`` and, on every level, the points whose fine index falls in that range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def is_integer(value: Any) -> bool:
    """True for an integral number (``3``, ``3.0``, a NumPy integer), False for ``2.5``,
    NaN, infinity, booleans, strings or containers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and float(value).is_integer()


def require_int(name: str, value: Any, least: int, unit: str = "") -> int:
    """``value`` as an int, or a ValueError saying ``name`` must be an integer >= ``least``."""
    if not is_integer(value) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}{unit}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Grid:
    """A hierarchy of time grids.

    Args:
        nt: number of fine time steps (``nt + 1`` points).
        cfactor: the coarsening factor, one for all levels or one per coarsening.
        levels: the number of levels. ``None``: coarsen while allowed by
            ``min_coarse`` / ``max_coarse``.
        min_coarse: never create a level with fewer points than this (XBraid's rule).
        max_coarse: with ``levels=None``, stop once a level has at most this many points.
    """

    nt: int
    cfactor: int | Sequence[int] = 2
    levels: int | None = None
    min_coarse: int = 2
    max_coarse: int = 1
    n: tuple[int, ...] = field(init=False)  # steps per level
    m: tuple[int, ...] = field(init=False)  # coarsening factor per coarsening

    def __post_init__(self) -> None:
        nt = self.nt
        if not is_integer(nt) or nt < 1:
            raise ValueError(f"nt must be a positive number of time steps, got {nt!r}")
        cf = self.cfactor
        factors: list[Any] = [cf] if isinstance(cf, numbers.Real) else (
            list(cf) if isinstance(cf, Sequence) and not isinstance(cf, str) else [None]
        )
        if not factors or not all(is_integer(m) and m >= 2 for m in factors):
            raise ValueError(
                f"cfactor must be an integer >= 2 (or a list of them), got {cf!r}"
            )
        if self.levels is not None:
            require_int("levels", self.levels, 1)
        require_int("min_coarse", self.min_coarse, 2, " points")
        if not is_integer(self.max_coarse) or self.max_coarse < 1:
            raise ValueError(
                f"max_coarse must be an integer >= 1 point (coarsening stops at a level of "
                f"at most this many points), got {self.max_coarse!r}"
            )

        def factor(l: int) -> int:
            return int(factors[min(l, len(factors) - 1)])

        n, m = [int(nt)], []
        while True:
            l = len(n) - 1
            if self.levels is not None and len(n) == self.levels:
                break
            coarse = n[l] // factor(l)
            if self.levels is not None and coarse < 1:
                raise ValueError(
                    f"cannot make {self.levels} levels from {nt} steps with cfactor "
                    f"{self.cfactor}: level {l} has {n[l]} steps, fewer than its cfactor "
                    f"{factor(l)}. Use fewer levels, a smaller cfactor or more steps."
                )
            if self.levels is None and (
                coarse + 1 < self.min_coarse or n[l] + 1 <= self.max_coarse or coarse < 1
            ):
                break
            n.append(coarse)
            m.append(factor(l))
        object.__setattr__(self, "n", tuple(n))
        object.__setattr__(self, "m", tuple(m))
        object.__setattr__(self, "levels", len(n))

    # -- structure --------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.n)

    def n_steps(self, level: int) -> int:
        return self.n[level]

    def stride(self, level: int) -> int:
        """Fine steps per step of ``level`` (product of the factors below it)."""
        s = 1
        for m in self.m[:level]:
            s *= m
        return s

    def fine_index(self, i: int, level: int) -> int:
        return i * self.stride(level)

    def c_points(self, level: int) -> range:
        """The C-points of ``level`` (empty on the coarsest level)."""
        if level == self.num_levels - 1:
            return range(0)
        return range(0, self.n[level] + 1, self.m[level])

    # -- ownership --------------------------------------------------------------------
    def owned(self, level: int, lo: int, hi: int) -> range:
        """Points of ``level`` whose fine index lies in ``[lo, hi)``."""
        s = self.stride(level)
        first = -(-lo // s)
        last = min((hi - 1) // s, self.n[level])
        return range(first, max(first, last + 1))


def split_slabs(n_points: int, size: int, slabs: Sequence[int] | None = None) -> list[int]:
    """Contiguous blocks of fine points per rank: given ``slabs`` or as even as possible."""
    if slabs is not None:
        slabs = [int(s) for s in slabs]
        if len(slabs) != size or sum(slabs) != n_points or min(slabs) < 1:
            raise ValueError(
                f"slabs {slabs} must give every one of the {size} ranks at least one point "
                f"and add up to the {n_points} fine time points"
            )
        return slabs
    if n_points < size:
        raise ValueError(
            f"{size} ranks but only {n_points} fine time points: every rank needs at least "
            "one point. Use fewer processes or more time steps."
        )
    base, extra = divmod(n_points, size)
    return [base + (1 if r < extra else 0) for r in range(size)]


@dataclass(frozen=True)
class Partition:
    """What one rank owns of a :class:`Grid`: its slab of fine points and, per level, the
    first owned point, how many it owns and the neighbouring ranks that own points there.

    ``prev[l]`` / ``next[l]`` are ``None`` where no earlier / later rank owns a point of
    level ``l`` (or this rank owns none there).
    """

    rank: int
    size: int
    slab: range
    first: tuple[int, ...]
    count: tuple[int, ...]
    prev: tuple[int | None, ...]
    next: tuple[int | None, ...]

    @classmethod
    def of(
        cls, grid: Grid, rank: int = 0, size: int = 1, slabs: Sequence[int] | None = None
    ) -> Partition:
        """Rank ``rank`` of ``size``: contiguous slabs (``slabs`` or as even as possible)."""
        sizes = split_slabs(grid.nt + 1, size, slabs)
        bounds = [(sum(sizes[:r]), sum(sizes[: r + 1])) for r in range(size)]
        first, count, prev, nxt = [], [], [], []
        for l in range(grid.num_levels):
            owned = [grid.owned(l, a, b) for a, b in bounds]
            mine = owned[rank]
            first.append(mine.start)
            count.append(len(mine))
            before = [r for r in range(rank) if len(owned[r])]
            after = [r for r in range(rank + 1, size) if len(owned[r])]
            prev.append(before[-1] if before and len(mine) else None)
            nxt.append(after[0] if after and len(mine) else None)
        lo, hi = bounds[rank]
        return cls(rank, size, range(lo, hi), tuple(first), tuple(count), tuple(prev), tuple(nxt))

    def owned(self, level: int) -> range:
        """The points of ``level`` this rank owns."""
        return range(self.first[level], self.first[level] + self.count[level])
