"""The data sets read from files: where their files lie, how they are read and checked,
and their standard normalisation. Never downloads.

``FILE_SPECS`` names each set's layouts (the file names, in the folders searched under the
root), its reader, classes, channels, size, per-channel mean and standard deviation of
its training pixels in [0, 1], and whether horizontal flips suit it (not for digits).
Fashion-MNIST has a default root, where Debian's ``dataset-fashion-mnist`` puts it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from torchpint.data.images import ImageSet, parse_augment
from torchpint.data.readers import (
    DataSetNotFoundError,
    check_pair,
    read_cifar_batch,
    read_idx,
    read_npz,
    read_svhn_mat,
)

IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_PACKAGE = "dataset-fashion-mnist"


@dataclass(frozen=True)
class Layout:
    """One way a data set's files are laid out: their format and names (IDX files may
    each be gzipped, ``NAME.gz``)."""

    format: str  # "idx", "npz", "cifar" or "svhn"
    train: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class FileSpec:
    """A data set read from files: layouts, where to look, what it holds."""

    title: str
    layouts: tuple[Layout, ...]
    folders: tuple[str, ...]  # sub-folders of the root searched, in order ("" = the root)
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # horizontal flips are a valid augmentation (not for digits)
    source: str  # where to get the files
    default_root: str | None = None  # searched when no root is given
    package: str | None = None  # the Debian package that installs it at default_root


_IDX = Layout("idx", IDX_TRAIN, IDX_TEST)
_GREY = dict(channels=1, size=28, num_classes=10)
_RGB = dict(channels=3, size=32)

FILE_SPECS: dict[str, FileSpec] = {
    "fashion-mnist": FileSpec(
        "Fashion-MNIST", (_IDX,), ("", "FashionMNIST/raw", "fashion-mnist", "fashion"),
        mean=(0.2860,), std=(0.3530,), flip=True,
        source="https://github.com/zalandoresearch/fashion-mnist (data/fashion)",
        default_root="/usr/share/datasets/fashion-mnist", package=FASHION_PACKAGE, **_GREY,
    ),
    "mnist": FileSpec(
        "MNIST", (_IDX,), ("", "MNIST/raw", "mnist"),
        mean=(0.1307,), std=(0.3081,), flip=False,
        source="https://yann.lecun.com/exdb/mnist/ (or torchvision.datasets.MNIST(root, "
        "download=True))", **_GREY,
    ),
    "kmnist": FileSpec(
        "KMNIST",
        (_IDX, Layout("npz", ("kmnist-train-imgs.npz", "kmnist-train-labels.npz"),
                      ("kmnist-test-imgs.npz", "kmnist-test-labels.npz"))),
        ("", "KMNIST/raw", "kmnist"),
        mean=(0.1918,), std=(0.3483,), flip=False,
        source="https://github.com/rois-codh/kmnist (the MNIST-format or the .npz files)",
        **_GREY,
    ),
    "cifar10": FileSpec(
        "CIFAR-10",
        (Layout("cifar", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",)),),
        ("cifar-10-batches-py", ""), num_classes=10,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), flip=True,
        source="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpack it in "
        "the --data-root)", **_RGB,
    ),
    "cifar100": FileSpec(
        "CIFAR-100", (Layout("cifar", ("train",), ("test",)),), ("cifar-100-python", ""),
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), flip=True,
        source="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (unpack it in "
        "the --data-root)", **_RGB,
    ),
    "svhn": FileSpec(
        "SVHN", (Layout("svhn", ("train_32x32.mat",), ("test_32x32.mat",)),),
        ("", "svhn", "SVHN"), num_classes=10,
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), flip=False,
        source="http://ufldl.stanford.edu/housenumbers/ (format 2, the 32x32 .mat files)",
        **_RGB,
    ),
}


def fix_hint(name: str) -> str:
    """What to do about a bad file of ``name``."""
    spec = FILE_SPECS[name]
    hint = f"re-download {spec.title} from {spec.source}"
    if spec.package:
        hint += f", or reinstall it: apt-get install --reinstall {spec.package}"
    return hint


def _present(folder: str, file: str, fmt: str) -> str | None:
    """The path of ``file`` in ``folder`` (IDX: raw or ``.gz``), or None."""
    names = (file, file + ".gz") if fmt == "idx" else (file,)
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isfile(p):
            return p
    return None


def _expected(spec: FileSpec, root: str) -> str:
    """The layouts expected under ``root``, in words."""
    sub = spec.folders[0]
    folder = os.path.join(root, sub) if sub else root
    ways = []
    for lay in spec.layouts:
        files = ", ".join(lay.train + lay.test)
        gz = " (each may be gzipped, NAME.gz)" if lay.format == "idx" else ""
        ways.append(f"{folder}{os.sep}{{{files}}}{gz}")
    return " or ".join(ways)


@dataclass(frozen=True)
class Found:
    """Where a data set's files were found."""

    folder: str
    layout: Layout
    train: tuple[str, ...]
    test: tuple[str, ...]


