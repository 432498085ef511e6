"""The GPT of torchpint.models.gpt: shapes, causality, and the block as a step of size h."""

from __future__ import annotations

import pytest
import torch

from torchpint.layerparallel.problems import takes_step_size
from torchpint.models import GPTBlock, gpt

pytestmark = pytest.mark.usefixtures("one_thread")

V = 13


def _model(**kw: object) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return gpt(V, blocks=2, width=16, heads=4, seq_len=12, **kw).double().eval()


def test_shapes_and_layout():
    m = _model()
    x = torch.randint(V, (3, 12))
    assert m(x).shape == (3, 12, V)
    assert m(x[:, :5]).shape == (3, 5, V)  # shorter sequences too
    assert [name for name, _ in m.named_children()] == ["pre", "body", "post"]
    assert m.pre(x).shape == (3, 12, 16)  # the state of the steps: (batch, sequence, width)
    with pytest.raises(ValueError, match="longer than"):
        m(torch.randint(V, (1, 13)))
    with pytest.raises(ValueError, match="multiple of heads"):
        GPTBlock(10, 4)


def test_causal_a_later_token_leaves_earlier_outputs_alone():
    m = _model()
    x = torch.randint(V, (2, 12), generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % V
    a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-13)
    assert (a[:, 7:] - b[:, 7:]).abs().amax() > 1e-6


def test_the_block_is_a_step_of_size_h():
    torch.manual_seed(0)
    block = GPTBlock(8, 2).double()
    assert takes_step_size(block)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(block(x, 0.0), x, rtol=0, atol=0)
    attn = block.attn(block.ln1(x))
    mid = x + 0.3 * attn
    torch.testing.assert_close(block(x, 0.3), mid + 0.3 * block.mlp(block.ln2(mid)))
    torch.testing.assert_close(block(x), block(x, 1.0), rtol=0, atol=0)  # the usual block


def test_dropout_only_when_asked():
    assert not any(isinstance(m, torch.nn.Dropout) for m in _model().modules())
    m = _model(dropout=0.2).train()
    assert any(isinstance(m, torch.nn.Dropout) for m in m.modules())
    x = torch.randint(V, (2, 12))
    assert not torch.equal(m(x), m(x))
    m.eval()
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
