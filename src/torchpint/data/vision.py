"""Deprecated names of the torchvision era, kept so existing imports go on working.

torchpint reads CIFAR-10/100, SVHN, MNIST (and Fashion-MNIST, KMNIST) with its own
readers (``files.py``, ``readers.py``); torchvision is no longer needed for them.
"""

from __future__ import annotations

import os

from torch.utils.data import Dataset

from torchpint.data.files import FILE_SPECS, file_datasets, locate

VISION_SPECS = FILE_SPECS  # the old name of the table of data sets read from files


def resolve_root(name: str, data_root: str | os.PathLike | None) -> str:
    """The folder that holds ``name``'s files (deprecated: use :func:`locate`)."""
    return locate(name, data_root).folder


def vision_datasets(
    name: str,
    data_root: str | os.PathLike | None,
    *,
    image_size: int | None = None,
    augment: bool | str | None = True,
) -> tuple[Dataset, Dataset]:
    """Train and test sets of ``name`` (deprecated: use :func:`file_datasets`)."""
    return file_datasets(name, data_root, image_size=image_size, augment=augment)
