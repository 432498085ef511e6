"""Coarse networks C_j: cheap modules with the input and output shapes of fine chunk F_j.

The default is one small block with the chunk's stride and channel change. For a chunk
whose output is non-negative (it ends in a ReLU, as VGG blocks do) it is
``avgpool(stride)-conv1x1-ReLU``: a ninth of the cost of a strided ``conv3x3-ReLU`` (kind
``"conv"``), which shortens the step because C_0 sits on the critical path. For any other
chunk (a residual stream, as in pre-activation ResNets) it is one pre-activation bottleneck
block: 1x1 down to a quarter of the channels, 3x3 with the stride, 1x1 up, plus shortcut.
Chunks on flat features get one linear layer. Users may pass their own modules or a
builder. docs/train-parareal.md has the accuracy of each kind next to the original's.

No batch norm by default: each C_j is applied to two different inputs per forward pass
(the coarse sweep's lambda and the correction's y), so its running statistics average two
distributions and eval-mode accuracy collapses (docs/train-parareal.md, accuracy study).
``norm=True`` adds BN for comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from torchpint.common.modules import train_mode
from torchpint.models import PreActBottleneck
from torchpint.models.init import cifar_init

CoarseBuilder = Callable[[int, nn.Module, torch.Tensor, torch.Tensor], nn.Module]
COARSE_KINDS = ("auto", "conv", "pool", "preact")


def default_coarse(
    x: torch.Tensor, y: torch.Tensor, kind: str = "auto", norm: bool = False
) -> nn.Module:
    """A cheap module mapping tensors shaped like ``x`` to tensors shaped like ``y``.

    ``kind``: ``"pool"`` (average pool by the stride, conv1x1, ReLU), ``"conv"`` (strided
    conv3x3, ReLU), ``"preact"`` (a pre-activation bottleneck block) or ``"auto"`` (pool
    when ``y`` is non-negative, preact otherwise). For flat
    ``(B, D)`` tensors: a linear layer. ``norm=True`` adds batch norm (see the module
    docstring for why it is off by default).
    """
    if kind not in COARSE_KINDS:
        raise ValueError(f"coarse kind must be one of {COARSE_KINDS}, got {kind!r}")
    if kind == "auto":
        kind = "pool" if bool((y >= 0).all()) else "preact"
    if x.dim() == 2 and y.dim() == 2:
        layers: list[nn.Module] = [nn.Linear(x.shape[1], y.shape[1])]
        if kind in ("conv", "pool"):
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)
    if x.dim() != 4 or y.dim() != 4:
        raise ValueError(
            f"no default coarse network for a chunk mapping {tuple(x.shape)} to "
            f"{tuple(y.shape)}; pass coarse=[module per chunk] or a builder"
        )
    cin, cout = x.shape[1], y.shape[1]
    (h, w), (ho, wo) = x.shape[2:], y.shape[2:]
    stride = (max(1, round(h / ho)), max(1, round(w / wo)))
    # a 3x3 conv, padding 1, stride s maps h to floor((h - 1) / s) + 1
    exact = all((a - 1) // s + 1 == b for a, s, b in zip((h, w), stride, (ho, wo), strict=True))
    size = None if exact else (ho, wo)  # odd sizes: resample exactly at the end
    if kind == "preact":
        mid = max(1, min(cin, cout) // 4)
        mod: nn.Module = PreActBottleneck(cin, mid, stride, cout=cout, norm=norm, size=size)
    else:
        # the 3x3 conv is built for "pool" too: every kind draws the same random numbers
        core: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)]
        if kind == "pool":  # average-pool by the stride, then a 1x1 conv: ~1/9 of "conv"
            core = [nn.AvgPool2d(stride, ceil_mode=True)] if stride != (1, 1) else []
            core.append(nn.Conv2d(cin, cout, 1, bias=False))
        fix = [nn.AdaptiveAvgPool2d(size)] if size else []
        bn = [nn.BatchNorm2d(cout)] if norm else []
        mod = nn.Sequential(*core, *fix, *bn, nn.ReLU())
    cifar_init(mod)
    return mod


def check_coarse(j: int, coarse: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise a clear error when coarse network ``j`` does not map ``x``'s shape to ``y``'s."""
    try:
        with train_mode([coarse], False), torch.no_grad():
            out = coarse(x)
    except Exception as e:  # the shapes are the likely cause: say so
        raise ValueError(
            f"coarse network {j} fails on the input of fine chunk {j}, shape "
            f"{tuple(x.shape)} (the fine chunk maps it to {tuple(y.shape)}): {e}"
        ) from e
    if not isinstance(out, torch.Tensor) or out.shape != y.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"coarse network {j} does not match fine chunk {j}: on input {tuple(x.shape)} "
            f"the fine chunk gives {tuple(y.shape)} but the coarse network gives {got}"
        )


def build_coarse(
    coarse: Sequence[nn.Module] | CoarseBuilder | str | None,
    fine: Sequence[nn.Module],
    inputs: Sequence[torch.Tensor],
    outputs: Sequence[torch.Tensor],
) -> list[nn.Module]:
    """The coarse networks for the chunks ``fine``, checked against their shapes.

    ``coarse``: ``None`` / a kind string (default builder), a sequence of one module per
    chunk, or ``builder(j, fine_chunk, example_in, example_out) -> module``.
    """
    n = len(fine)
    if coarse is None or isinstance(coarse, str):
        kind = coarse or "auto"
        mods = []
        for x, y in zip(inputs, outputs, strict=True):
            mods.append(default_coarse(x, y, kind).to(device=y.device, dtype=y.dtype))
    elif isinstance(coarse, nn.Module) and not isinstance(coarse, nn.ModuleList):
        raise TypeError("coarse must be one module per chunk (a list), a builder or None")
    elif callable(coarse) and not isinstance(coarse, nn.ModuleList):
        mods = [coarse(j, fine[j], inputs[j], outputs[j]) for j in range(n)]
    else:
        mods = list(coarse)
        if len(mods) != n:
            raise ValueError(f"{n} chunks need {n} coarse networks, got {len(mods)}")
    for j, m in enumerate(mods):
        if not isinstance(m, nn.Module):
            raise TypeError(f"coarse network {j} is a {type(m).__name__}, not an nn.Module")
        check_coarse(j, m, inputs[j], outputs[j])
    return mods
