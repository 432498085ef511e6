"""Splitting: layouts recognised, balanced cuts, coarse shapes, and clear errors."""

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from torchpint.parareal import balanced_cuts, decompose, default_coarse, parareal_network

pytestmark = pytest.mark.usefixtures("one_thread")


def test_balanced_cuts_minimise_the_largest_chunk():
    assert balanced_cuts([1, 1, 1, 1], 2) == [2]
    assert balanced_cuts([10, 1, 1, 1, 1, 1], 2) == [1]
    assert balanced_cuts([1, 1, 1, 1, 1, 5], 2) == [5]
    assert balanced_cuts([3, 1, 1, 1, 3, 1, 1, 1], 2) == [4]
    cuts = balanced_cuts([1, 2, 3, 4, 5, 6, 7, 8, 9], 3)
    bounds = [0, *cuts, 9]
    sums = [sum(range(bounds[i] + 1, bounds[i + 1] + 1)) for i in range(3)]
    assert max(sums) == 17  # optimum for 1..9 in 3 contiguous groups
    assert balanced_cuts([5.0], 1) == []


def test_balance_by_flops_follows_cost_not_layer_count(small_resnet, batch):
    """ResNet stages cost about the same, with 3 blocks each: cuts fall at the stages."""
    net = parareal_network(small_resnet, 3, balance="flops", example_input=batch)
    assert net.block_ranges == [(0, 3), (3, 6), (6, 9)]
    net = parareal_network(small_resnet, 2, balance="time", example_input=batch)
    assert len(net.block_ranges) == 2 and net.block_ranges[-1][1] == 9


def test_explicit_cut_points(small_vgg, batch):
    net = parareal_network(small_vgg, 3, cut_points=[2, 7], example_input=batch)
    assert net.block_ranges == [(0, 2), (2, 7), (7, 12)]
    for bad in ([7, 2], [0, 5], [5, 12], [5]):
        with pytest.raises(ValueError, match="cut point"):
            parareal_network(small_vgg, 3, cut_points=bad, example_input=batch)


def test_too_many_chunks(small_resnet, batch):
    with pytest.raises(ValueError, match="only 9 splittable blocks"):
        parareal_network(small_resnet, 10, example_input=batch)


class _TVResNet(nn.Module):
    """torchvision-style ResNet layout (flatten inside forward)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)

        def block(cin, cout, s):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, s, 1), nn.BatchNorm2d(cout), nn.ReLU())

        self.layer1 = nn.Sequential(block(4, 4, 1), block(4, 4, 1))
        self.layer2 = nn.Sequential(block(4, 8, 2), block(8, 8, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class _TVVGG(nn.Module):
    """torchvision-style VGG layout."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.mark.parametrize("cls, n_blocks", [(_TVResNet, 4), (_TVVGG, 3)])
def test_torchvision_layouts_are_exact_with_n_iterations(cls, n_blocks):
    torch.manual_seed(0)
    model = cls().double().eval()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    assert len(decompose(model).blocks) == n_blocks
    ref = model(x)
    net = parareal_network(model, 2, iterations=2, balance="flops", example_input=x).double().eval()
    torch.testing.assert_close(net(x), ref, atol=1e-10, rtol=1e-9)


def test_generic_sequential_conv_and_mlp():
    torch.manual_seed(0)
    conv = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    ).double()  # fmt: skip
    d = decompose(conv)
    assert len(d.blocks) == 6 and isinstance(d.post, nn.Sequential) and len(d.post) == 3
    x = torch.randn(2, 1, 9, 9, dtype=torch.float64)  # odd size: stride-2 chunk 9 -> 5
    net = parareal_network(conv, 3, iterations=3, balance="blocks", example_input=x).double()
    torch.testing.assert_close(net(x), conv(x), atol=1e-10, rtol=1e-9)
    mlp = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    net = parareal_network(mlp, 2)  # example input guessed from the first Linear
    assert [type(c[0]) for c in net.coarse] == [nn.Linear, nn.Linear]
    xm = torch.randn(5, 6)
    assert net(xm).shape == (5, 3)


def test_pre_and_post_overrides(small_resnet, batch):
    d = decompose(small_resnet, pre=2, post=1)
    assert len(d.blocks) == 6
    net = parareal_network(small_resnet, 2, pre=2, post=1, iterations=2, example_input=batch)
    torch.testing.assert_close(net(batch), small_resnet(batch), atol=1e-10, rtol=1e-9)
    head = nn.Identity()
    assert decompose(small_resnet, post=head).post is head


