"""Pre-activation bottleneck ResNet for CIFAR (He et al., "Identity Mappings", 2016).

Depth ``9n + 2``: a 3x3 stem conv, three stages of ``n`` bottleneck blocks (1x1, 3x3, 1x1;
output channels ``4 width``, ``8 width``, ``16 width``; stride 2 at the start of stages 2
and 3), then BN-ReLU, global average pooling and a linear classifier. ResNet-164 is
``n = 18``, ResNet-1001 is ``n = 111``. Laid out as ``pre`` / ``body`` / ``post``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from torchpint.models.init import cifar_init

_EXPANSION = 4


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1, plus the shortcut.

    When the shape changes the shortcut is a strided 1x1 conv of the pre-activated input.

    Args:
        cin, mid: input channels and the channels of the inner 3x3 conv.
        stride: of the 3x3 conv and the shortcut (an int or a pair).
        cout: output channels (default ``4 mid``).
        norm: batch norm before each ReLU; ``False`` leaves it out (an identity).
        size: resample the output and the shortcut to this spatial size before adding
            them (adaptive average pooling), for sizes a stride cannot reach.
    """

    def __init__(
        self,
        cin: int,
        mid: int,
        stride: int | tuple[int, int] = 1,
        *,
        cout: int | None = None,
        norm: bool = True,
        size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        cout = mid * _EXPANSION if cout is None else cout
        bn = nn.BatchNorm2d if norm else (lambda c: nn.Identity())
        self.bn1 = bn(cin)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = bn(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn3 = bn(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut: nn.Module | None = None
        if self.conv2.stride != (1, 1) or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        self.resize = nn.AdaptiveAvgPool2d(size) if size is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        if self.resize is not None:
            out, skip = self.resize(out), self.resize(skip)
        return out + skip


def preact_resnet(
    depth: int = 1001, num_classes: int = 10, in_channels: int = 3, width: int = 16
) -> nn.Sequential:
    """Pre-activation bottleneck ResNet of depth ``9n + 2`` (n >= 1) with 3 stages.

    ``width`` is the stem's channels (16 in the paper). Returns
    ``nn.Sequential(pre=..., body=..., post=...)``; ``body`` holds the ``3n`` blocks.
    """
    if not isinstance(depth, int) or depth < 11 or (depth - 2) % 9 != 0:
        raise ValueError(
            f"pre-activation bottleneck ResNet depth must be 9n+2 with n >= 1 "
            f"(11, 20, 29, ..., 164, ..., 1001), got {depth!r}"
        )
    if width < 1:
        raise ValueError(f"width must be a positive number of channels, got {width}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError("num_classes and in_channels must be positive")
    n = (depth - 2) // 9
    pre = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
    blocks: list[nn.Module] = []
    cin = width
    for stage, mid in enumerate((width, 2 * width, 4 * width)):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(PreActBottleneck(cin, mid, stride))
            cin = mid * _EXPANSION
    post = nn.Sequential(
        nn.BatchNorm2d(cin),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(cin, num_classes),
    )
    model = nn.Sequential(OrderedDict(pre=pre, body=nn.Sequential(*blocks), post=post))
    cifar_init(model)
    return model
