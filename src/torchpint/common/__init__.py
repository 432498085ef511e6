"""Small helpers the layers above the core share (it imports nothing of torchpint).

- :mod:`~torchpint.common.seeds`: one seed mixer for keyed randomness.
- :mod:`~torchpint.common.modules`: put modules in train/eval mode for a span.
- :mod:`~torchpint.common.devices`: turn a device spec into a checked ``torch.device``.
- :mod:`~torchpint.common.process_grid`: D data-parallel replicas x S stages of ranks.
- :mod:`~torchpint.common.syncbn`: batch norm over the replicas' batches together.
"""
