"""The runtime floor: what every application shares, beneath all of them.

- :mod:`~torchpint.runtime.comm`: every message between ranks, with timeouts and typed
  peer errors;
- :mod:`~torchpint.runtime.checkpoint`: one checkpoint dialect (fingerprints, per-rank
  sets, safe loading);
- :mod:`~torchpint.runtime.files`: atomic writes by one writer, typed write errors;
- :mod:`~torchpint.runtime.outputs`: results JSON and plots, checked before the work;
- :mod:`~torchpint.runtime.signals`: SIGINT/SIGTERM stop at the next boundary.

It knows nothing of MGRIT or of neural networks.
"""

from torchpint.runtime.checkpoint import CheckpointError, CheckpointMismatchError
from torchpint.runtime.comm import (
    Comm,
    GroupComm,
    PeerClosedError,
    PeerError,
    RankTimeoutError,
    init_distributed,
    make_comm,
)
from torchpint.runtime.files import LockedError, WriteError
from torchpint.runtime.signals import Interrupted

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Comm",
    "GroupComm",
    "Interrupted",
    "LockedError",
    "PeerClosedError",
    "PeerError",
    "RankTimeoutError",
    "WriteError",
    "init_distributed",
    "make_comm",
]
