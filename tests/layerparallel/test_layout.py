"""Slabs of layers over ranks, and the points and edge weights they imply."""

from __future__ import annotations

import pytest

from torchpint.layerparallel.layout import Layout, layer_slabs


def test_slabs_follow_the_coarsest_grid_when_the_ranks_allow():
    assert layer_slabs(32, 2, 16) == [(0, 16), (16, 32)]
    assert layer_slabs(48, 2, 16) == [(0, 32), (32, 48)]
    assert layer_slabs(32, 3, 16) == [(0, 11), (11, 22), (22, 32)]  # too few blocks


@pytest.mark.parametrize("n, size, spacing", [(32, 2, (1, 4, 16)), (32, 3, (1, 4, 16)),
                                              (8, 3, (1, 2, 4)), (12, 4, (1, 2))])
def test_points_and_edges(n, size, spacing):
    for rank in range(size):
        lay = Layout.of(n, rank, size, spacing)
        assert sum(lay.forward_slabs()) == sum(lay.adjoint_slabs()) == n + 1
        assert [lay.owner(k) for k in lay.layers] == [rank] * len(lay.layers)
    # every forward step into an owned point uses an owned layer or an edge
    edges = set(lay.edges())
    for r, (a, b) in enumerate(lay.bounds):
        for s in spacing:
            points = [i for i in range(1, n // s + 1) if (a + 1 if r else 0) <= i * s <= b]
            for i in points:
                k = (i - 1) * s
                assert a <= k < b or (r, k) in edges
    aligned = all(a % spacing[-1] == 0 for a, _ in lay.bounds)
    assert (not edges) == aligned