def test_model_that_cannot_be_split():
    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x)

    with pytest.raises(ValueError, match="cannot split a Opaque.*cut_points"):
        parareal_network(Opaque(), 2)


def test_example_input_needed_when_not_inferable():
    model = nn.Sequential(nn.Tanh(), nn.Sigmoid(), nn.Tanh())
    with pytest.raises(ValueError, match="example_input"):
        parareal_network(model, 2)


def test_coarse_shape_mismatch_names_chunk_and_shapes(small_resnet, batch):
    good = parareal_network(small_resnet, 3, balance="flops", example_input=batch)
    bad = copy.deepcopy(list(good.coarse))
    bad[1] = nn.Conv2d(8, 8, 1).double()  # chunk 1 maps (4, 8, 16, 16) to (4, 16, 8, 8)
    msg = r"coarse network 1 does not match fine chunk 1.*\(4, 16, 8, 8\).*\(4, 8, 16, 16\)"
    with pytest.raises(ValueError, match=msg):
        parareal_network(small_resnet, 3, balance="flops", coarse=bad, example_input=batch)
    bad[1] = nn.Conv2d(16, 16, 1).double()  # wrong input channels: fails inside
    with pytest.raises(ValueError, match=r"coarse network 1 fails .*\(4, 8, 16, 16\)"):
        parareal_network(small_resnet, 3, balance="flops", coarse=bad, example_input=batch)
    with pytest.raises(ValueError, match="3 chunks need 3 coarse networks"):
        parareal_network(small_resnet, 3, balance="flops", coarse=bad[:2], example_input=batch)


def test_default_coarse_shapes_and_kinds():
    x, y = torch.randn(2, 8, 9, 9), torch.randn(2, 16, 5, 5)
    odd = torch.randn(2, 16, 4, 3)  # not a plain stride: resampled
    same = torch.randn(2, 16, 9, 9)  # stride 1
    for kind in ("conv", "pool", "preact", "auto"):
        for out in (y, odd, same):
            assert default_coarse(x, out, kind)(x).shape == out.shape
    assert isinstance(default_coarse(x, y.relu(), "auto")[-1], nn.ReLU)
    # "pool": average-pool by the stride and a 1x1 conv, a ninth of the 3x3 conv's weights
    pool, conv = default_coarse(x, y, "pool"), default_coarse(x, y, "conv")
    assert isinstance(pool[0], nn.AvgPool2d) and pool[0].kernel_size == (2, 2)
    assert sum(p.numel() for p in pool.parameters()) * 9 == sum(
        p.numel() for p in conv.parameters()) == 9 * 8 * 16
    assert not any(isinstance(m, nn.AvgPool2d) for m in default_coarse(x, same, "pool"))
    flat_in, flat_out = torch.randn(2, 6), torch.randn(2, 4).relu()
    assert isinstance(default_coarse(flat_in, flat_out)[-1], nn.ReLU)  # auto keeps y >= 0
    assert len(default_coarse(flat_in, flat_out - 1.0)) == 1  # a plain linear layer
    with pytest.raises(ValueError, match="coarse kind must be"):
        default_coarse(x, y, "sep")
    with pytest.raises(ValueError, match="no default coarse"):
        default_coarse(torch.randn(2, 3, 4), torch.randn(2, 3, 4))


def test_torchpint_layout_detected(small_vgg):
    d = decompose(small_vgg)
    assert d.pre is small_vgg.pre and d.post is small_vgg.post and len(d.blocks) == 12
    seq = nn.Sequential(OrderedDict(pre=nn.Identity(), body=nn.Linear(2, 2), post=nn.Identity()))
    assert len(decompose(seq).blocks) == 1


