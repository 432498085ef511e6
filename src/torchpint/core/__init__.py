"""The parallel-in-time core: grids, the problem contract, MGRIT and parareal.

It knows nothing of neural networks: a problem is a sequence of propagators on a time
grid (:class:`Problem`), and :class:`MGRIT` / :class:`Parareal` solve it, serially or
over a ``torch.distributed`` group.

Modules: ``grid`` (levels, C/F points, slabs), ``problem`` (the contract and its one
step check), ``mgrit`` (settings and the solve loop: XBraid's drive.c), ``cycle``
(relaxation, restriction, correction, cycles: relax.c, restrict.c, interp.c),
``schedule`` (early-posted receives: communication.c), ``residual`` (the residual and
the divergence checks: residual.c), ``resume`` (checkpoint state, fingerprint, resume,
re-slab), ``history`` (results, cost model), ``costmodel`` (the real schedule on a
virtual clock).
"""

from torchpint.core.costmodel import (
    Choice,
    Hierarchy,
    Machine,
    Prediction,
    VirtualComm,
    choose_hierarchy,
    mgrit_time,
)
from torchpint.core.grid import Grid
from torchpint.core.history import DivergenceError, MGRITResult, iteration_cost, potential_speedup
from torchpint.core.mgrit import MGRIT, Parareal
from torchpint.core.problem import FunctionProblem, Problem, serial_solve
from torchpint.runtime.checkpoint import CheckpointError, CheckpointMismatchError
from torchpint.runtime.comm import PeerClosedError, RankTimeoutError, init_distributed

__all__ = [
    "MGRIT",
    "CheckpointError",
    "CheckpointMismatchError",
    "Choice",
    "DivergenceError",
    "FunctionProblem",
    "Grid",
    "Hierarchy",
    "MGRITResult",
    "Machine",
    "Parareal",
    "PeerClosedError",
    "Prediction",
    "Problem",
    "RankTimeoutError",
    "VirtualComm",
    "choose_hierarchy",
    "init_distributed",
    "iteration_cost",
    "mgrit_time",
    "potential_speedup",
    "serial_solve",
]
