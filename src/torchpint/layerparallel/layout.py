"""Which layers each rank owns, and what that means for the two MGRIT solves.

Rank ``p`` owns a contiguous slab of layers ``[a_p, b_p)`` and their parameters. The
core gives a rank the points of its slab and has it compute the step *into* each owned
point, so the forward solve gets the points ``a_p + 1 .. b_p`` (rank 0 also point 0)
and the adjoint, solved with the ranks numbered backwards, gets the mirrored points.
Every fine step and every adjoint step (coarse ones included) then uses an owned layer.
A forward coarse step of level ``l`` into the first owned point ``i`` uses layer
``(i - 1) m^l``, which lies before the slab unless ``a_p`` is a multiple of ``m^l``:
that one layer's weights are sent to the rank before each forward solve (an *edge*).
Slabs are cut at multiples of the coarsest spacing where the ranks allow, so that with
enough layers per rank no edge is needed at all.
"""

from __future__ import annotations

from dataclasses import dataclass


def layer_slabs(n: int, size: int, unit: int = 1) -> list[tuple[int, int]]:
    """``size`` contiguous slabs of ``n`` layers, as even as possible in blocks of ``unit``
    layers (the coarsest grid spacing) when there are enough blocks, else layer by layer."""
    if size > n:
        raise ValueError(
            f"{size} ranks but only {n} step layers: every rank needs at least one layer. "
            "Use fewer processes or more steps."
        )
    if unit < 1 or n % unit or n // unit < size:
        unit = 1
    base, extra = divmod(n // unit, size)
    bounds, start = [], 0
    for r in range(size):
        stop = start + (base + (r < extra)) * unit
        bounds.append((start, stop))
        start = stop
    return bounds


@dataclass(frozen=True)
class Layout:
    """This rank's share of ``n`` layers over ``size`` ranks, with a grid of spacing
    ``spacing[l] = m^l`` on level ``l``."""

    n: int
    rank: int
    bounds: tuple[tuple[int, int], ...]
    spacing: tuple[int, ...]

    @classmethod
    def of(cls, n: int, rank: int, size: int, spacing: tuple[int, ...]) -> Layout:
        return cls(n, rank, tuple(layer_slabs(n, size, spacing[-1])), tuple(spacing))

    @property
    def size(self) -> int:
        return len(self.bounds)

    @property
    def layers(self) -> range:
        """The layers this rank owns."""
        return range(*self.bounds[self.rank])

    def owner(self, k: int) -> int:
        """The rank that owns layer ``k``."""
        return next(r for r, (a, b) in enumerate(self.bounds) if a <= k < b)

    def forward_slabs(self) -> list[int]:
        """Fine points per rank of the forward solve (``n + 1`` in all)."""
        return [b - a + (r == 0) for r, (a, b) in enumerate(self.bounds)]

    def adjoint_slabs(self) -> list[int]:
        """Fine points per rank of the adjoint solve, ranks numbered backwards."""
        return [b - a + (q == 0) for q, (a, b) in enumerate(reversed(self.bounds))]

    def edges(self) -> list[tuple[int, int]]:
        """``(rank, layer)``: the layers a rank's forward coarse steps need from another
        rank, for every rank (each rank sends and receives its part)."""
        out = []
        for r, (a, b) in enumerate(self.bounds):
            need = set()
            first = a + 1 if r else 0  # first owned point of the forward solve
            for spacing in self.spacing[1:]:
                i = max(-(-first // spacing), 1)  # first owned point >= 1 of the level
                if i * spacing <= b and (i - 1) * spacing < a:
                    need.add((i - 1) * spacing)
            out += [(r, k) for k in sorted(need)]
        return out
