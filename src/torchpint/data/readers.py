"""Readers of the image data sets' own file formats, without torchvision and without
running code from the files.

- IDX (MNIST, Fashion-MNIST, KMNIST), gzipped or raw: :func:`read_idx`;
- KMNIST's ``.npz`` arrays, loaded with ``allow_pickle=False``: :func:`read_npz`;
- CIFAR-10/100 python batches, pickles read by :class:`SafeUnpickler`, which builds only
  uint8/int NumPy arrays, lists, dicts and strings and refuses every other global:
  :func:`read_cifar_batch`;
- SVHN's MATLAB files through ``scipy.io.loadmat``: :func:`read_svhn_mat`.

Every reader checks magic numbers, shapes, counts and label ranges, and fails with a
:class:`DataFileError` (a ``ValueError``) naming the file and the fix; a missing file is a
:class:`DataSetNotFoundError` (a ``FileNotFoundError``). The CLI maps both to exit code 2.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_BYTES = 1 << 31  # no image file of these sets is near 2 GiB: more is not one of them
DEFAULT_FIX = "re-download the data set from its official source"


class DataSetNotFoundError(FileNotFoundError):
    """A data set's files are not where they were looked for (the message says where to
    get them and the layout expected)."""


class DataFileError(ValueError):
    """A data set's file is there but is not what its format says: truncated, wrong magic
    number, shape, count or label. The message names the file and the fix."""


class UnsafePickleError(DataFileError):
    """A pickle asked for an object other than the arrays, lists and dicts of its format;
    it was refused before anything of it ran."""


def _fail(path: str | os.PathLike, what: str, fix: str) -> DataFileError:
    return DataFileError(f"{os.fspath(path)}: {what}; {fix}")


def read_bytes(path: str | os.PathLike, *, fix: str = DEFAULT_FIX) -> bytes:
    """The file's bytes, decompressed when it is gzipped (whatever its name says)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DataSetNotFoundError(f"{p}: no such file; {fix}")
    with open(p, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != GZIP_MAGIC:
            data = f.read(MAX_BYTES + 1)
        else:
            try:
                with gzip.GzipFile(fileobj=f) as g:
                    data = g.read(MAX_BYTES + 1)
            except (EOFError, OSError, zlib.error) as err:
                raise _fail(p, f"truncated or corrupt gzip data ({err})", fix) from None
    if len(data) > MAX_BYTES:
        raise _fail(p, f"larger than {MAX_BYTES} bytes, not a file of this data set", fix)
    return data


def read_idx(
    path: str | os.PathLike,
    ndim: int,
    *,
    fix: str = DEFAULT_FIX,
    dtype: int = 0x08,
) -> np.ndarray:
    """An IDX array (``ndim`` dimensions of type ``dtype``, 0x08 = unsigned bytes).

    The magic number is ``0x0000 <type> <ndim>`` (2051 for MNIST's images, 2049 for its
    labels); the dimensions follow as big-endian uint32, then exactly their product of
    values: fewer bytes is a truncated file, more a corrupt one.
    """
    data = read_bytes(path, fix=fix)
    if len(data) < 4:
        raise _fail(path, f"truncated: {len(data)} bytes, no IDX header", fix)
    magic = int.from_bytes(data[:4], "big")
    want = (dtype << 8) | ndim
    if magic != want:
        found = (
            f"type 0x{data[2]:02x}, {data[3]} dimensions"
            if data[:2] == b"\0\0" and data[2] in IDX_TYPES
            else "not an IDX file"
        )
        raise _fail(path, f"wrong magic number {magic} (expected {want}: {found})", fix)
    head = 4 + 4 * ndim
    if len(data) < head:
        raise _fail(path, f"truncated: {len(data)} bytes, shorter than its header", fix)
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    item = IDX_TYPES[dtype]
    size = int(np.prod(shape, dtype=np.int64)) * item.itemsize
    if len(data) - head < size:
        raise _fail(
            path,
            f"truncated: the header says {'x'.join(map(str, shape))} values "
            f"({head + size} bytes) but the file has {len(data)} bytes",
            fix,
        )
    if len(data) - head > size:
        raise _fail(
            path,
            f"{len(data) - head - size} bytes after the {'x'.join(map(str, shape))} values "
            "the header announces",
            fix,
        )
    values = np.frombuffer(data, dtype=item, count=size // item.itemsize, offset=head)
    return values.reshape(shape).copy()  # writable, and free of the file's bytes


def read_npz(path: str | os.PathLike, *, fix: str = DEFAULT_FIX) -> np.ndarray:
    """The one array of a NumPy ``.npz`` file (KMNIST's layout: ``arr_0``); object arrays
    are refused (``allow_pickle=False``)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DataSetNotFoundError(f"{p}: no such file; {fix}")
    try:
        with np.load(p, allow_pickle=False) as z:
            names = list(z.files)
            if len(names) != 1:
                raise _fail(p, f"holds arrays {names}, expected exactly one", fix)
            return np.asarray(z[names[0]])
    except DataFileError:
        raise
    except Exception as err:  # noqa: BLE001 - zipfile's, zlib's and NumPy's errors alike
        raise _fail(p, f"not a readable .npz file ({type(err).__name__}: {err})", fix) from None


def check_pair(
    images: np.ndarray,
    labels: np.ndarray,
    image_shape: tuple[int, ...],
    classes: int,
    *,
    where: tuple[str, str],
    fix: str = DEFAULT_FIX,
    first: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels as int64)`` after checking the images' shape after the count
    (``image_shape``), their dtype (uint8), equal counts and labels in
    ``first .. first + classes - 1``. ``where`` names the images' and the labels' files."""
    img_file, lab_file = where
    if images.dtype != np.uint8:
        raise _fail(img_file, f"images of type {images.dtype}, expected uint8", fix)
    if images.ndim != 1 + len(image_shape) or images.shape[1:] != image_shape:
        got = "x".join(map(str, images.shape[1:])) if images.ndim > 1 else "no image axes"
        raise _fail(img_file, f"images of {got}, expected {'x'.join(map(str, image_shape))}",
                    fix)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise _fail(lab_file, f"labels of shape {labels.shape} and type {labels.dtype}, "
                    "expected one integer per image", fix)
    if len(images) == 0:
        raise _fail(img_file, "holds no images", fix)
    if len(images) != len(labels):
        raise _fail(lab_file, f"{len(labels)} labels for the {len(images)} images of "
                    f"{img_file}: the files do not belong together", fix)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < first or hi > first + classes - 1:
        raise _fail(lab_file, f"labels range over {lo}..{hi}, expected "
                    f"{first}..{first + classes - 1}", fix)
    return images, labels.astype(np.int64)


# ------------------------------------------------------------------------------ pickles


class _Refused(pickle.UnpicklingError):
    """What the safe unpickler raises for anything outside its allowed set."""


class _NDArray:
    """Stands for ``numpy.ndarray`` in a pickle: good only as ``_reconstruct``'s first
    argument, so the class itself can never be called with the file's arguments."""


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    """NumPy's ``_reconstruct``, for the ndarray class only (an empty array, filled by the
    ``__setstate__`` that follows)."""
    if cls is not _NDArray:
        raise _Refused(f"_reconstruct of {cls!r}, expected numpy.ndarray")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


_PLAIN_DTYPES = frozenset(
    ["u1", "i1", "b1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "<i8", "<i4"]
)


def _dtype(name: Any, align: Any = 0, copy: Any = 0) -> np.dtype:
    """``numpy.dtype`` for plain numbers only (no object dtype, no records)."""
    text = name.decode("latin1") if isinstance(name, bytes) else name
    if not isinstance(text, str) or text not in _PLAIN_DTYPES:
        raise _Refused(f"numpy dtype {name!r} is not a plain numeric type")
    return np.dtype(text)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """NumPy's ``_frombuffer`` (pickle protocol 5), for plain numeric dtypes only."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "uibf" or dtype.hasobject:
        raise _Refused(f"array of dtype {dtype!r} is not a plain numeric type")
    if order not in ("C", "F"):
        raise _Refused(f"array order {order!r}")
    return np.frombuffer(memoryview(buf), dtype=dtype).reshape(shape, order=order).copy()


def _encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode(str, 'latin1')``, how protocol 2 writes bytes from Python 3."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode other than of a string to latin1")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NDArray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only what NumPy arrays of plain numbers need; any other
    global (``os.system``, ``builtins.eval``, a class of any module...) is refused before
    it is looked up, so nothing of the file runs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refused persistent id")


def safe_unpickle(path: str | os.PathLike, *, fix: str = DEFAULT_FIX) -> Any:
    """The object pickled in ``path`` (gzipped or not), read by :class:`SafeUnpickler`
    with Python 2's strings decoded as latin1 (NumPy's advice for old pickles)."""
    data = read_bytes(path, fix=fix)
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _Refused as err:
        raise UnsafePickleError(
            f"{os.fspath(path)}: {err}: this pickle holds more than the data set's arrays "
            f"and was not run; {fix}"
        ) from None
    except pickle.UnpicklingError as err:
        raise _fail(path, f"truncated or corrupt pickle ({err})", fix) from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError) as err:
        raise _fail(path, f"truncated or corrupt pickle ({type(err).__name__}: {err})",
                    fix) from None


def _field(d: dict, key: str) -> Any:
    for k in (key, key.encode("latin1")):
        if k in d:
            return d[k]
    raise KeyError(key)


def read_cifar_batch(
    path: str | os.PathLike, classes: int, *, fix: str = DEFAULT_FIX
) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` of one CIFAR python batch:
    a dict of ``data`` (N x 3072 uint8) and ``labels`` (CIFAR-10) or ``fine_labels``
    (CIFAR-100, ``classes`` 100), keys as str or bytes."""
    obj = safe_unpickle(path, fix=fix)
    if not isinstance(obj, dict):
        raise _fail(path, f"holds a {type(obj).__name__}, expected a CIFAR batch (a dict)",
                    fix)
    key = "fine_labels" if classes == 100 else "labels"
    try:
        data, labels = _field(obj, "data"), _field(obj, key)
    except KeyError as err:
        keys = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in obj)
        raise _fail(path, f"has no {err.args[0]!r} entry (keys: {', '.join(keys)}); is it a "
                    f"CIFAR-{classes} batch?", fix) from None
    if not isinstance(data, np.ndarray):
        raise _fail(path, f"'data' is a {type(data).__name__}, expected a uint8 array", fix)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _fail(path, f"'data' has shape {data.shape}, expected (N, 3072)", fix)
    if isinstance(labels, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
            raise _fail(path, f"'{key}' holds other things than integers", fix)
        labels = np.asarray(labels, dtype=np.int64)
    if not isinstance(labels, np.ndarray):
        raise _fail(path, f"'{key}' is a {type(labels).__name__}, expected a list of ints",
                    fix)
    images = data.reshape(-1, 3, 32, 32)
    return check_pair(images, labels, (3, 32, 32), classes, where=(os.fspath(path),) * 2,
                      fix=fix)


# ---------------------------------------------------------------------------------- SVHN


def read_svhn_mat(
    path: str | os.PathLike, *, fix: str = DEFAULT_FIX
) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64 in 0..9)`` of SVHN's
    ``train_32x32.mat`` / ``test_32x32.mat``: ``X`` (32, 32, 3, N), ``y`` (N, 1) in 1..10
    where 10 is the digit 0."""
    from scipy.io import loadmat

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DataSetNotFoundError(f"{p}: no such file; {fix}")
    try:
        mat = loadmat(p, variable_names=["X", "y"])
    except (ValueError, TypeError, OSError, EOFError, IndexError, KeyError, zlib.error,
            NotImplementedError) as err:
        raise _fail(p, f"not a readable MATLAB file ({type(err).__name__}: {err})",
                    fix) from None
    if "X" not in mat or "y" not in mat:
        raise _fail(p, "has no 'X' and 'y' arrays; is it SVHN's train_32x32.mat or "
                    "test_32x32.mat?", fix)
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise _fail(p, f"'X' has shape {x.shape}, expected (32, 32, 3, N)", fix)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    images, labels = check_pair(images, y, (3, 32, 32), 10, where=(p, p), fix=fix, first=1)
    labels[labels == 10] = 0
    return images, labels
