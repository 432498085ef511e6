"""A small decoder-only GPT, laid out for layer-parallel training.

``GPTEmbedding`` (token and position embeddings) maps ``(B, T)`` ids to a ``(B, T, C)``
state; each :class:`GPTBlock` is a pre-norm transformer block written as one step of size
``h``, ``x + h attn(ln1(x))`` then ``+ h mlp(ln2(x))`` (``h = 1``: the usual block);
``GPTHead`` (final norm, linear) gives ``(B, T, V)`` logits. :func:`gpt` puts them in an
``nn.Sequential(pre=, body=, post=)``; ``torchpint.layerparallel.gpt_layer_parallel``
solves the blocks by MGRIT. Attention is causal: position ``t`` sees positions ``<= t``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def _check(width: int, heads: int, dropout: float) -> None:
    if width < 1 or heads < 1 or width % heads:
        raise ValueError(f"width {width} must be a positive multiple of heads {heads}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def _dropout(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or nothing for ``p = 0`` (so a network without dropout holds no
    random module and layer-parallel training keys no generator for it)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position attends to itself and earlier ones."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        _check(width, heads, dropout)
        self.heads, self.p = heads, float(dropout)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.drop = _dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.p if self.training else 0.0)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class GPTBlock(nn.Module):
    """A pre-norm transformer block as one step of size ``h``: both residual branches,
    attention then MLP, scaled by ``h``."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width), _dropout(dropout))

    def forward(self, x: torch.Tensor, h: float = 1.0) -> torch.Tensor:
        x = x + h * self.attn(self.ln1(x))
        return x + h * self.mlp(self.ln2(x))


class GPTEmbedding(nn.Module):
    """Token plus position embeddings of ``(B, T)`` ids, ``T <= seq_len``: ``(B, T, C)``."""

    def __init__(self, vocab_size: int, seq_len: int, width: int, dropout: float = 0.0
                 ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Embedding(seq_len, width)
        self.drop = _dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[-1]
        if t > self.positions.num_embeddings:
            raise ValueError(f"a sequence of {t} tokens is longer than the model's "
                             f"{self.positions.num_embeddings}")
        pos = torch.arange(t, device=ids.device)
        return self.drop(self.tokens(ids) + self.positions(pos))


class GPTHead(nn.Module):
    """The final layer norm and the linear map to the vocabulary's logits."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.ln(x))


def gpt_init(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2's initialisation: linear and embedding weights ``normal(0, std)``, biases 0
    (layer norms keep weight 1, bias 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def gpt_parts(vocab_size: int, blocks: int = 4, width: int = 64, heads: int = 4,
              seq_len: int = 64, dropout: float = 0.0
              ) -> tuple[GPTEmbedding, list[GPTBlock], GPTHead]:
    """``(embedding, blocks, head)``, initialised in that order (:func:`gpt_init`)."""
    _check(width, heads, dropout)
    if min(vocab_size, blocks, seq_len) < 1:
        raise ValueError("vocab_size, blocks and seq_len must be >= 1")
    embed = GPTEmbedding(vocab_size, seq_len, width, dropout)
    body = [GPTBlock(width, heads, dropout) for _ in range(blocks)]
    head = GPTHead(width, vocab_size)
    for part in (embed, *body, head):
        gpt_init(part)
    return embed, body, head


def gpt(vocab_size: int, blocks: int = 4, width: int = 64, heads: int = 4,
        seq_len: int = 64, dropout: float = 0.0) -> nn.Sequential:
    """The GPT as ``nn.Sequential(pre=embedding, body=blocks, post=head)``, each block a
    step of size 1 (the usual transformer); ``(B, T)`` ids to ``(B, T, V)`` logits."""
    embed, body, head = gpt_parts(vocab_size, blocks, width, heads, seq_len, dropout)
    return nn.Sequential(OrderedDict(pre=embed, body=nn.Sequential(*body), post=head))
