"""The process grid of parareal x data parallelism: D replicas of an N-chunk network.

It lives on the shared floor, :mod:`torchpint.common.process_grid` (layer-parallel
training stands on it too); this module keeps parareal's import path. A grid's stages
are the chunks (``grid.chunks``, ``grid.chunk``, ``grid.chunk_group``).
"""

from torchpint.common.process_grid import ProcessGrid, process_grid

__all__ = ["ProcessGrid", "process_grid"]
