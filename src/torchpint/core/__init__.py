"""The parallel-in-time core: grids, the problem contract, MGRIT and parareal.

It knows nothing of neural networks: a problem is a sequence of propagators on a time
grid (:class:`Problem`), and :class:`MGRIT` / :class:`Parareal` solve it, serially or
over a ``torch.distributed`` group.
"""

from torchpint.core.checkpoint import CheckpointError, CheckpointMismatchError
from torchpint.core.distributed import PeerClosedError, RankTimeoutError, init_distributed
from torchpint.core.grid import Grid
from torchpint.core.history import DivergenceError, MGRITResult, iteration_cost, potential_speedup
from torchpint.core.mgrit import MGRIT, Parareal
from torchpint.core.problem import FunctionProblem, Problem, serial_solve

__all__ = [
    "MGRIT",
    "CheckpointError",
    "CheckpointMismatchError",
    "DivergenceError",
    "FunctionProblem",
    "Grid",
    "MGRITResult",
    "Parareal",
    "PeerClosedError",
    "Problem",
    "RankTimeoutError",
    "init_distributed",
    "iteration_cost",
    "potential_speedup",
    "serial_solve",
]
