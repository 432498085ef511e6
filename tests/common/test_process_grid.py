"""The process grid on the shared floor: S stages x D replicas, without processes (the
grid's collectives are tested on 4 Gloo ranks by tests/parareal/test_grid.py and
tests/layerparallel/test_data_parallel.py)."""

from __future__ import annotations

import pytest
import torch

from torchpint.common.process_grid import ProcessGrid, process_grid
from torchpint.parareal import executors
from torchpint.parareal.executors import grid as parareal_grid


def test_parareal_keeps_its_import_path_and_words():
    assert parareal_grid.ProcessGrid is ProcessGrid and executors.ProcessGrid is ProcessGrid
    assert parareal_grid.process_grid is process_grid
    g = ProcessGrid(4, 2, stage=3, replica=1, stage_group="s", data_group="d")
    assert (g.chunks, g.chunk, g.chunk_group) == (g.stages, g.stage, g.stage_group) == (4, 3, "s")


def test_shard_takes_this_replicas_rows_and_refuses_too_few():
    x, y = torch.arange(10).view(5, 2), torch.arange(5)
    parts = [ProcessGrid(1, 2, 0, d, None, None).shard(x, y) for d in (0, 1)]
    assert [p[1].tolist() for p in parts] == [[0, 1, 2], [3, 4]]  # torch.tensor_split's
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert ProcessGrid(1, 1, 0, 0, None, None).sum([1.0, 2.0]) == [1.0, 2.0]
    with pytest.raises(ValueError, match="use a batch size of at least 2"):
        ProcessGrid(1, 2, 0, 0, None, None).shard(x[:1])


def test_process_grid_needs_a_process_group():
    with pytest.raises(RuntimeError, match="needs torch.distributed initialised"):
        process_grid(2, 2)
