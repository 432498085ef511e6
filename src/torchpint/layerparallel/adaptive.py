"""Adaptive iterations: raise a layer-parallel network's MGRIT iterations, up to exact
solves, when its inexact gradient stops helping training.

A few MGRIT iterations give a gradient with an error that stays roughly the same size as
training goes on, while the true gradient shrinks near a minimum: the step's direction is
then more error than gradient, and training stalls or drifts (the bias Jiang, Salvadó,
Cyr, Kopaničáková, Krause and Schroder, arXiv 2601.09026, detect before switching to
exact training). :class:`AdaptiveIterations` measures it on the batches themselves: every
``every`` batches it compares the gradient the optimizer is about to take with serial
backprop's at the same weights on the same batch, and raises the iterations when the
relative error stays above ``threshold``. With a relative error rho < 1 the step is still a
descent direction (``g . g_hat >= (1 - rho) |g|^2``), so the default 0.5 keeps at least
half of an exact step's first-order decrease.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchpint.layerparallel.check import relative_error, serial_gradient
from torchpint.trainer import StepHook


class AdaptiveIterations(StepHook):
    """A :func:`~torchpint.trainer.fit` hook that raises a :class:`LayerParallel`'s
    iterations when its gradient error outgrows the gradient (``fit(..., hooks=[it])``).

    Every ``every`` batches (from the first) it probes: the relative 2-norm error
    ``rho = |g_lp - g| / |g|`` of the batch's layer-parallel parameter gradient against
    serial backprop's (rank 0 computes ``g`` on :meth:`LayerParallel.serial`, with the
    random number generators forked, so that training draws the same numbers with or
    without the probes; the ranks agree on the largest rho). After ``patience`` probes in
    a row above ``threshold`` it raises: it doubles the forward and backward iterations
    while the forward's stay at most ``max_iterations``, and then makes the solves exact
    (one level: the sequential sweep, whose gradient is backprop's).

    ``history`` holds every probe; it and the count of probes above the threshold are in
    the training checkpoint, and the network's raised settings in its ``state_dict``, so
    a resumed run goes on as the uninterrupted one. With dropout the serial network
    draws its own masks, so rho then also measures the masks' difference.
    """

    def __init__(self, every: int = 20, threshold: float = 0.5, patience: int = 2,
                 max_iterations: int = 8) -> None:
        for name, value in (("every", every), ("patience", patience),
                            ("max_iterations", max_iterations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0 (a relative gradient error), got "
                             f"{threshold!r}")
        self.every, self.threshold = every, float(threshold)
        self.patience, self.max_iterations = patience, max_iterations
        self.history: list[dict[str, Any]] = []
        self._above = 0  # probes in a row above the threshold

    def after_backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       step: int) -> None:
        """Probe at every ``every``-th batch (``step`` counts the run's batches from 0)."""
        if step % self.every:
            return
        rho = gradient_error(model, x, y)
        before = _settings(model)
        self._above = self._above + 1 if rho > self.threshold else 0
        raised = self._above >= self.patience and before["levels"] > 1
        if raised:
            self._above = 0
            f, b = before["fwd_iterations"], before["bwd_iterations"]
            if 2 * f <= self.max_iterations:
                model.retune(fwd_iterations=2 * f, bwd_iterations=2 * b)
            else:
                model.retune(levels=1)
        self.history.append({"step": step, "grad_rel_err": rho, **before,
                             "raised_to": _settings(model) if raised else None})

    @property
    def exact(self) -> bool:
        """Whether the schedule has made the solves exact."""
        return any(h["raised_to"] and h["raised_to"]["levels"] == 1 for h in self.history)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(h) for h in self.history], "above": self._above}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state["history"]]
        self._above = int(state["above"])


def _settings(net: Any) -> dict[str, int]:
    return {"fwd_iterations": net.fwd_iterations, "bwd_iterations": net.bwd_iterations,
            "levels": net.levels}


def gradient_error(net: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    """``|g_lp - g| / |g|`` of the parameter gradients ``net`` holds now (its last
    backward, on batch ``(x, y)``) against serial backprop's on the same batch and
    weights, on every rank (the largest over the data-parallel replicas). Every rank
    calls it. The serial pass changes no ``.grad``, buffer or random state."""
    lp = net.gathered_grads()
    serial = net.serial()
    rho = -1.0
    if serial is not None:
        rho = relative_error(lp, serial_gradient(serial, x, y)[1])
    comm = net.fit_comm()
    if comm.size > 1:  # rank 0 of every replica knows its rho; the others gave -1
        t = torch.tensor([rho], dtype=torch.float64)
        rho = float(comm.all_reduce(t, "max", "the gradient error").item())
    return rho
