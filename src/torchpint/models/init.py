"""The usual CIFAR weight initialisation, shared by the models and the coarse networks."""

from __future__ import annotations

from torch import nn


def cifar_init(model: nn.Module, linear_std: float | None = None) -> None:
    """Initialise ``model``'s layers in module order: convolutions Kaiming-normal (fan out,
    ReLU), batch norm to weight 1 and bias 0, and, when ``linear_std`` is given, linear
    layers to weights drawn from ``normal(0, linear_std)`` and bias 0 (else left as built).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif linear_std is not None and isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
