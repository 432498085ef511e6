"""Training as a time-stepping problem: ``w_{i+1} = Phi^level_i(w_i)`` is one optimizer step.

The state is the flat vector of the model's trainable parameters (``requires_grad=True``;
frozen ones are constants of the step and never move), followed by the momentum buffer
for momentum SGD. ``step(w, i, level)`` takes one (momentum) gradient-descent step on the
data of step ``i`` of ``level`` with that level's learning rate. MGRIT over these steps
converges to the weights of ordinary serial training (Schroder 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from torchpint.common.seeds import mix_seed
from torchpint.core.problem import Problem, callable_name
from torchpint.runtime.checkpoint import digest_json, tensor_digest
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

    ``momentum > 0`` appends the momentum buffer ``v`` (0 at start) to the state. Only
    trainable parameters are trained; frozen ones (``requires_grad=False``) keep their
    values (the NumPy fast engine is then not used). Non-finite data or initial weights are
    refused before any step.
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
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"data has {len(x)} inputs but {len(y)} targets")
        self.lr_of = make_lr_rule(cfg.lr, cfg.lr_rule, growth=cfg.lr_growth, lr_max=cfg.lr_max)
        self.lr = float(cfg.lr)
        self.data_rule = DataRule(cfg.data_rule, len(x), cfg.batch_size, seed)
        self.momentum, self.weight_decay, self.seed = float(momentum), float(weight_decay), seed
        self.dtype = dtype

        named = list(model.named_parameters())
        trainable = [(n, p) for n, p in named if p.requires_grad]
        frozen = [n for n, p in named if not p.requires_grad]
        if not trainable:
            raise ValueError(
                f"the model ({type(model).__name__}) has no trainable parameters"
                + (f" (all {len(frozen)} are frozen: requires_grad=False)" if frozen else "")
                + "; there is nothing to train"
            )
        for n, p in named:
            bad = int((~torch.isfinite(p.detach())).sum()) if p.is_floating_point() else 0
            if bad:
                raise ValueError(
                    f"the model's initial weights are not finite: parameter {n!r} has {bad} "
                    f"NaN or inf entries of {p.numel()}"
                )
        self.param_names = [n for n, _ in trainable]

        def cast(t: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t).detach()
            return t.to(dtype) if t.is_floating_point() else t

        xt, yt = cast(x), cast(y)
        for name, what, t in (("X", "inputs", xt), ("Y", "targets", yt)):
            if t.is_floating_point() or t.is_complex():
                bad = int((~torch.isfinite(t)).sum())
                if bad:
                    raise ValueError(
                        f"the training data is not finite: {name} (the {what}) has {bad} NaN "
                        f"or inf entries of {t.numel()} (as {str(dtype).removeprefix('torch.')}"
                        "); clean or rescale the data before training"
                    )

        fast = cfg.fast
        if fast and frozen:
            raise ValueError(
                f"fast=True trains every parameter, but {len(frozen)} are frozen "
                f"(requires_grad=False: {', '.join(frozen[:5])}"
                f"{', ...' if len(frozen) > 5 else ''}); use fast=None or fast=False to "
                "train the others by autograd"
            )
        engine = None if fast is False or frozen else SigmoidMLPEngine.from_model(model, loss_fn)
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

        self._data = (xt, yt)  # as trained on, for the fingerprint's digests
        self._x, self._y = xt, yt
        if self._numpy:
            self._x = np.ascontiguousarray(self._x.cpu().numpy())
            self._y = np.ascontiguousarray(self._y.cpu().numpy())
            if self._y.ndim == 1:
                self._y = self._y[:, None]
        self.n_weights = engine.numel
        w0 = parameters_to_vector([p for _, p in trainable]).detach().to(dtype).clone()
        if momentum > 0:
            w0 = torch.cat((w0, torch.zeros_like(w0)))
        self._w0 = w0.cpu() if self._numpy else w0
        self.template = model
        self.loss_fn = loss_fn
        self._layout = digest_json({
            "repr": repr(model),
            "parameters": [[n, list(p.shape), str(p.dtype), p.requires_grad] for n, p in named],
            "buffers": [[n, list(b.shape), str(b.dtype)] for n, b in model.named_buffers()],
        })
        self._digests: dict[str, str] | None = None

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
        """Copy the weights of state ``u`` into ``model``'s trainable parameters (in their
        own dtype and device); frozen parameters are left as they are."""
        named = dict(model.named_parameters())
        missing = [n for n in self.param_names if n not in named]
        if missing:
            raise ValueError(f"model has no parameter(s) {missing[:5]}: not the trained model")
        params = [named[n] for n in self.param_names]
        p = params[0]
        vector_to_parameters(self.weights(u).to(dtype=p.dtype, device=p.device), params)
        return model

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this training (checked when resuming a checkpoint).

        The training settings that define the steps (learning-rate rule, data rule, batch
        size, momentum, weight decay, seed, dtype), the engine, the loss, digests of the
        data X and Y, of the model's layout (its ``repr``, parameter names, shapes and
        which are frozen) and of its constants (frozen parameters and buffers). The
        initial weights are u_0, which the solver digests. A callable learning-rate rule or
        loss is known by its name only.
        """
        cfg = self.config
        if self._digests is None:
            consts: list[torch.Tensor] = []
            if isinstance(self.engine, AutogradEngine):
                m = self.engine.model
                consts = [p for p in m.parameters() if not p.requires_grad] + list(m.buffers())
            self._digests = {
                "X": tensor_digest(self._data[0]), "Y": tensor_digest(self._data[1]),
                "constants": digest_json([tensor_digest(t) for t in consts]),
            }
        loss = callable_name(self.loss_fn)
        reduction = getattr(self.loss_fn, "reduction", None)
        if isinstance(reduction, str):
            loss += f"(reduction={reduction})"
        return {
            **super().fingerprint(),
            "training": {
                "lr": cfg.lr,
                "lr_rule": cfg.lr_rule if isinstance(cfg.lr_rule, str)
                else callable_name(cfg.lr_rule),
                "lr_growth": cfg.lr_growth,
                "lr_max": None if math.isinf(cfg.lr_max) else cfg.lr_max,
                "data_rule": cfg.data_rule, "batch_size": cfg.batch_size,
                "momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "seed": cfg.seed,
                "dtype": str(cfg.dtype).removeprefix("torch."),
            },
            "engine": type(self.engine).__name__,
            "loss": loss,
            "model": self._layout,
            "constants": self._digests["constants"],
            "data": {"X": self._digests["X"], "Y": self._digests["Y"]},
        }
