"""Kept for old imports: messages live on the floor, :mod:`torchpint.runtime.comm`."""

from torchpint.runtime.comm import (
    Comm,
    GroupComm,
    PeerClosedError,
    PeerError,
    RankTimeoutError,
    init_distributed,
    is_peer_closed,
    make_comm,
    peer_failure,
)

__all__ = ["Comm", "GroupComm", "PeerClosedError", "PeerError", "RankTimeoutError",
           "init_distributed", "is_peer_closed", "make_comm", "peer_failure"]
