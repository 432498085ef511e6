"""Small data sets written in the real formats, for the readers' tests: IDX (raw or
gzipped), CIFAR python batches (as Python 2 and NumPy 1 wrote them, or as this Python
does), SVHN's .mat and KMNIST's .npz."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """``array`` (uint8) in the IDX format; ``magic`` overrides the magic number."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    m = (0x08 << 8) | a.ndim if magic is None else magic
    return struct.pack(">I", m) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def images(n: int, size: int = 28, channels: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (n, size, size) if channels is None else (n, channels, size, size)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def labels(n: int, classes: int = 10, seed: int = 0) -> np.ndarray:
    return (np.arange(n) + seed) % classes


def write_idx_set(folder: Path, n_train: int = 40, n_test: int = 20, *, gz: bool = True,
                  size: int = 28) -> dict[str, np.ndarray]:
    """The four MNIST-layout files in ``folder``; returns what they hold."""
    held = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        x, y = images(n, size, seed=seed), labels(n, seed=seed)
        img, lab = IDX_FILES[split]
        write(folder / img, idx_bytes(x), gz)
        write(folder / lab, idx_bytes(y), gz)
        held[split + "_x"], held[split + "_y"] = x, y
    return held


# ------------------------------------------------------------------- CIFAR python batches


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle protocol 2 writes it."""
    if len(b) < 256:
        return b"U" + bytes([len(b)]) + b
    return b"T" + struct.pack("<I", len(b)) + b


def _py2_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    return b"J" + struct.pack("<i", v)


def _py2_array(a: np.ndarray) -> bytes:
    """A uint8 ndarray as NumPy 1 on Python 2 pickled it (the real CIFAR files)."""
    shape = b"(" + b"".join(_py2_int(d) for d in a.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
            + _py2_str(b"b") + b"\x87R" + b"(K\x01" + shape + dtype + b"\x89"
            + _py2_str(a.tobytes()) + b"tb")


def py2_cifar_pickle(batch: dict[str, object]) -> bytes:
    """``batch`` (str keys; values a uint8 array, a list of ints or a str) as the CIFAR
    site's Python 2 pickles hold it."""
    out = b"\x80\x02}("
    for key, value in batch.items():
        out += _py2_str(key.encode())
        if isinstance(value, np.ndarray):
            out += _py2_array(value)
        elif isinstance(value, list):
            out += b"]("
            for v in value:
                out += _py2_int(int(v))
            out += b"e"
        else:
            out += _py2_str(str(value).encode())
    return out + b"u."


def cifar_batch(n: int, classes: int, seed: int = 0) -> dict[str, object]:
    data = np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    y = [int(v) for v in labels(n, classes, seed)]
    if classes == 100:
        return {"batch_label": "training batch", "fine_labels": y,
                "coarse_labels": [v // 5 for v in y], "data": data}
    return {"batch_label": "training batch 1 of 5", "labels": y, "data": data}


def write_cifar(root: Path, classes: int = 10, n: int = 8, *, style: str = "py2") -> Path:
    """A CIFAR-10 (5 training batches and a test batch) or CIFAR-100 (train, test) folder
    under ``root``; ``style`` "py2" (the real files) or "py3" (this Python's pickle, bytes
    keys)."""
    if classes == 10:
        folder = root / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    else:
        folder = root / "cifar-100-python"
        names = ["train", "test"]
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        batch = cifar_batch(n, classes, seed=i)
        if style == "py2":
            data = py2_cifar_pickle(batch)
        else:
            data = pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=2)
        (folder / name).write_bytes(data)
    return folder


def write_svhn(root: Path, n_train: int = 12, n_test: int = 6, *, y_train=None) -> None:
    from scipy.io import savemat

    for name, n, seed in (("train_32x32.mat", n_train, 1), ("test_32x32.mat", n_test, 2)):
        x = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(-1, 1)  # 1..10, 10 is digit 0
        if name.startswith("train") and y_train is not None:
            y = np.asarray(y_train, dtype=np.uint8).reshape(-1, 1)
        savemat(root / name, {"X": x, "y": y})


def write_kmnist_npz(folder: Path, n_train: int = 20, n_test: int = 10) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        np.savez_compressed(folder / f"kmnist-{split}-imgs.npz", arr_0=images(n, seed=seed))
        np.savez_compressed(folder / f"kmnist-{split}-labels.npz",
                            arr_0=labels(n, seed=seed).astype(np.uint8))
