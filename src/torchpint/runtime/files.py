"""Files written whole or not at all, by one writer at a time.

Every file torchpint writes (checkpoints, results JSON, plots) goes through
:func:`atomic_write`: the bytes go to a temporary file with a name unique to this writer,
are flushed to disk, and replace the target in one rename. Readers see the old file or
the new one, never a part; a failed write (disk full, read-only, no permission) removes
its temporary file, leaves the old file intact and raises :class:`WriteError` naming the
path and the fix. :func:`claim` refuses a path that another live process is writing.
"""

from __future__ import annotations

import atexit
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

_FIXES = {
    errno.ENOSPC: "the disk is full: free space there, or write to another disk",
    errno.EDQUOT: "the disk quota is exceeded: free space there, or write to another disk",
    errno.EROFS: "the file system is read-only: write to another folder",
    errno.EACCES: "permission denied: write to a folder you own",
    errno.EPERM: "permission denied: write to a folder you own",
    errno.ENOTDIR: "a file is in the way of the folder: give another path",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ENAMETOOLONG: "the name is too long: give a shorter path",
}


class WriteError(ValueError):
    """A file could not be written (disk full, read-only, no permission, a folder in the
    way). The message names the path and the fix; the previous file, if any, is intact."""


class LockedError(ValueError):
    """Another live process is writing the same path (two runs sharing one checkpoint)."""


def write_error(path: str | os.PathLike, err: OSError) -> WriteError:
    """The :class:`WriteError` for an ``OSError`` met while writing ``path``."""
    fix = _FIXES.get(err.errno or 0, "check the path and the disk")
    reason = err.strerror or str(err)
    return WriteError(f"cannot write {os.fspath(path)}: {reason}; {fix}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a fresh temporary file beside ``path``, then rename it over
    ``path``. The parent folder is created. Returns the path written."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as err:
        raise write_error(p, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as err:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise write_error(p, err) from err
        raise
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode())


_HELD: dict[str, int] = {}  # lock file -> open descriptor, held until the process exits


def lock_file(path: str | os.PathLike) -> Path:
    """The lock file that guards ``path``: ``.NAME.lock`` beside it."""
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


def claim(path: str | os.PathLike) -> None:
    """Make this process the one writer of ``path`` until it exits.

    A lock (``flock``) on a file beside ``path``; the kernel drops it when the process
    dies, so a crashed run never blocks the next. Raises :class:`LockedError` naming the
    other process while a live one holds it. Claiming a path twice is a no-op.
    """
    import fcntl

    lock = lock_file(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        key = os.fspath(lock.resolve())
        if key in _HELD:
            return
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise write_error(path, err) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise write_error(path, err) from err
        owner = ""
        with suppress(OSError):
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip()
        os.close(fd)
        raise LockedError(
            f"{os.fspath(path)} is being written by another live run ({owner or 'unknown'}); "
            "give this run its own path, or stop the other run first"
        ) from None
    with suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)
    _HELD[key] = fd


def release(path: str | os.PathLike) -> None:
    """Give up the claim on ``path`` and remove its lock file (a no-op if this process
    holds none)."""
    _drop(os.fspath(lock_file(path).resolve()))


def _drop(key: str) -> None:
    fd = _HELD.pop(key, None)
    if fd is not None:
        with suppress(OSError):
            os.unlink(key)  # while still locked: a waiting writer then makes a new one
        os.close(fd)


@contextmanager
def claims() -> Iterator[None]:
    """Release, on leaving, every claim made inside (a command run in a process that
    goes on, such as the demo or a test, leaves no lock behind)."""
    before = set(_HELD)
    try:
        yield
    finally:
        for key in set(_HELD) - before:
            _drop(key)


@atexit.register
def release_all() -> None:
    """Release every claim this process holds, so that no lock file is left behind. Run
    at exit (the kernel drops the locks anyway) and by :func:`comm.abandon`."""
    for key in list(_HELD):
        _drop(key)