def locate(name: str, data_root: str | os.PathLike | None) -> Found:
    """Find ``name``'s files under ``data_root`` (its own folder, the root itself, or the
    sub-folders torchvision uses), or its default root when none is given.

    Raises :class:`DataSetNotFoundError` saying what is missing, where to get the files and
    the layout expected (for Fashion-MNIST, ``apt-get install dataset-fashion-mnist``).
    """
    spec = FILE_SPECS[name]
    apt = (f"apt-get install {spec.package} (Debian, Ubuntu: it installs the files in "
           f"{spec.default_root})" if spec.package else "")
    if data_root is None and spec.default_root is None:
        raise DataSetNotFoundError(
            f"dataset {name!r} is read from disk and never downloaded: pass --data-root DIR "
            f"where DIR holds {_expected(spec, '<DIR>')}; get the files from {spec.source}"
        )
    given = data_root is not None
    root = os.path.abspath(os.path.expanduser(os.fspath(data_root if given
                                                         else spec.default_root)))
    best: tuple[int, str, Layout] | None = None
    for sub in spec.folders:
        folder = os.path.join(root, sub) if sub else root
        for lay in spec.layouts:
            paths = [_present(folder, f, lay.format) for f in lay.train + lay.test]
            if all(paths):
                n = len(lay.train)
                return Found(folder, lay, tuple(paths[:n]), tuple(paths[n:]))  # type: ignore
            count = sum(p is not None for p in paths)
            if best is None or count > best[0]:
                best = (count, folder, lay)
    assert best is not None
    _, folder, lay = best
    missing = [f for f in lay.train + lay.test if _present(folder, f, lay.format) is None]
    if os.path.isdir(root):
        what = f"{folder} lacks {', '.join(missing)}"
    elif os.path.exists(root):
        what = "it is a file, not a folder"
    else:
        what = "it does not exist"
    if not given:
        raise DataSetNotFoundError(
            f"{spec.title} is not installed in {root} ({what}): {apt}; or pass --data-root "
            f"DIR where DIR holds {_expected(spec, '<DIR>')}"
        )
    head = f"--data-root {root} does not hold the {name} data set ({what})"
    if apt:
        raise DataSetNotFoundError(
            f"{head}: {apt} and leave out --data-root; or put in it "
            f"{_expected(spec, root)} from {spec.source} (torchpint never downloads)"
        )
    raise DataSetNotFoundError(
        f"{head}; expected {_expected(spec, root)}. torchpint never downloads: get the files "
        f"from {spec.source}."
    )


Arrays = tuple[np.ndarray, np.ndarray]


def _read_split(name: str, found: Found, files: tuple[str, ...]) -> Arrays:
    spec, fix = FILE_SPECS[name], fix_hint(name)
    fmt = found.layout.format
    if fmt == "cifar":
        parts = [read_cifar_batch(f, spec.num_classes, fix=fix) for f in files]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    if fmt == "svhn":
        return read_svhn_mat(files[0], fix=fix)
    img_file, lab_file = files
    if fmt == "idx":
        images, labels = read_idx(img_file, 3, fix=fix), read_idx(lab_file, 1, fix=fix)
    else:
        images, labels = read_npz(img_file, fix=fix), read_npz(lab_file, fix=fix)
    shape = (spec.channels, spec.size, spec.size)
    return check_pair(images[:, None] if images.ndim == 3 else images, labels, shape,
                      spec.num_classes, where=(img_file, lab_file), fix=fix)


def load_arrays(name: str, data_root: str | os.PathLike | None) -> tuple[Arrays, Arrays]:
    """``((train images, labels), (test images, labels))`` of ``name``: images
    ``(N, C, H, W)`` uint8, labels int64 in ``0 .. num_classes - 1``, each file checked."""
    if name not in FILE_SPECS:
        raise ValueError(f"unknown data set {name!r}; one of {', '.join(FILE_SPECS)}")
    found = locate(name, data_root)
    return _read_split(name, found, found.train), _read_split(name, found, found.test)


def file_datasets(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    augment: bool | str | None = True,
    seed: int = 0,
) -> tuple[ImageSet, ImageSet]:
    """Train and test sets of ``name`` read from its files (see :func:`locate`).

    Both are normalised with the set's standard mean and std and resized to
    ``image_size`` when given; the training set is augmented as ``augment`` says
    (:func:`~torchpint.data.images.parse_augment`), keyed by ``seed`` and the epoch.
    """
    if name not in FILE_SPECS:
        raise ValueError(f"unknown data set {name!r}; one of {', '.join(FILE_SPECS)}")
    spec = FILE_SPECS[name]
    size = spec.size if image_size is None else int(image_size)
    aug = parse_augment(augment, flip_suits=spec.flip, size=size)
    (xtr, ytr), (xte, yte) = load_arrays(name, data_root)
    train = ImageSet(xtr, ytr, spec.mean, spec.std, size=size, augment=aug, seed=seed)
    test = ImageSet(xte, yte, spec.mean, spec.std, size=size)
    return train, test
