"""fit and evaluate on a next-token model: a (B, T, V) output against (B, T) targets is
scored per token (mean cross entropy per token, next-token accuracy)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchpint.trainer import FitConfig, evaluate, fit

pytestmark = pytest.mark.usefixtures("one_thread")

V, T = 5, 6


class _Bigram(nn.Module):
    """Logits of the next token from the current one: ``(B, T)`` ids to ``(B, T, V)``."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(V, V)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table(x)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(V, (40, T), generator=torch.Generator().manual_seed(0))
    return x, (x + 1) % V  # the next token follows from this one


def test_evaluate_scores_every_token():
    torch.manual_seed(0)
    model, (x, y) = _Bigram(), _data()
    loss, acc = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=16))
    with torch.no_grad():
        out = model(x)
    want = F.cross_entropy(out.reshape(-1, V), y.reshape(-1))
    assert loss == pytest.approx(float(want), rel=1e-6)
    assert acc == pytest.approx(100.0 * float((out.argmax(-1) == y).float().mean()))


def test_fit_learns_the_next_token():
    torch.manual_seed(0)
    model, (x, y) = _Bigram(), _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    res = fit(model, loader, loader, FitConfig(epochs=3, lr=2.0, momentum=0.5),
              progress=False, log=None)
    assert res.history[-1].test_loss < res.history[0].train_loss
    assert res.test_accuracy == 100.0
