"""VGG-16 and pre-activation ResNet: layout, shapes, depth validation, presets."""

import pytest
import torch
from torch import nn

from torchpint.models import MODEL_NAMES, PreActBottleneck, build_model, preact_resnet, vgg16

pytestmark = pytest.mark.usefixtures("one_thread")


def _children(m: nn.Module) -> list[str]:
    return [n for n, _ in m.named_children()]


@pytest.mark.parametrize("size", [8, 16, 32])
def test_vgg16_layout_and_any_input_size(size):
    m = vgg16(num_classes=7, in_channels=1, width=4)
    assert isinstance(m, nn.Sequential) and _children(m) == ["pre", "body", "post"]
    assert isinstance(m.body, nn.Sequential) and len(m.body) == 12  # 13 convs, 1 in pre
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16, 16, 16] + [32] * 6
    pools = [p for p in m.modules() if isinstance(p, nn.MaxPool2d)]
    assert len(pools) == 5
    assert sum(isinstance(b, nn.BatchNorm2d) for b in m.modules()) == 13
    assert m(torch.randn(2, 1, size, size)).shape == (2, 7)


def test_vgg16_paper_size():
    m = vgg16()
    n = sum(p.numel() for p in m.parameters())
    assert 14.6e6 < n < 14.8e6  # CIFAR VGG-16-BN is about 14.7M parameters


@pytest.mark.parametrize("depth", [11, 20, 29])
def test_preact_resnet_stages(depth):
    n = (depth - 2) // 9
    m = preact_resnet(depth=depth, num_classes=5, width=2)
    assert _children(m) == ["pre", "body", "post"] and len(m.body) == 3 * n
    x = torch.randn(2, 3, 16, 16)
    u = m.pre(x)
    shapes = []
    for b in m.body:
        u = b(u)
        shapes.append(tuple(u.shape[1:]))
    assert shapes[n - 1] == (8, 16, 16)
    assert shapes[2 * n - 1] == (16, 8, 8)
    assert shapes[-1] == (32, 4, 4)
    assert m(x).shape == (2, 5)


@pytest.mark.parametrize("depth", [0, 10, 12, 100, 1000, 2.0, "29"])
def test_preact_resnet_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match=r"9n\+2"):
        preact_resnet(depth=depth)


def test_resnet_1001_constructs():
    m = preact_resnet(depth=1001)
    assert len(m.body) == 333
    n = sum(p.numel() for p in m.parameters())
    assert 10.1e6 < n < 10.5e6  # the paper's ResNet-1001 has 10.2M parameters
    convs = sum(isinstance(c, nn.Conv2d) for c in m.modules())
    assert convs == 1 + 3 * 333 + 3  # stem, 3 per block, 3 projection shortcuts


def test_build_model_presets_and_overrides():
    assert {"vgg16", "resnet", "vgg-small", "resnet-small"} <= set(MODEL_NAMES)
    m = build_model("resnet-small", depth=20, width=2, num_classes=3, in_channels=1)
    assert len(m.body) == 6 and m(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    v = build_model("vgg-small", num_classes=4)
    assert v(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("alexnet")
    with pytest.raises(ValueError, match="9n\\+2"):
        build_model("resnet", depth=30)


def test_bottleneck_options():
    """Without norm the block has no batch norm; ``cout`` and ``size`` set the output."""
    b = PreActBottleneck(8, 2, (2, 2), cout=16, norm=False, size=(4, 3))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in b.modules())
    assert b(torch.randn(2, 8, 9, 9)).shape == (2, 16, 4, 3)
    assert PreActBottleneck(8, 2)(torch.randn(2, 8, 5, 5)).shape == (2, 8, 5, 5)
