"""Small helpers every layer may use (the floor of the package: imports nothing of torchpint).

- :mod:`~torchpint.common.seeds`: one seed mixer for keyed randomness.
- :mod:`~torchpint.common.checkpoint`: atomic checkpoint writes.
- :mod:`~torchpint.common.modules`: put modules in train/eval mode for a span.
- :mod:`~torchpint.common.devices`: turn a device spec into a checked ``torch.device``.
"""
