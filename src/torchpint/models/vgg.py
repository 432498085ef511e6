"""VGG-16 with batch norm, CIFAR variant (3x3 convs, five 2x2 max-pools, one linear layer).

Laid out as torchpint expects: ``pre`` (first conv block), ``body`` (the other twelve conv
blocks, each a time step of the parareal split; a max-pool belongs to the block before it)
and ``post`` (global average pooling + classifier), so it works for any input size.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from torchpint.models.init import cifar_init

# Channels of the 13 conv layers relative to the first stage; "M" = 2x2 max-pool.
_VGG16 = (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M")


def _conv_block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    """Conv3x3-BN-ReLU, followed by a 2x2 max-pool when ``pool``.

    The pool uses ``ceil_mode`` so a 1x1 map stays 1x1: small inputs (8x8, 16x16) work.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


def vgg16(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> nn.Sequential:
    """VGG-16-BN for CIFAR-like inputs; ``width`` is the first stage's channels (64 in the paper).

    Returns ``nn.Sequential(pre=..., body=..., post=...)``.
    """
    if width < 1:
        raise ValueError(f"width must be a positive number of channels, got {width}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError("num_classes and in_channels must be positive")
    blocks: list[nn.Sequential] = []
    cin = in_channels
    cfg = list(_VGG16)
    for i, item in enumerate(cfg):
        if item == "M":
            continue
        cout = int(item) * width
        pool = i + 1 < len(cfg) and cfg[i + 1] == "M"
        blocks.append(_conv_block(cin, cout, pool))
        cin = cout
    post = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(cin, num_classes),
    )
    model = nn.Sequential(OrderedDict(pre=blocks[0], body=nn.Sequential(*blocks[1:]), post=post))
    cifar_init(model, linear_std=0.01)  # small classifier weights
    return model
