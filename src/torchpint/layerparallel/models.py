"""Networks laid out for layer-parallel training: a convolutional ResNet and a GPT."""

from __future__ import annotations

from typing import Any

from torch import nn

from torchpint.layerparallel.module import LayerParallel
from torchpint.models.gpt import gpt_parts


def conv_resnet(
    steps: int = 32,
    channels: int = 8,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 16,
    **options: Any,
) -> LayerParallel:
    """``open`` (3x3 conv to ``channels``, ReLU), ``steps`` residual steps
    ``u + h ReLU(conv3x3(u))``, ``close`` (flatten, linear: the classifier sees where
    features are, as in TorchBraid's MNIST network); ``options`` go to
    :class:`LayerParallel` (T, levels, cfactor, relax, fwd_iterations, bwd_iterations)."""
    if min(steps, channels, in_channels, num_classes, image_size) < 1:
        raise ValueError("steps, channels, in_channels, num_classes, image_size must be >= 1")
    open_ = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU())
    layers = [nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
              for _ in range(steps)]
    close = nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size**2, num_classes))
    return LayerParallel(open_, layers, close, **options)


def gpt_layer_parallel(
    vocab_size: int,
    blocks: int = 32,
    width: int = 64,
    heads: int = 4,
    seq_len: int = 64,
    dropout: float = 0.0,
    **options: Any,
) -> LayerParallel:
    """The GPT of :mod:`torchpint.models.gpt` with its blocks solved by MGRIT: ``open`` the
    token and position embeddings, one step ``x + h attn(ln1(x))``, ``+ h mlp(ln2(x))`` per
    block (``h = T / blocks``), ``close`` the final norm and head; ``(B, T)`` ids to
    ``(B, T, V)`` logits. ``options`` go to :class:`LayerParallel`; with dropout, each
    block's masks are keyed by (batch, block), the same in every MGRIT iteration."""
    embed, body, head = gpt_parts(vocab_size, blocks, width, heads, seq_len, dropout)
    return LayerParallel(embed, body, head, **options)
