"""Training as a time-stepping problem: ``w_{i+1} = Phi^level_i(w_i)`` is one optimizer step.

The state is the flat vector of the model's parameters, followed by the momentum buffer
for momentum SGD. ``step(w, i, level)`` takes one (momentum) gradient-descent step on the
data of step ``i`` of ``level`` with that level's learning rate. MGRIT over these steps
converges to the weights of ordinary serial training (Schroder 2017).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from torchpint.common.seeds import mix_seed
from torchpint.core.problem import Problem
from torchpint.training.config import TrainingConfig
from torchpint.training.engines import AutogradEngine, SigmoidMLPEngine
from torchpint.training.rules import DataRule, make_lr_rule

DIVERGENCE_HINT = (
    "the coarse-level learning rate is too large for the coarse steps to "
    "stand in for the fine ones; lower --lr-max / lr_max, use a slower growth "
    "(--lr-growth 1.25), a smaller --lr, or --lr-rule naive"
)


class TrainingProblem(Problem):
    """Optimizer steps of ``model`` on ``data`` as a problem for the MGRIT core.

    Args:
        model: the network; its current parameters are ``w_0`` (it is not modified).
        loss_fn: ``loss_fn(model(x), y) -> scalar``.
        data: ``(X, Y)`` tensors with the examples along dimension 0.
        steps, config, settings: a :class:`TrainingConfig`, or its fields as keywords
            (``steps`` and ``lr`` at least); keywords override the config's. Only the
            problem's fields matter here (the solver's are ignored).

    ``momentum > 0`` appends the momentum buffer ``v`` (0 at start) to the state.
    """

    divergence_hint = DIVERGENCE_HINT

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        data: tuple[torch.Tensor, torch.Tensor],
        steps: int | None = None,
        *,
        config: TrainingConfig | None = None,
        **settings: Any,
    ) -> None:
        cfg = TrainingConfig.build(config, steps=steps, **settings)
        self.config = cfg
        super().__init__(cfg.steps, 0.0, float(cfg.steps))
        momentum, weight_decay, seed, dtype = cfg.momentum, cfg.weight_decay, cfg.seed, cfg.dtype
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"data has {len(x)} inputs but {len(y)} targets")
        self.lr_of = make_lr_rule(cfg.lr, cfg.lr_rule, growth=cfg.lr_growth, lr_max=cfg.lr_max)
        self.lr = float(cfg.lr)
        self.data_rule = DataRule(cfg.data_rule, len(x), cfg.batch_size, seed)
        self.momentum, self.weight_decay, self.seed = float(momentum), float(weight_decay), seed
        self.dtype = dtype

        fast = cfg.fast
        engine = None if fast is False else SigmoidMLPEngine.from_model(model, loss_fn)
        if fast and engine is None:
            raise ValueError(
                "fast=True needs an nn.Sequential of nn.Linear (+ nn.Sigmoid) layers with "
                "HalfSSELoss or nn.MSELoss; use fast=None to fall back to autograd"
            )
        if engine is None:
            engine = AutogradEngine(model, loss_fn, dtype)
        elif dtype != torch.float64 and dtype != torch.float32:
            raise ValueError(f"the fast engine supports float32/float64, got {dtype}")
        self.engine: SigmoidMLPEngine | AutogradEngine = engine
        self._numpy = engine.native == "numpy"

        def cast(t: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t).detach()
            return t.to(dtype) if t.is_floating_point() else t

        self._x, self._y = cast(x), cast(y)
        if self._numpy:
            self._x = np.ascontiguousarray(self._x.cpu().numpy())
            self._y = np.ascontiguousarray(self._y.cpu().numpy())
            if self._y.ndim == 1:
                self._y = self._y[:, None]
        self.n_weights = engine.numel
        w0 = parameters_to_vector(model.parameters()).detach().to(dtype).clone()
        if momentum > 0:
            w0 = torch.cat((w0, torch.zeros_like(w0)))
        self._w0 = w0.cpu() if self._numpy else w0
        self.template = model

    # -- the contract -----------------------------------------------------------------
    def initial_state(self) -> torch.Tensor:
        return self._w0

    def batch(self, i: int, level: int = 0) -> tuple[Any, Any]:
        """The inputs and targets of step ``i`` of ``level``."""
        idx = self.data_rule.indices(i, level)
        if idx is None:
            return self._x, self._y
        if isinstance(idx, np.ndarray) and not self._numpy:
            idx = torch.from_numpy(idx).to(self._x.device)
        return self._x[idx], self._y[idx]

    def key(self, i: int, level: int) -> int:
        """The RNG key of step ``i`` of ``level`` (dropout masks)."""
        return mix_seed(self.seed, level, i)

    def step_with_loss(self, u: torch.Tensor, i: int, level: int) -> tuple[torch.Tensor, float]:
        """One optimizer step and the loss of ``u`` on the step's batch (before the step)."""
        lr = self.lr_of(level)
        x, y = self.batch(i, level)
        n = self.n_weights
        s = u.numpy() if self._numpy else u
        w = s[:n]
        loss, g = self.engine.loss_grad(w, x, y, self.key(i, level))
        if self.weight_decay:
            g = g + self.weight_decay * w
        if self.momentum:
            v = self.momentum * s[n:] + g
            out = np.empty_like(s) if self._numpy else torch.empty_like(s)
            out[n:] = v
            out[:n] = w - lr * v
        else:
            out = w - lr * g
        return (torch.from_numpy(out) if self._numpy else out), loss

    def step(self, u: torch.Tensor, i: int, level: int) -> torch.Tensor:
        return self.step_with_loss(u, i, level)[0]

    # -- helpers ----------------------------------------------------------------------
    def loss_at(self, u: torch.Tensor, i: int, level: int = 0) -> float:
        """The loss of state ``u`` on the batch of step ``i`` (the loss-curve value)."""
        x, y = self.batch(i, level)
        w = (u.numpy() if self._numpy else u)[: self.n_weights]
        return self.engine.loss(w, x, y, self.key(i, level))

    def weights(self, u: torch.Tensor) -> torch.Tensor:
        """The parameter part of a state (drops the momentum buffer)."""
        return u[: self.n_weights]

    def load_into(self, model: nn.Module, u: torch.Tensor) -> nn.Module:
        """Copy the weights of state ``u`` into ``model`` (in its own dtype and device)."""
        p = next(model.parameters())
        vector_to_parameters(self.weights(u).to(dtype=p.dtype, device=p.device), model.parameters())
        return model