class _Basic(nn.Module):
    """A residual block (conv-BN-ReLU-conv-BN plus a 1x1 shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride > 1 or cin != cout:
            self.down = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class _TVResNet4(nn.Module):
    """Stand-in for torchvision's ResNet: the same attribute names and the same forward."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(_Basic(4, 4, 1), _Basic(4, 4, 1))
        self.layer2 = nn.Sequential(_Basic(4, 8, 2), _Basic(8, 8, 1))
        self.layer3 = nn.Sequential(_Basic(8, 8, 2))
        self.layer4 = nn.Sequential(_Basic(8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class _PlainSubclass(nn.Sequential):
    """A Sequential subclass that keeps Sequential's forward: still a chain of its children."""


class _Skip(nn.Sequential):
    """A Sequential subclass whose forward adds a skip around all its children."""

    def forward(self, x):
        return x + super().forward(x)


def _layout(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A model of every layout ``parareal_network`` accepts, and a float64 batch for it."""
    torch.manual_seed(0)
    image = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    if name == "torchpint-vgg":
        from torchpint.models import vgg16

        return vgg16(num_classes=4, width=2), image
    if name == "torchpint-resnet":
        from torchpint.models import preact_resnet

        return preact_resnet(depth=20, num_classes=4, width=2), image
    if name == "torchvision-resnet":
        return _TVResNet4(), image
    if name == "torchvision-vgg":
        return _TVVGG(), image
    if name == "conv-sequential":
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
        ), image  # fmt: skip
    if name == "mlp-sequential":
        mlp = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
        return mlp, torch.randn(5, 6, dtype=torch.float64)
    if name == "sequential-subclass":
        return _PlainSubclass(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)), torch.randn(
            5, 6, dtype=torch.float64
        )
    raise AssertionError(name)


@pytest.mark.parametrize("chunks", [2, 3])
@pytest.mark.parametrize(
    "name",
    [
        "torchpint-vgg",
        "torchpint-resnet",
        "torchvision-resnet",
        "torchvision-vgg",
        "conv-sequential",
        "mlp-sequential",
        "sequential-subclass",
    ],
)
def test_every_accepted_layout_is_exact_with_n_iterations(name, chunks):
    """With k = N iterations the parareal network computes the original model's output."""
    model, x = _layout(name)
    model = model.double()
    net = parareal_network(model, chunks, iterations=chunks, balance="blocks", example_input=x)
    net = net.double()
    for training in (False, True):
        model.train(training)
        net.train(training)
        with torch.no_grad():
            ref = model(x)
            torch.testing.assert_close(net(x), ref, atol=1e-10, rtol=0)


def _tv_resnet_with_skip_layer() -> nn.Module:
    model = _TVResNet4()
    model.layer2 = _Skip(_Basic(4, 4, 1), _Basic(4, 4, 1))
    return model


def _tv_vgg_with_skip_features() -> nn.Module:
    model = _TVVGG()
    model.features = _Skip(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1),
    )  # fmt: skip
    model.classifier = nn.Linear(12, 3)
    return model


@pytest.mark.parametrize(
    "build, where",
    [
        (lambda: _Skip(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh()), "_Skip"),
        (
            lambda: _Skip(
                OrderedDict(
                    pre=nn.Linear(6, 6),
                    body=nn.Sequential(nn.Tanh(), nn.Linear(6, 6), nn.Tanh()),
                    post=nn.Linear(6, 6),
                )
            ),
            "_Skip",
        ),
        (
            lambda: nn.Sequential(
                OrderedDict(
                    pre=nn.Linear(6, 6),
                    body=_Skip(nn.Tanh(), nn.Linear(6, 6), nn.Tanh()),
                    post=nn.Linear(6, 6),
                )
            ),
            "body",
        ),
        (_tv_resnet_with_skip_layer, "layer2"),
        (_tv_vgg_with_skip_features, "features"),
    ],
)
def test_sequential_subclass_with_its_own_forward_is_refused(build, where):
    """Splitting a Sequential subclass that overrides forward (here: a skip around its
    children) into its children would silently change the output: refused, with the fix."""
    torch.manual_seed(0)
    model = build().double()
    x = torch.randn(3, 3, 16, 16) if where in ("layer2", "features") else torch.randn(4, 6)
    x = x.double()
    with pytest.raises(ValueError, match=rf"{where}.*overrides forward.*nn\.Sequential of"):
        parareal_network(model, 2, iterations=2, balance="blocks", example_input=x)
    with pytest.raises(ValueError, match="overrides forward"):
        decompose(model)


def test_sequential_with_a_forward_hook_is_refused():
    """A forward hook on the container would be dropped by cutting it into its children."""
    mlp = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    mlp.register_forward_hook(lambda mod, inp, out: 2 * out)
    with pytest.raises(ValueError, match="has forward hooks"):
        decompose(mlp)
