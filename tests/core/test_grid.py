import pytest

from torchpint.core.grid import Grid, Partition, split_slabs


def test_full_coarsening_and_levels():
    g = Grid(100)
    assert g.n == (100, 50, 25, 12, 6, 3, 1)
    assert Grid(100, levels=2).n == (100, 50)
    assert Grid(100, cfactor=[4, 2], levels=3).n == (100, 25, 12)
    assert Grid(100, max_coarse=10).n[-1] + 1 <= 10
    assert Grid(100, min_coarse=10).n == (100, 50, 25, 12)


def test_c_points_and_strides():
    g = Grid(10, cfactor=[2, 3], levels=3)
    assert list(g.c_points(0)) == [0, 2, 4, 6, 8, 10]
    assert list(g.c_points(1)) == [0, 3]
    assert list(g.c_points(2)) == []
    assert g.fine_index(1, 2) == 6


def test_ownership_by_fine_index():
    g = Grid(16, levels=3)
    assert g.owned(0, 0, 5) == range(0, 5)
    assert g.owned(1, 5, 17) == range(3, 9)
    assert list(g.owned(2, 5, 7)) == []  # this slab holds no level-2 point


@pytest.mark.parametrize("kwargs, msg", [
    (dict(nt=0), "positive"),
    (dict(nt=10, cfactor=1), "cfactor"),
    (dict(nt=10, cfactor=[2, 1]), "cfactor"),
    (dict(nt=10, levels=0), "levels"),
    (dict(nt=4, cfactor=2, levels=4), "cannot make 4 levels"),
])
def test_bad_grids(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        Grid(**kwargs)


def test_slabs():
    assert split_slabs(10, 3) == [4, 3, 3]
    assert split_slabs(10, 2, [9, 1]) == [9, 1]
    with pytest.raises(ValueError, match="at least one point"):
        split_slabs(10, 2, [10, 0])
    with pytest.raises(ValueError, match="only 2 fine time points"):
        split_slabs(2, 3)


def test_partition_covers_every_level_once():
    g = Grid(nt=20, cfactor=2)
    parts = [Partition.of(g, r, 3) for r in range(3)]
    assert [len(p.slab) for p in parts] == [7, 7, 7]
    for l in range(g.num_levels):
        owned = [i for p in parts for i in p.owned(l)]
        assert owned == list(range(g.n[l] + 1))
        holders = [p.rank for p in parts if p.count[l]]
        for p in parts:
            if p.count[l]:
                k = holders.index(p.rank)
                assert p.prev[l] == (holders[k - 1] if k else None)
                assert p.next[l] == (holders[k + 1] if k + 1 < len(holders) else None)
