"""Loss-and-gradient engines: ``loss_grad(w, x, y, key) -> (loss, grad)`` on a flat vector.

Two engines share one contract:

- :class:`SigmoidMLPEngine`: a hand-written forward/backward in NumPy for plain MLPs
  (``nn.Sequential`` of ``nn.Linear`` each optionally followed by ``nn.Sigmoid``) under
  the half sum-of-squares or MSE loss. The paper's networks are tiny, where PyTorch's
  per-op and autograd overhead dominates a step; this engine avoids it (the measured
  ratio is in docs/training-mgrit.md). It is tested against autograd.
- :class:`AutogradEngine`: any ``nn.Module`` and loss through ``torch.func.functional_call``
  and ``torch.autograd.grad``. Dropout is made deterministic by seeding the RNG from the
  step's key; modules with running statistics (batch norm in training mode) are refused,
  because that state lives outside the weight vector MGRIT iterates on.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from torch import nn


class HalfSSELoss(nn.Module):
    """``1/2 ||y - yhat||^2`` summed over the batch: the paper's loss."""

    def forward(self, yhat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((yhat - y) ** 2).sum()


def sigmoid_mlp(
    sizes: Sequence[int], bias: bool = False, sigmoid_output: bool = True
) -> nn.Sequential:
    """``Linear -> Sigmoid`` layers with the given widths, e.g. ``(3, 4, 1)`` for XOR."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {sizes!r}")
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b, bias=bias))
        if sigmoid_output or k < len(sizes) - 2:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def _loss_scale(loss_fn: Any, n_out: int) -> Callable[[int], float] | None:
    """``c`` with ``loss = c * sum (yhat - y)^2`` (as a function of the batch size), or None."""
    if isinstance(loss_fn, HalfSSELoss):
        return lambda b: 0.5
    if isinstance(loss_fn, nn.MSELoss):
        if loss_fn.reduction == "sum":
            return lambda b: 1.0
        if loss_fn.reduction == "mean":
            return lambda b: 1.0 / (b * n_out)
    return None


_SMALL = 4096  # arrays below this many elements: fresh temporaries are cheaper
_TORCH_SIGMOID_MIN = 512  # from this many elements torch.sigmoid beats expit


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, in place on ``z``.

    Large arrays go through PyTorch's vectorized ``torch.sigmoid`` (zero-copy through
    ``from_numpy``), which is several times faster per element than SciPy's ``expit``;
    small ones keep ``expit``, whose per-call overhead is lower.
    """
    if z.size < _TORCH_SIGMOID_MIN:
        return expit(z, out=z)
    t = torch.from_numpy(z)
    torch.sigmoid(t, out=t)
    return z


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``a @ b``, into ``out`` when given: BLAS writes large products straight there (no
    fresh temporary); small ones take plain ``@``, where ``out=``'s overhead dominates."""
    if out is None:
        return a @ b
    if out.size < _SMALL:
        out[...] = a @ b
        return out
    return np.matmul(a, b, out=out)


class SigmoidMLPEngine:
    """NumPy forward/backward of a plain sigmoid MLP (see the module docstring)."""

    def __init__(self, layers: list[tuple[int, int, bool, bool]], scale: Callable[[int], float]):
        # layers: (out, in, has_bias, sigmoid_after)
        self.layers = []
        off = 0
        for o, i, b, s in layers:
            wsl = slice(off, off + o * i)
            off += o * i
            bsl = None
            if b:
                bsl = slice(off, off + o)
                off += o
            self.layers.append((o, i, wsl, bsl, s))
        self.numel = off
        self.scale = scale
        self.native = "numpy"
        self._width = max(o for o, *_ in layers)
        self._workspace: dict[tuple[int, int, np.dtype], list] = {}
        self._no_buffers = [(None, None, None)] * len(layers)

    @classmethod
    def from_model(cls, model: nn.Module, loss_fn: Any) -> SigmoidMLPEngine | None:
        """The engine for ``model`` and ``loss_fn`` if they fit the fast path, else None."""
        if not isinstance(model, nn.Sequential) or not len(model):
            return None
        mods = list(model)
        layers: list[tuple[int, int, bool, bool]] = []
        k = 0
        while k < len(mods):
            lin = mods[k]
            if type(lin) is not nn.Linear:
                return None
            sig = k + 1 < len(mods) and type(mods[k + 1]) is nn.Sigmoid
            layers.append((lin.out_features, lin.in_features, lin.bias is not None, sig))
            k += 2 if sig else 1
        if sum(1 for _ in model.buffers()):
            return None
        scale = _loss_scale(loss_fn, layers[-1][0])
        if scale is None:
            return None
        return cls(layers, scale)

    def _buffers(self, b: int, dtype: np.dtype) -> list[tuple[Any, Any, Any]]:
        """Per-layer arrays (activation, delta, scratch) for batch size ``b``, reused.

        Fresh temporaries the size of the adder's activations come from ``mmap`` and
        page-fault on first touch, which can cost as much as the arithmetic. Small
        networks get ``None`` (fresh arrays are cheaper there). Keyed by thread, so
        threads may share one engine.
        """
        if b * self._width < _SMALL:
            return self._no_buffers
        key = (threading.get_ident(), b, dtype)
        bufs = self._workspace.get(key)
        if bufs is None:
            bufs = [(np.empty((b, o), dtype), np.empty((b, o), dtype), np.empty((b, o), dtype))
                    for o, *_ in self.layers]
            self._workspace[key] = bufs
        return bufs

    def _forward(self, w: np.ndarray, x: np.ndarray, bufs: list) -> list[np.ndarray]:
        """The activations, input first (the others may live in ``bufs``)."""
        acts = [x]
        a = x
        for (o, i, wsl, bsl, sig), (z, _, _) in zip(self.layers, bufs, strict=True):
            a = _matmul(a, w[wsl].reshape(o, i).T, z)
            if bsl is not None:
                a += w[bsl]
            if sig:
                _sigmoid(a)
            acts.append(a)
        return acts

    def loss(self, w: np.ndarray, x: np.ndarray, y: np.ndarray, key: int = 0) -> float:
        d = self._forward(w, x, self._buffers(x.shape[0], w.dtype))[-1] - y
        return float(self.scale(x.shape[0]) * np.vdot(d, d))

    def loss_grad(
        self, w: np.ndarray, x: np.ndarray, y: np.ndarray, key: int = 0
    ) -> tuple[float, np.ndarray]:
        bufs = self._buffers(x.shape[0], w.dtype)
        acts = self._forward(w, x, bufs)
        c = self.scale(x.shape[0])
        delta = np.subtract(acts[-1], y, out=bufs[-1][1])
        loss = float(c * np.vdot(delta, delta))
        delta *= 2.0 * c
        g = np.empty(self.numel, dtype=w.dtype)
        for k in range(len(self.layers) - 1, -1, -1):
            o, i, wsl, bsl, sig = self.layers[k]
            if sig:  # delta * out * (1 - out), in that order
                out = acts[k + 1]
                delta *= out
                delta *= np.subtract(1.0, out, out=bufs[k][2])
            _matmul(delta.T, acts[k], g[wsl].reshape(o, i))
            if bsl is not None:
                np.sum(delta, axis=0, out=g[bsl])
            if k:
                delta = _matmul(delta, w[wsl].reshape(o, i), bufs[k - 1][1])
        return loss, g


_RUNNING_STATS = (nn.modules.batchnorm._NormBase,)
_DROPOUT = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


def check_deterministic(model: nn.Module) -> bool:
    """Refuse modules whose state is outside the weights; True if the model is stochastic.

    Batch norm (and instance norm) that tracks running statistics in training mode
    updates buffers on every forward pass: that state is not part of the vector MGRIT
    iterates on, so the propagator would not be a fixed function. Dropout is fine: the
    engine seeds it from ``(seed, level, i)``.
    """
    stochastic = False
    for name, mod in model.named_modules():
        if isinstance(mod, _RUNNING_STATS) and mod.training and mod.track_running_stats:
            raise ValueError(
                f"module {name or type(mod).__name__!r} ({type(mod).__name__}) updates "
                "running statistics in training mode: that state is not part of the weight "
                "vector, so an optimizer step is not a fixed function of (w, i, level) and "
                "MGRIT has no fixed point. Use track_running_stats=False (batch statistics "
                "only), GroupNorm/LayerNorm, or put the module in eval mode."
            )
        if isinstance(mod, _DROPOUT) and mod.training and getattr(mod, "p", 0) > 0:
            stochastic = True
    return stochastic


class AutogradEngine:
    """Any ``nn.Module`` + loss via ``functional_call`` and autograd (a copy of the model).

    The flat vector holds the trainable parameters only (``requires_grad=True``, in
    ``named_parameters`` order); frozen parameters and buffers are constants of the step,
    taken from the copy.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[..., torch.Tensor], dtype: torch.dtype):
        self.stochastic = check_deterministic(model)
        self.model = copy.deepcopy(model).to(dtype)
        self.loss_fn = loss_fn
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in trainable]
        self.shapes = [p.shape for _, p in trainable]
        self.sizes = [p.numel() for _, p in trainable]
        self.numel = sum(self.sizes)
        self.native = "torch"

    def _params(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(w, self.sizes)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def _run(self, w: torch.Tensor, x: Any, y: Any, key: int) -> torch.Tensor:
        if not self.stochastic:
            return self.loss_fn(torch.func.functional_call(self.model, self._params(w), (x,)), y)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key)
            return self.loss_fn(torch.func.functional_call(self.model, self._params(w), (x,)), y)

    def loss(self, w: torch.Tensor, x: Any, y: Any, key: int = 0) -> float:
        with torch.no_grad():
            return float(self._run(w, x, y, key))

    def loss_grad(
        self, w: torch.Tensor, x: Any, y: Any, key: int = 0
    ) -> tuple[float, torch.Tensor]:
        with torch.enable_grad():
            wr = w.detach().requires_grad_(True)
            loss = self._run(wr, x, y, key)
            (g,) = torch.autograd.grad(loss, wr)
        return float(loss.detach()), g
