"""Small double-precision models and a batch for the parareal tests."""

import pytest
import torch
from torch import nn

from torchpint.models import preact_resnet, vgg16


@pytest.fixture
def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return preact_resnet(depth=29, num_classes=4, width=2).double()


@pytest.fixture
def small_vgg() -> nn.Module:
    torch.manual_seed(0)
    return vgg16(num_classes=4, width=2).double()


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)).double()
