"""torchvision data sets read from disk: CIFAR-10, CIFAR-100, SVHN, MNIST. Never downloads.

torchvision is an optional dependency (``pip install torchvision``), imported only when
one of these is asked for. The files are checked before torchvision is called, so a
wrong ``--data-root`` says which files were expected where.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from torch.utils.data import Dataset


@dataclass(frozen=True)
class _Spec:
    """What a torchvision data set needs on disk and how to read and normalize it."""

    cls: str
    folder: str  # the sub-folder of the root that holds the files ("" = the root itself)
    files: tuple[str, ...]
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # horizontal flips are a valid augmentation (not for digits)
    split_kw: str  # "train" (train=True/False) or "split" (split="train"/"test")


VISION_SPECS: dict[str, _Spec] = {
    "cifar10": _Spec(
        "CIFAR10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        10,
        3,
        32,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        True,
        "train",
    ),
    "cifar100": _Spec(
        "CIFAR100",
        "cifar-100-python",
        ("train", "test", "meta"),
        100,
        3,
        32,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        True,
        "train",
    ),
    "svhn": _Spec(
        "SVHN",
        "",
        ("train_32x32.mat", "test_32x32.mat"),
        10,
        3,
        32,
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        False,
        "split",
    ),
    "mnist": _Spec(
        "MNIST",
        os.path.join("MNIST", "raw"),
        (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ),
        10,
        1,
        28,
        (0.1307,),
        (0.3081,),
        False,
        "train",
    ),
}


def _import_torchvision():
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "this data set needs torchvision, which is not installed: "
            "pip install torchvision (or pip install 'torchpint[vision]'); install the build "
            "that matches your torch. The embedded data sets 'digits' and 'shapes' need no "
            "extra package.",
            name="torchvision",
        ) from err


def resolve_root(name: str, data_root: str | os.PathLike | None) -> str:
    """The root torchvision expects for ``name``, after checking the files are there.

    Accepts the root itself or the data set's own folder (e.g. ``.../cifar-10-batches-py``).
    Raises ``FileNotFoundError`` naming the expected files when they are missing, and
    saying so when ``data_root`` is a file rather than a folder.
    """
    spec = VISION_SPECS[name]
    if data_root is None:
        raise FileNotFoundError(
            f"dataset {name!r} is read from disk and never downloaded: pass --data-root DIR "
            f"where DIR holds {_expected(spec, '<DIR>')}"
        )
    root = os.path.abspath(os.path.expanduser(os.fspath(data_root)))
    candidates = [root]
    if spec.folder and root.endswith(os.sep + spec.folder):  # the data set's own folder
        candidates.append(root[: -len(os.sep + spec.folder)] or os.sep)
    for cand in candidates:
        folder = os.path.join(cand, spec.folder)
        if all(os.path.isfile(os.path.join(folder, f)) for f in spec.files):
            return cand
    folder = os.path.join(root, spec.folder)
    missing = [f for f in spec.files if not os.path.isfile(os.path.join(folder, f))]
    if os.path.isdir(root):
        what = f"lacks {', '.join(missing)}"
    elif os.path.exists(root):
        what = "it is a file, not a folder"
    else:
        what = "does not exist"
    raise FileNotFoundError(
        f"--data-root {root} does not hold the {name} data set ({what}); expected "
        f"{_expected(spec, root)}. torchpint never downloads: fetch it yourself, e.g. "
        f"torchvision.datasets.{spec.cls}(root, download=True)."
    )


def _expected(spec: _Spec, root: str) -> str:
    folder = os.path.join(root, spec.folder) if spec.folder else root
    return f"{folder}{os.sep}{{{', '.join(spec.files)}}}"


def vision_datasets(
    name: str,
    data_root: str | os.PathLike | None,
    *,
    image_size: int | None = None,
    augment: bool = True,
) -> tuple[Dataset, Dataset]:
    """Train and test sets of a torchvision data set found under ``data_root``.

    Training images get the usual augmentation when ``augment`` (random crop with padding
    of one eighth of the size, plus horizontal flips for CIFAR); both are normalized with
    the data set's channel statistics and resized to ``image_size`` when given.
    """
    if name not in VISION_SPECS:
        raise ValueError(f"unknown torchvision data set {name!r}; one of {', '.join(VISION_SPECS)}")
    spec = VISION_SPECS[name]
    root = resolve_root(name, data_root)
    tv = _import_torchvision()
    T = importlib.import_module("torchvision.transforms")
    datasets = importlib.import_module("torchvision.datasets")
    size = spec.size if image_size is None else int(image_size)
    base: list = [] if size == spec.size else [T.Resize(size)]
    norm = [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    aug: list = []
    if augment:
        aug.append(T.RandomCrop(size, padding=max(1, size // 8)))
        if spec.flip:
            aug.append(T.RandomHorizontalFlip())
    train_tf = T.Compose(base + aug + norm)
    test_tf = T.Compose(base + norm)
    cls = getattr(datasets, spec.cls)
    del tv  # imported for the clear error only
    out = []
    for train, tf in ((True, train_tf), (False, test_tf)):
        if spec.split_kw == "split":
            kw = {"split": "train" if train else "test"}
        else:
            kw = {"train": train}
        try:
            out.append(cls(root, transform=tf, download=False, **kw))
        except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
            raise FileNotFoundError(
                f"torchvision could not read {name} under {root}: {err}. Expected "
                f"{_expected(spec, root)}"
            ) from err
    return out[0], out[1]
