"""Cutting a network into P, a stack of blocks, and Q; balanced cut points over the blocks.

A network is seen as ``Q o block_M o ... o block_1 o P``. The blocks are the units a
parareal chunk is made of; chunk ``j`` is ``blocks[cuts[j-1]:cuts[j]]``. Recognised layouts:

- torchpint models: ``nn.Sequential`` with children ``pre``, ``body``, ``post``;
- torchvision-style ResNets: ``conv1 bn1 relu maxpool layer1..layer4 avgpool fc``;
- torchvision-style VGGs: ``features`` (a new block at every conv), ``avgpool``, ``classifier``;
- any other ``nn.Sequential``: its children are the blocks; Q starts at the first global
  pooling / flatten / linear / dropout child after the last convolution (none for MLPs).

A container is cut into its children only when its forward is ``nn.Sequential.forward``
(the children applied one after another) and no forward hook changes that: a subclass that
overrides ``forward`` (e.g. a skip around its children) is refused, as cutting it would
change the network's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

_HOW_TO_SPLIT = (
    "Give torchpint an nn.Sequential of blocks (optionally with three children named "
    "pre, body, post), choose P and Q with pre=/post= (a module, or a number of leading/"
    "trailing blocks), and cut points with cut_points=[i_1, ..., i_{N-1}] (the block "
    "indices where chunks 2..N start)."
)


@dataclass
class Decomposition:
    """P, the blocks the chunks are cut from, and Q."""

    pre: nn.Module
    blocks: list[nn.Module]
    post: nn.Module


def _is_plain_sequential(m: nn.Module) -> bool:
    """Whether ``m`` computes the composition of its children in order: an
    ``nn.Sequential`` whose forward is ``nn.Sequential.forward``, without forward hooks."""
    return (
        isinstance(m, nn.Sequential)
        and type(m).forward is nn.Sequential.forward
        and not m._forward_hooks
        and not m._forward_pre_hooks
    )


def _check_chain(m: nn.Module, where: str) -> None:
    """Refuse cutting ``m`` (named ``where``) into its children unless it is a plain chain."""
    if not isinstance(m, nn.Sequential) or _is_plain_sequential(m):
        return
    if type(m).forward is not nn.Sequential.forward:
        why = (
            f"{type(m).__name__} overrides forward, so its output need not be its children "
            "applied one after another (e.g. a skip connection around them)"
        )
    else:
        why = f"{type(m).__name__} has forward hooks, which cutting it into its children would drop"
    raise ValueError(
        f"torchpint cannot split {where}: {why}; cutting it into its children would change "
        "the network's output. Give torchpint a plain nn.Sequential of blocks (no forward "
        "of its own) whose composition is the model, e.g. nn.Sequential(OrderedDict(pre=P, "
        "body=nn.Sequential(*blocks), post=Q)); choose P and Q with pre=/post= (modules, or "
        "numbers of leading/trailing blocks)."
    )


def _children_of(m: nn.Module, where: str) -> list[nn.Module]:
    """The children of a plain ``nn.Sequential`` as blocks; any other module is one block."""
    _check_chain(m, where)
    return list(m) if isinstance(m, nn.Sequential) else [m]


def _has_conv(m: nn.Module) -> bool:
    return any(isinstance(s, nn.modules.conv._ConvNd) for s in m.modules())


def _seq(mods: Sequence[nn.Module]) -> nn.Module:
    """``nn.Sequential`` of ``mods``, or ``nn.Identity`` when empty, or the module itself."""
    mods = list(mods)
    if not mods:
        return nn.Identity()
    if len(mods) == 1:
        return mods[0]
    return nn.Sequential(*mods)


def _auto_decompose(model: nn.Module) -> Decomposition:
    names = dict(model.named_children())
    what = f"a {type(model).__name__}"
    if isinstance(model, nn.Sequential) and set(names) == {"pre", "body", "post"}:
        _check_chain(model, what)
        blocks = _children_of(names["body"], f"its body ({type(names['body']).__name__})")
        return Decomposition(names["pre"], blocks, names["post"])
    layers = [f"layer{i}" for i in range(1, 5) if f"layer{i}" in names]
    if {"conv1", "fc"} <= set(names) and layers:
        stem = [names[n] for n in ("conv1", "bn1", "relu", "maxpool") if n in names]
        blocks: list[nn.Module] = []
        for n in layers:
            blocks.extend(_children_of(names[n], f"its {n} ({type(names[n]).__name__})"))
        head = [names["avgpool"]] if "avgpool" in names else [nn.AdaptiveAvgPool2d(1)]
        return Decomposition(_seq(stem), blocks, nn.Sequential(*head, nn.Flatten(), names["fc"]))
    if (
        "features" in names
        and "classifier" in names
        and isinstance(names["features"], nn.Sequential)
    ):
        features = names["features"]
        _check_chain(features, f"its features ({type(features).__name__})")
        units: list[list[nn.Module]] = []
        for m in features:
            if isinstance(m, nn.modules.conv._ConvNd) or not units:
                units.append([])
            units[-1].append(m)
        head = [names["avgpool"]] if "avgpool" in names else []
        post = nn.Sequential(*head, nn.Flatten(), names["classifier"])
        return Decomposition(_seq(units[0]), [_seq(u) for u in units[1:]], post)
    if isinstance(model, nn.Sequential):
        _check_chain(model, what)
        children = list(model)
        last_conv = max((i for i, m in enumerate(children) if _has_conv(m)), default=None)
        if last_conv is None:
            return Decomposition(nn.Identity(), children, nn.Identity())
        head = (nn.Flatten, nn.Linear, nn.Dropout, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
        start = next(
            (i for i in range(last_conv + 1, len(children)) if isinstance(children[i], head)),
            len(children),
        )
        return Decomposition(nn.Identity(), children[:start], _seq(children[start:]))
    raise ValueError(
        f"torchpint cannot split a {type(model).__name__}: it is not an nn.Sequential and "
        "has no torchvision-style layout (conv1/bn1/relu/maxpool, layer1..layer4, "
        "avgpool/fc; or features/avgpool/classifier). " + _HOW_TO_SPLIT
    )


def decompose(
    model: nn.Module,
    pre: nn.Module | int | None = None,
    post: nn.Module | int | None = None,
) -> Decomposition:
    """Find P, the blocks and Q of ``model``.

    ``pre`` / ``post``: ``None`` keeps the detected P / Q; a module replaces it; an int
    ``k`` moves the first / last ``k`` blocks into P / Q (appended to the detected one).
    """
    d = _auto_decompose(model)
    blocks = list(d.blocks)
    p, q = d.pre, d.post
    if isinstance(pre, bool) or isinstance(post, bool):
        raise TypeError("pre/post must be a module, an int or None")
    if isinstance(pre, int):
        if not 0 <= pre <= len(blocks):
            raise ValueError(f"pre={pre}: the model has {len(blocks)} blocks")
        p = _seq([m for m in (p,) if not isinstance(m, nn.Identity)] + blocks[:pre])
        blocks = blocks[pre:]
    elif isinstance(pre, nn.Module):
        p = pre
    elif pre is not None:
        raise TypeError(f"pre must be a module, an int or None, got {type(pre).__name__}")
    if isinstance(post, int):
        if not 0 <= post <= len(blocks):
            raise ValueError(f"post={post}: {len(blocks)} blocks are left after P")
        tail = blocks[len(blocks) - post :]
        q = _seq(tail + [m for m in (q,) if not isinstance(m, nn.Identity)])
        blocks = blocks[: len(blocks) - post]
    elif isinstance(post, nn.Module):
        q = post
    elif post is not None:
        raise TypeError(f"post must be a module, an int or None, got {type(post).__name__}")
    if not blocks:
        raise ValueError(
            f"no splittable blocks left in {type(model).__name__} after P and Q. " + _HOW_TO_SPLIT
        )
    return Decomposition(p, blocks, q)


def infer_example_input(model: nn.Module) -> torch.Tensor:
    """A deterministic sample batch for shape inference, from the model's first layer.

    2D convs get ``(2, C, 32, 32)``, linear layers ``(2, in_features)``. Seeded, so every
    rank of a distributed run builds the same thing.
    """
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        p = next(m.parameters(recurse=False), None)
        kw = {"dtype": p.dtype} if p is not None else {}
        if isinstance(m, nn.Conv2d):
            x = torch.randn(2, m.in_channels, 32, 32, generator=gen, **kw)
            return x.to(p.device) if p is not None else x
        if isinstance(m, nn.Linear):
            x = torch.randn(2, m.in_features, generator=gen, **kw)
            return x.to(p.device) if p is not None else x
        if isinstance(m, nn.modules.conv._ConvNd):
            break
    raise ValueError(
        f"cannot guess an input for {type(model).__name__}; pass example_input=<a sample "
        "batch> (used for shapes and cost measurement)"
    )


def balanced_cuts(costs: Sequence[float], chunks: int) -> list[int]:
    """Cut points splitting ``costs`` into ``chunks`` contiguous groups with the smallest
    largest group (the parallel step waits for the slowest chunk)."""
    m = len(costs)
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    _check_enough_blocks(chunks, m)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[p][i]: smallest max-group cost of the first i blocks in p groups
    best = [[inf] * (m + 1) for _ in range(chunks + 1)]
    arg = [[0] * (m + 1) for _ in range(chunks + 1)]
    best[0][0] = 0.0
    for p in range(1, chunks + 1):
        for i in range(p, m - (chunks - p) + 1):
            for s in range(p - 1, i):
                v = max(best[p - 1][s], prefix[i] - prefix[s])
                if v < best[p][i]:
                    best[p][i], arg[p][i] = v, s
    cuts, i = [], m
    for p in range(chunks, 0, -1):
        i = arg[p][i]
        cuts.append(i)
    return sorted(cuts)[1:]


def _check_enough_blocks(chunks: int, n_blocks: int) -> None:
    if chunks > n_blocks:
        raise ValueError(
            f"cannot split into {chunks} chunks: the body has only {n_blocks} splittable "
            f"blocks; use chunks <= {n_blocks}"
        )


def check_cuts(cut_points: Sequence[int], n_blocks: int, chunks: int) -> list[int]:
    """Validate explicit cut points: ``chunks - 1`` increasing indices in ``1..n_blocks-1``."""
    cuts = [int(c) for c in cut_points]
    _check_enough_blocks(chunks, n_blocks)
    if len(cuts) != chunks - 1:
        raise ValueError(
            f"{chunks} chunks need {chunks - 1} cut points (block indices where chunks 2..N "
            f"start), got {len(cuts)}: {cuts}"
        )
    prev = 0
    for c in cuts:
        if not prev < c < n_blocks:
            raise ValueError(
                f"cut points must increase strictly within 1..{n_blocks - 1} "
                f"(the body has {n_blocks} blocks), got {cuts}"
            )
        prev = c
    return cuts
