"""Multilevel (nested) initialisation: train a shallow network first, then refine it in
time (Cyr, Günther, Schroder, "Multilevel initialization for layer-parallel deep neural
network training", 2019).

A residual network with N/m steps of size m h on [0, T] is the coarse discretisation of
the one with N steps of size h. :func:`refine` turns the trained coarse network into the
fine one by repeating each step layer m times (piecewise-constant interpolation of the
weights in time), so the fine network starts from nearly the coarse one's function, and
each coarse epoch costs about 1/m of a fine one.
"""

from __future__ import annotations

import copy
from typing import Any

from torchpint.core.grid import require_int
from torchpint.layerparallel.module import LayerParallel


def refine(net: LayerParallel, factor: int = 2, **options: Any) -> LayerParallel:
    """The network with ``factor`` times as many steps on the same ``[0, T]``: open,
    close and each step layer copied (the layer ``factor`` times in a row), with the
    solver settings of ``net`` unless ``options`` (``levels``, ``cfactor``, ``relax``,
    ``fwd_iterations``, ``bwd_iterations``, ``group``...) say otherwise. ``net`` must be whole
    (one process); pass ``group=`` to spread the refined network over ranks."""
    require_int("factor", factor, 2)
    if net.fit_comm().size > 1:  # slabs on ranks, or replicas on a grid
        raise ValueError(
            "refine needs the whole network in one process; refine before distributing "
            "(build the coarse net without group=, then refine(net, m, group=...))"
        )
    settings = {"T": net.T, "levels": net.levels, "cfactor": net.cfactor,
                "relax": net.relax if net.levels == options.get("levels", net.levels) else None,
                "fwd_iterations": net.fwd_iterations, "bwd_iterations": net.bwd_iterations,
                **options}
    layers = [copy.deepcopy(m) for m in net.steps for _ in range(factor)]
    return LayerParallel(copy.deepcopy(net.open), layers, copy.deepcopy(net.close), **settings)
