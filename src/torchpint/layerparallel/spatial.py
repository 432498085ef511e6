"""Spatial coarsening: the coarse levels of layer-parallel training run on a coarsened
state (TorchBraid's largest published speedups come from it).

Between level ``l`` and ``l + 1`` a *transfer* restricts a state (the default, for a
``(B, C, H, W)`` state: 2x average pooling) and interpolates a correction back
(nearest or bilinear). The coarse steps apply the layers as they are, at the coarse
resolution (a 3x3 conv on the pooled image). The core's FAS cycle does the rest
(:meth:`~torchpint.core.Problem.restrict`, :meth:`~torchpint.core.Problem.interpolate`):
coarse value ``R(fine C-value)``, correction ``P(coarse new - R(fine old))``.

The adjoint uses the same pair, not the transpose pair ``(P^T, R^T)``. For 2x2 average
pooling and nearest interpolation the transposes are the same maps scaled, ``P^T = 4 R``
and ``R^T = P / 4``, and a linear solve's iterates do not change when its restriction is
scaled by ``c`` and its interpolation by ``1 / c`` (the coarse iterate, right-hand side
and correction scale together): the two choices give the same adjoint iterates. For
bilinear interpolation ``P^T`` is a wider average than ``R``; the same pair keeps one
code path and the property that restricting an interpolated state gives it back on
smooth data. Either way the fine level is untouched, so a converged adjoint is
backprop's. The coarse adjoint steps are linearised at the restricted fine forward
states ``R^l(x_k)``, the states the coarse forward steps converge to at the C-points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from torchpint.layerparallel.problems import AdjointProblem, ForwardProblem, StepGraphs

INTERPOLATIONS = ("nearest", "bilinear")


@runtime_checkable
class Transfer(Protocol):
    """A restriction of states and an interpolation of corrections between two levels."""

    def restrict(self, u: torch.Tensor) -> torch.Tensor:
        """The state ``u`` on the coarser level (a new tensor; ``u`` unchanged)."""
        ...

    def interpolate(self, e: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The coarse correction ``e`` on the finer level, whose states have ``shape``."""
        ...


@dataclass(frozen=True)
class Pooling:
    """2x average pooling down (a ``(B, C, H, W)`` state to ``(B, C, ceil(H/2),
    ceil(W/2))``), ``mode`` (``"nearest"`` or ``"bilinear"``) interpolation up. Pooling
    then nearest interpolation gives a piecewise-constant state back unchanged."""

    mode: str = "nearest"

    def __post_init__(self) -> None:
        if self.mode not in INTERPOLATIONS:
            raise ValueError(f"spatial interpolation must be one of {INTERPOLATIONS}, "
                             f"got {self.mode!r}")

    def restrict(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 4:
            raise ValueError(
                f"spatial coarsening pools the height and width of a (batch, channels, "
                f"height, width) state, but the state has shape {tuple(u.shape)}: use it "
                "for convolutional steps only, or give a Transfer of your own")
        return F.avg_pool2d(u, 2, ceil_mode=True)

    def interpolate(self, e: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        kw = {"align_corners": False} if self.mode == "bilinear" else {}
        return F.interpolate(e, size=tuple(shape[-2:]), mode=self.mode, **kw)


Spec = str | Transfer | None


class SpatialLevels:
    """One transfer per coarsening of a hierarchy (``None``: level ``l + 1`` keeps level
    ``l``'s state). Made by :meth:`of` from ``LayerParallel(spatial=...)``."""

    def __init__(self, transfers: Sequence[Transfer | None]) -> None:
        self.transfers = tuple(transfers)
        self._shapes: dict[tuple[torch.Size, int], torch.Size] = {}

    @classmethod
    def of(cls, spec: Spec | Sequence[Spec], levels: int) -> SpatialLevels | None:
        """``spec`` for a hierarchy of ``levels``: ``None`` (off), ``"nearest"`` or
        ``"bilinear"`` (:class:`Pooling` between every level and the next), a
        :class:`Transfer`, or one of these per coarsening (``levels - 1`` of them).
        ``None`` when nothing is coarsened."""
        if spec is None:
            return None
        specs = list(spec) if isinstance(spec, Sequence) and not isinstance(spec, str) \
            else [spec] * (levels - 1)
        if len(specs) != levels - 1:
            raise ValueError(f"spatial gives {len(specs)} transfers for {levels} levels: give "
                             f"one per coarsening ({levels - 1}), or one for all")
        transfers = [_transfer(s) for s in specs]
        return cls(transfers) if any(t is not None for t in transfers) else None

    def coarsens(self, level: int) -> bool:
        """Whether level ``level + 1`` runs on a coarser state than ``level``."""
        return level < len(self.transfers) and self.transfers[level] is not None

    def restrict(self, u: torch.Tensor, level: int) -> torch.Tensor:
        t = self.transfers[level]
        return u if t is None else t.restrict(u)

    def interpolate(self, e: torch.Tensor, level: int, fine: torch.Size) -> torch.Tensor:
        """Correction ``e`` of level ``level + 1`` on level ``level``, for a problem whose
        level-0 states have shape ``fine``."""
        t = self.transfers[level]
        return e if t is None else t.interpolate(e, self.shape(fine, level))

    def shape(self, fine: torch.Size, level: int) -> torch.Size:
        """The state's shape on ``level`` when level 0's is ``fine`` (found once by
        restricting zeros)."""
        key = (torch.Size(fine), level)
        if key not in self._shapes:
            u = torch.zeros(fine)
            for l in range(level):
                u = self.restrict(u, l)
            self._shapes[key] = u.shape
        return self._shapes[key]


def _transfer(spec: Any) -> Transfer | None:
    if spec is None or isinstance(spec, Transfer):
        return spec
    if isinstance(spec, str):
        return Pooling(spec)
    raise TypeError(f"spatial must be None, one of {INTERPOLATIONS}, a Transfer or one per "
                    f"coarsening, got {spec!r}")


class CoarsenedForward(ForwardProblem):
    """The forward problem with its coarse levels on coarsened states."""

    def __init__(self, spatial: SpatialLevels, *args: Any) -> None:
        super().__init__(*args)
        self.spatial = spatial

    def restrict(self, u: torch.Tensor, level: int) -> torch.Tensor:
        return self.spatial.restrict(u, level)

    def interpolate(self, e: torch.Tensor, level: int) -> torch.Tensor:
        return self.spatial.interpolate(e, level, self.initial_state().shape)


class CoarsenedAdjoint(AdjointProblem):
    """The adjoint with the forward's transfers (the same pair: see the module)."""

    def __init__(self, spatial: SpatialLevels, graphs: StepGraphs, g: torch.Tensor) -> None:
        super().__init__(graphs, g)
        self.spatial = spatial

    def restrict(self, u: torch.Tensor, level: int) -> torch.Tensor:
        return self.spatial.restrict(u, level)

    def interpolate(self, e: torch.Tensor, level: int) -> torch.Tensor:
        return self.spatial.interpolate(e, level, self.initial_state().shape)
