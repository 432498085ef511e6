"""``train_mgrit``: train a model by MGRIT over its optimizer steps, and verify it.

The result carries the trained model, the MGRIT history and the comparison with
ordinary serial training (``max |w_mgrit - w_serial|`` and both loss curves).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchpint.core import MGRIT, MGRITResult
from torchpint.runtime.comm import make_comm
from torchpint.training.config import TrainingConfig
from torchpint.training.problem import TrainingProblem


@dataclass
class SerialTraining:
    """Ordinary training, step after step: final state, loss per step, sampled states."""

    final: torch.Tensor
    losses: list[float]  # loss of w_i on the batch of step i, i = 0 .. N-1
    states: dict[int, torch.Tensor]  # w_i at the requested points
    seconds: float


def serial_train(problem: TrainingProblem, record: Sequence[int] = ()) -> SerialTraining:
    """Plain serial training on level 0 (the reference MGRIT must reproduce)."""
    want = set(record)
    u = problem.initial_state()
    states = {0: u.clone()} if 0 in want else {}
    losses = []
    t = time.perf_counter()
    for i in range(problem.nt):
        u, loss = problem.step_with_loss(u, i, 0)
        losses.append(loss)
        if i + 1 in want:
            states[i + 1] = u.clone()
    return SerialTraining(u, losses, states, time.perf_counter() - t)


def curve_points(steps: int, n: int = 200) -> list[int]:
    """About ``n`` fine indices from 0 to N (both included) where loss curves are sampled."""
    if n <= 1 or steps <= n:
        return list(range(steps + 1))
    return sorted({round(k * steps / n) for k in range(n + 1)})


@dataclass
class Verification:
    """MGRIT against serial training at the same sampled points."""

    max_weight_diff: float  # max |w_mgrit - w_serial| at w_N
    max_weight_diff_curve: float  # the same, over all sampled points
    points: list[int]
    loss_mgrit: list[float]
    loss_serial: list[float]
    serial_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_weight_diff_vs_serial": self.max_weight_diff,
            "max_weight_diff_sampled_points": self.max_weight_diff_curve,
            "curve_points": self.points,
            "loss_mgrit": self.loss_mgrit,
            "loss_serial": self.loss_serial,
            "serial_seconds": self.serial_seconds,
        }


def _all_gather(obj: Any, group: Any) -> list[Any]:
    """Every rank's ``obj`` over ``group`` (``"world"``, a process group or a ``Comm``),
    through the floor's communicator (a peer that died or hung is a typed error)."""
    return make_comm(group).all_gather_object(obj, "the verification losses")


def verify(
    problem: TrainingProblem,
    result: MGRITResult,
    *,
    points: Sequence[int] | None = None,
    serial: SerialTraining | None = None,
    group: Any = None,
) -> Verification:
    """Compare an MGRIT solution with serial training (run here unless ``serial`` is given).

    With a process group, every rank evaluates the loss at its own points; serial
    training runs on every rank (it is the sequential reference, so it cannot be split),
    and all ranks get the same numbers.
    """
    pts = list(points) if points is not None else curve_points(problem.nt)
    if serial is None:
        serial = serial_train(problem, record=pts)
    missing = [p for p in pts if p not in serial.states]
    if missing:
        raise ValueError(f"serial training did not record points {missing[:5]}...")
    mine = {}
    owned = result.points
    for p in pts:
        if p in owned:
            u = result.u[p - owned.start]
            diff = float((problem.weights(u) - problem.weights(serial.states[p])).abs().max())
            mine[p] = (problem.loss_at(u, p), diff)
    if group is not None:
        merged: dict[int, tuple[float, float]] = {}
        for part in _all_gather(mine, group):
            merged.update(part)
        mine = merged
    final_diff = float((problem.weights(result.final) - problem.weights(serial.final)).abs().max())
    return Verification(
        max_weight_diff=final_diff,
        max_weight_diff_curve=max(d for _, d in mine.values()),
        points=pts,
        loss_mgrit=[mine[p][0] for p in pts],
        loss_serial=[problem.loss_at(serial.states[p], p) for p in pts],
        serial_seconds=serial.seconds,
    )


