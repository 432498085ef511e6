"""Image arrays as a torch ``Dataset``: resized, augmented and normalised in torch, batch
by batch, with augmentation draws keyed by (seed, epoch, index).

The images stay uint8 in memory (Fashion-MNIST's 60,000 take 47 MB, CIFAR's 50,000
150 MB); each batch is turned to float, resized, augmented and normalised when fetched
(``__getitems__``, which the ``DataLoader`` calls with a whole batch's indices). Keying the
random crop and flip by (seed, epoch, index) rather than by a global generator makes them
the same with any number of workers, on every rank, and after a resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from torchpint.common.seeds import mix_seed

AUGMENT_CHOICES: tuple[str, ...] = ("none", "standard", "crop", "flip", "crop+flip")


@dataclass(frozen=True)
class Augment:
    """Random crop with zero padding of ``pad`` pixels, and horizontal flips."""

    crop: bool = False
    flip: bool = False
    pad: int = 0

    @property
    def active(self) -> bool:
        return self.crop or self.flip


def parse_augment(value: bool | str | None, *, flip_suits: bool, size: int) -> Augment:
    """The augmentation ``value`` asks for on images of ``size``: ``True`` or
    ``"standard"`` is the set's usual one (crop padded by ``size // 8``, plus flips where
    they suit the set, ``flip_suits``); ``False``, ``None`` or ``"none"`` is none;
    ``"crop"``, ``"flip"`` and ``"crop+flip"`` ask for exactly those."""
    pad = max(1, size // 8)
    if value is True or value == "standard":
        return Augment(True, flip_suits, pad)
    if value is None or value is False or value == "none":
        return Augment()
    if isinstance(value, str) and value in AUGMENT_CHOICES:
        parts = set(value.split("+"))
        return Augment("crop" in parts, "flip" in parts, pad if "crop" in parts else 0)
    raise ValueError(f"augment must be True, False or one of {', '.join(AUGMENT_CHOICES)}; "
                     f"got {value!r}")


class ImageSet(Dataset):
    """Images ``(N, C, H, W)`` uint8 and labels, served as normalised float tensors of
    ``size`` square, augmented by ``augment`` (training sets only).

    Call ``set_epoch(e)`` before epoch ``e`` (``EpochSampler`` does, when it follows this
    set) so that each epoch draws other crops and flips.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        size: int | None = None,
        augment: Augment = Augment(),
        seed: int = 0,
    ) -> None:
        if isinstance(images, np.ndarray) and not images.flags.writeable:
            images = images.copy()  # np.frombuffer's view of the file's bytes
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if len(mean) != x.shape[1] or len(std) != x.shape[1]:
            raise ValueError(f"mean and std need one value per channel ({x.shape[1]})")
        if min(std) <= 0:
            raise ValueError(f"std must be > 0, got {tuple(std)}")
        if size is not None and size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        self.images = x.contiguous()
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.size = int(size or x.shape[-1])
        self.augment, self.seed, self.epoch = augment, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels at ``indices`` as two tensors."""
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        if len(idx) and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        x = self.images[idx].float().div_(255.0)
        if x.shape[-2:] != (self.size, self.size):
            down = self.size < max(x.shape[-2:])
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=down)
        if self.augment.active and len(idx):
            x = self._augment(x, idx.tolist())
        return (x - self.mean) / self.std, self.labels[idx]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.batch(indices)
        return list(zip(x.unbind(0), y.unbind(0), strict=True))

    def _augment(self, x: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """Crop and flip each image as its key ``mix_seed(seed, epoch, index)`` says, all
        in one gather."""
        aug, s, n = self.augment, self.size, len(self)
        p = aug.pad if aug.crop else 0
        span = 2 * p + 1
        keys = [mix_seed(self.seed, self.epoch, i % n) for i in indices]
        dy = torch.tensor([h % span for h in keys]).view(-1, 1)
        dx = torch.tensor([(h // span) % span for h in keys]).view(-1, 1)
        ar = torch.arange(s).view(1, -1)
        rows, cols = dy + ar, dx + ar  # (B, s) each
        if aug.flip:
            flip = torch.tensor([bool((h >> 32) & 1) for h in keys]).view(-1, 1)
            cols = torch.where(flip, cols.flip(1), cols)
        padded = F.pad(x, (p, p, p, p)) if p else x  # zeros: black, as torchvision pads
        b = torch.arange(len(indices)).view(-1, 1, 1, 1)
        c = torch.arange(x.shape[1]).view(1, -1, 1, 1)
        return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]
