"""Models laid out for parareal splitting: ``nn.Sequential(pre=P, body=blocks, post=Q)``.

``vgg16`` (CIFAR VGG-16-BN), ``preact_resnet`` (pre-activation bottleneck ResNet, depth
9n+2, ResNet-1001 included) and ``build_model`` with named presets, small ones included
(``vgg-small``, ``resnet-small``) for CPU runs; ``gpt`` (a small decoder-only transformer
over characters, :mod:`.gpt`), built by its own function, not a preset.
"""

from __future__ import annotations

from torch import nn

from torchpint.models.gpt import GPTBlock, gpt
from torchpint.models.resnet import PreActBottleneck, preact_resnet
from torchpint.models.vgg import vgg16

# name -> (builder, default depth or None, default width)
_PRESETS: dict[str, tuple[str, int | None, int]] = {
    "vgg16": ("vgg", None, 64),
    "vgg-small": ("vgg", None, 8),
    "resnet": ("resnet", 1001, 16),
    "resnet-small": ("resnet", 29, 8),
}
MODEL_NAMES: tuple[str, ...] = tuple(_PRESETS)


def build_model(
    name: str,
    *,
    depth: int | None = None,
    width: int | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """Build a model by name; ``depth`` / ``width`` override the preset's.

    Presets: ``vgg16`` (width 64), ``vgg-small`` (VGG-16 layout, width 8), ``resnet``
    (ResNet-1001, width 16), ``resnet-small`` (ResNet-29, width 8: 9 blocks).
    """
    key = name.lower()
    if key not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    kind, default_depth, default_width = _PRESETS[key]
    w = default_width if width is None else width
    if kind == "vgg":
        if depth not in (None, 16):
            raise ValueError(f"{name} is VGG-16; depth must be 16 or None, got {depth}")
        return vgg16(num_classes=num_classes, in_channels=in_channels, width=w)
    d = default_depth if depth is None else depth
    assert d is not None
    return preact_resnet(depth=d, num_classes=num_classes, in_channels=in_channels, width=w)


__all__ = ["MODEL_NAMES", "GPTBlock", "PreActBottleneck", "build_model", "gpt", "preact_resnet",
           "vgg16"]
