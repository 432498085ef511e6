"""``LayerParallel``'s arguments checked before anything is built, each error naming the
fix: the step layers and their count, the hierarchy, the iterations, the starts, the
relaxation (whose default depends on spatial coarsening) and the spatial transfers."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

from torch import nn

from torchpint.core.grid import require_int
from torchpint.core.mgrit import relaxation_per_level
from torchpint.layerparallel.spatial import SpatialLevels

STARTS = ("skip", "warm", "cold")

StepLayers = Sequence[nn.Module] | Callable[[int], nn.Module]


def renamed(old: str, old_value: int | None, new: str, value: int) -> int:
    """``value``, or ``old_value`` given under a keyword's deprecated name."""
    if old_value is None:
        return value
    warnings.warn(f"LayerParallel({old}=...) is deprecated; use {new}=...", DeprecationWarning,
                  stacklevel=3)
    return old_value


def step_layers(steps: StepLayers, num_steps: int | None
                ) -> tuple[int, Callable[[int], nn.Module] | None]:
    """The number of steps N and, for steps given as a function of k, that function."""
    make = None if isinstance(steps, (nn.Module, Sequence)) else steps
    if make is not None and not callable(make):
        raise TypeError(f"steps must be a list of modules or a function of k, got {steps!r}")
    if make is None and num_steps is not None and num_steps != len(steps):
        raise ValueError(f"num_steps={num_steps} but {len(steps)} step layers were given")
    if make is not None and num_steps is None:
        raise ValueError("steps given as a function need num_steps=N")
    n = int(num_steps) if make is not None else len(steps)
    if n < 1:
        raise ValueError("LayerParallel needs at least one step layer")
    return n, make


def check_solves(n: int, T: float, levels: int, cfactor: int, fwd_iterations: int,
                 bwd_iterations: int, fwd_start: str, bwd_start: str) -> None:
    """The time horizon, the hierarchy (N divisible by ``cfactor^(levels-1)``, so the
    adjoint's reversed grid has the same C-points), the iterations and the starts."""
    if not (isinstance(T, (int, float)) and math.isfinite(T) and T > 0):
        raise ValueError(f"T must be a finite number > 0, got {T!r}")
    for name, k, least in (("fwd_iterations", fwd_iterations, 1),
                           ("bwd_iterations", bwd_iterations, 1),
                           ("levels", levels, 1), ("cfactor", cfactor, 2)):
        require_int(name, k, least)
    if n % cfactor ** (levels - 1):
        raise ValueError(
            f"{n} steps cannot make {levels} levels with cfactor {cfactor}: N must be "
            f"divisible by cfactor^(levels-1) = {cfactor ** (levels - 1)}. Use "
            f"{n - n % cfactor ** (levels - 1) or cfactor ** (levels - 1)} steps, fewer "
            "levels or a smaller cfactor."
        )
    for name, start in (("fwd_start", fwd_start), ("bwd_start", bwd_start)):
        if start not in STARTS:
            raise ValueError(f"{name} must be one of {STARTS}, got {start!r}")


def relaxation(relax: str | Sequence[str] | None, levels: int,
               spatial: SpatialLevels | None) -> str | tuple[str, ...]:
    """``relax`` checked: one name, or one per relaxing level (its default filled in).

    The default is TorchBraid's, F on the fine level and FCF on the coarse ones, except
    that a level whose next level runs on a coarsened state gets FCF: F-relaxation
    changes its C-values only by interpolated corrections, so it cannot converge to the
    exact (backprop's) solution. An explicit F there is left as given (inexact by
    design; docs/layer-parallel.md, "Spatial coarsening")."""
    if relax is None:
        relax = tuple("FCF" if l or (spatial is not None and spatial.coarsens(l)) else "F"
                      for l in range(levels - 1))
    per_level = relaxation_per_level(relax, levels)  # a bad name fails now, not later
    return relax if isinstance(relax, str) else tuple(per_level)