@dataclass
class TrainMGRITResult:
    """What :func:`train_mgrit` returns."""

    model: nn.Module  # a copy of the input model holding the MGRIT weights w_N
    weights: torch.Tensor  # w_N (flat; without the momentum buffer)
    history: MGRITResult  # the solver's result (residuals, timings, this rank's points)
    problem: TrainingProblem
    verification: Verification | None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        return self.history.iterations

    @property
    def residuals(self) -> list[float]:
        return self.history.residuals

    @property
    def converged(self) -> bool:
        return self.history.converged

    @property
    def max_weight_diff_vs_serial(self) -> float | None:
        return None if self.verification is None else self.verification.max_weight_diff

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        out: dict[str, Any] = {
            "iterations": self.iterations,
            "converged": self.converged,
            "residuals": list(self.residuals),
            "max_weight_diff_vs_serial": self.max_weight_diff_vs_serial,
            "settings": self.settings,
            "mgrit": self.history.to_dict(),
        }
        if self.verification is not None:
            out.update(self.verification.to_dict())
        return out


def train_mgrit(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    steps: int | None = None,
    *,
    config: TrainingConfig | None = None,
    group: Any = None,
    verify_serial: bool = True,
    curve_samples: int = 200,
    checkpoint: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    callback: Callable[[int, float], None] | None = None,
    progress: bool = False,
    timeout: float = 300.0,
    **settings: Any,
) -> TrainMGRITResult:
    """Train ``model`` for ``steps`` optimizer steps by MGRIT instead of step after step.

    The training is a :class:`TrainingConfig` (``config``), or its fields as keywords
    (``lr=...``, ``solver=...``; they override ``config``'s). Defaults are the paper's:
    coarsening factor 2, FCF relaxation, coarsening down to <= 10 points, tolerance
    ``1e-9 sqrt(N)`` on the residual 2-norm, at most 50 iterations. ``group`` spreads the
    time slabs over a ``torch.distributed`` group (``"world"`` for the default group).
    With ``verify_serial`` the result holds ``max |w_mgrit - w_serial|`` and both loss
    curves. Only trainable parameters are trained (frozen ones keep their values, in
    MGRIT and in the serial check). ``checkpoint``/``resume`` continue only the same
    training (model, initial weights, data, loss, training settings; see
    :meth:`TrainingProblem.fingerprint`), on any number of processes; another run's
    checkpoint is a :class:`torchpint.core.CheckpointMismatchError`. Raises ValueError
    for non-finite data or initial weights before any step, and
    :class:`torchpint.core.DivergenceError` (naming the coarse learning rate as the likely
    cause) when MGRIT diverges.
    """
    cfg = TrainingConfig.build(config, steps=steps, **settings)
    problem = TrainingProblem(model, loss_fn, data, config=cfg)
    mg = MGRIT(problem, group=group, timeout=timeout, callback=callback, progress=progress,
               **cfg.mgrit_options())
    res = mg.solve(checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)
    ver = None
    if verify_serial:
        ver = verify(problem, res, points=curve_points(cfg.steps, curve_samples),
                     group=None if group is None else mg.comm)  # the solve's timeout
    trained = problem.load_into(copy.deepcopy(model), res.final)
    settings = {
        **cfg.to_dict(),
        "lr_per_level": [problem.lr_of(l) for l in range(mg.grid.num_levels)],
        "levels": mg.grid.num_levels, "engine": type(problem.engine).__name__,
        "n_weights": problem.n_weights, "processes": mg.comm.size,
    }
    w_final = problem.weights(res.final).clone()
    return TrainMGRITResult(trained, w_final, res, problem, ver, settings)
