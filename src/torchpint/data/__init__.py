"""Data sets for torchpint's training commands, as deterministic torch DataLoaders.

- ``digits`` (default, embedded): scikit-learn's 8x8 handwritten digits, upscaled.
- ``shapes`` (embedded): procedurally drawn geometric shapes in colour, with noise.
- ``fashion-mnist``, ``mnist``, ``kmnist`` (IDX files), ``cifar10``, ``cifar100`` (python
  batches, unpickled safely), ``svhn`` (``.mat``): read from ``data_root`` by torchpint's
  own readers (``readers.py``, ``files.py``), never downloaded, no torchvision needed.
  Fashion-MNIST's default root is where ``apt-get install dataset-fashion-mnist`` puts it.
- text (``corpus.py``): a character-level corpus for language models, by default the
  Python standard library's own sources (``stdlib_corpus``), or any file
  (``file_corpus``), as windows of next characters (``text_loaders``).

Shuffling is keyed by (seed, epoch) through ``EpochSampler``, not by global RNG state, so
every rank of a distributed run sees the same batches and a resumed run sees the batches an
uninterrupted one would have; augmentation draws are keyed by (seed, epoch, index) alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from torchpint.common.seeds import mix_seed
from torchpint.data.corpus import (
    Corpus,
    CorpusError,
    TextBundle,
    Vocabulary,
    file_corpus,
    stdlib_corpus,
    text_loaders,
)
from torchpint.data.embedded import SHAPE_CLASSES, digits_datasets, shapes_datasets
from torchpint.data.files import FILE_SPECS, file_datasets, locate
from torchpint.data.images import AUGMENT_CHOICES, Augment, ImageSet, parse_augment
from torchpint.data.readers import DataFileError, DataSetNotFoundError, UnsafePickleError
from torchpint.data.vision import VISION_SPECS, resolve_root, vision_datasets

EMBEDDED: tuple[str, ...] = ("digits", "shapes")
FILE_SETS: tuple[str, ...] = tuple(FILE_SPECS)
DATASET_NAMES: tuple[str, ...] = EMBEDDED + FILE_SETS

# name -> (default image size, channels, classes)
_EMBEDDED_DEFAULTS: dict[str, tuple[int, int, int]] = {
    "digits": (16, 1, 10),
    "shapes": (32, 3, len(SHAPE_CLASSES)),
}


class EpochSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that depends only on ``(seed, epoch)``.

    Call ``set_epoch(e)`` before iterating epoch ``e`` (as with ``DistributedSampler``);
    it is passed on to each of ``follow`` (e.g. a data set whose augmentation is keyed by
    the epoch).
    """

    def __init__(self, n: int, seed: int = 0, *, follow: Iterable[object] = ()) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0
        self.follow = tuple(follow)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for f in self.follow:
            f.set_epoch(self.epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class DataBundle:
    """Train and test loaders plus what a model needs to know about the data."""

    name: str
    train: DataLoader
    test: DataLoader
    num_classes: int
    in_channels: int
    image_size: int


def load_datasets(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    seed: int = 0,
    augment: bool | str | None = True,
    **kwargs: object,
) -> tuple[Dataset, Dataset, int, int, int]:
    """``(train, test, num_classes, in_channels, image_size)`` for data set ``name``.

    ``channels`` is for the embedded sets (1 or 3); the sets read from files keep their
    own. ``augment`` applies to the sets read from files (``True``: their standard
    augmentation; see ``parse_augment``); the embedded sets are fixed tensors and ignore
    it. ``kwargs`` go to ``shapes_datasets`` (``num_train``, ``num_test``, ``noise``).
    """
    key = name.lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if key in _EMBEDDED_DEFAULTS:
        size0, ch0, classes = _EMBEDDED_DEFAULTS[key]
        size = size0 if image_size is None else int(image_size)
        ch = ch0 if channels is None else int(channels)
        if key == "digits":
            if kwargs:
                raise TypeError(f"digits takes no options {sorted(kwargs)}")
            train, test = digits_datasets(size, ch, seed=seed)
        else:
            train, test = shapes_datasets(size, ch, seed=seed, **kwargs)  # type: ignore[arg-type]
        return train, test, classes, ch, size
    spec = FILE_SPECS[key]
    if channels is not None and channels != spec.channels:
        raise ValueError(f"{key} has {spec.channels} channels, not {channels}")
    if kwargs:
        raise TypeError(f"{key} takes no options {sorted(kwargs)}")
    if image_size is not None and int(image_size) < 2:
        raise ValueError(f"image_size must be >= 2, got {image_size}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    train, test = file_datasets(key, data_root, image_size=image_size, augment=augment,
                                seed=seed)
    return train, test, spec.num_classes, spec.channels, image_size or spec.size


def make_loaders(
    name: str = "digits",
    *,
    data_root: str | os.PathLike | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    batch_size: int = 64,
    test_batch_size: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    augment: bool | str | None = True,
    drop_last: bool = True,
    **kwargs: object,
) -> DataBundle:
    """Deterministic train/test ``DataLoader``s for ``name`` (see ``DATASET_NAMES``).

    The training loader uses an ``EpochSampler`` seeded by ``seed`` and drops the last
    incomplete batch (equal batches keep step times and BN statistics comparable). The
    order of the batches, and the augmentation, depend only on ``seed`` and the epoch, not
    on ``num_workers`` (``DataLoader`` worker processes, 0 = load in this process).
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if test_batch_size is not None and test_batch_size < 1:
        raise ValueError(
            f"test_batch_size must be >= 1 (or None for the default), got {test_batch_size}"
        )
    train, test, classes, ch, size = load_datasets(
        name,
        data_root=data_root,
        image_size=image_size,
        channels=channels,
        seed=seed,
        augment=augment,
        **kwargs,
    )
    n = len(train)  # type: ignore[arg-type]
    if drop_last and n < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training images")
    follow = (train,) if callable(getattr(train, "set_epoch", None)) else ()
    sampler = EpochSampler(n, seed, follow=follow)
    train_loader = DataLoader(
        train, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=num_workers
    )
    test_loader = DataLoader(
        test,
        batch_size=test_batch_size or max(batch_size, 256),
        shuffle=False,
        num_workers=num_workers,
    )
    return DataBundle(name.lower(), train_loader, test_loader, classes, ch, size)


__all__ = [
    "AUGMENT_CHOICES",
    "Corpus",
    "CorpusError",
    "DATASET_NAMES",
    "EMBEDDED",
    "FILE_SETS",
    "FILE_SPECS",
    "SHAPE_CLASSES",
    "VISION_SPECS",
    "TextBundle",
    "Vocabulary",
    "Augment",
    "DataBundle",
    "DataFileError",
    "DataSetNotFoundError",
    "EpochSampler",
    "ImageSet",
    "UnsafePickleError",
    "digits_datasets",
    "file_corpus",
    "file_datasets",
    "load_datasets",
    "locate",
    "make_loaders",
    "parse_augment",
    "resolve_root",
    "shapes_datasets",
    "stdlib_corpus",
    "text_loaders",
    "vision_datasets",
]
