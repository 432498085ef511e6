"""Atomic writes by one writer: a failed write keeps the old file and names the fix, and a
second live writer of a path is refused."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from torchpint.runtime.checkpoint import atomic_save, load_checkpoint
from torchpint.runtime.files import (
    LockedError,
    WriteError,
    atomic_write_text,
    claim,
    lock_file,
    release,
)
from torchpint.runtime.outputs import check_writable, plot_path, write_json


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize(("code", "fix"), [(errno.ENOSPC, "disk is full"),
                                           (errno.EROFS, "read-only"),
                                           (errno.EACCES, "permission denied")])
def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch,
                                                                     code, fix):
    path = tmp_path / "r.json"
    write_json(path, {"old": 1})

    def refuse(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(WriteError, match=rf"cannot write {path}: .*{fix}"):
        write_json(path, {"new": 2})
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"old":1}'
    assert _leftovers(tmp_path) == []


def test_a_full_disk_for_real(tmp_path):
    """On a 64 KiB tmpfs (skipped where this process may not mount one)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        ckpt = mnt / "c.pt"
        atomic_save({"w": torch.zeros(10)}, ckpt)
        with pytest.raises(WriteError, match="disk is full"):
            atomic_save({"w": torch.zeros(100_000)}, ckpt)  # 400 KB > 64 KiB
        assert torch.equal(load_checkpoint(ckpt)["w"], torch.zeros(10))
        assert _leftovers(mnt) == []
    finally:
        release(mnt / "c.pt")
        subprocess.run(["umount", str(mnt)], check=False)


def test_an_unwritable_folder_is_named_before_the_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=f"cannot write {blocker}/r.json"):
        check_writable(blocker / "r.json")


def test_plot_paths_are_checked_and_completed():
    assert str(plot_path("out/noext")) == "out/noext.png"
    assert str(plot_path("a.PDF")) == "a.PDF"
    with pytest.raises(ValueError, match=r"does not write \.xyz files"):
        plot_path("out.xyz")


def test_writes_leave_nothing_but_the_file(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello" and _leftovers(tmp_path) == []


_OTHER = textwrap.dedent("""
    import sys, time
    from torchpint.runtime.files import claim
    claim(sys.argv[1])
    print("held", flush=True)
    time.sleep(30)
""")


def test_a_second_live_writer_is_refused_and_a_dead_ones_lock_is_not(tmp_path):
    path = tmp_path / "c.pt"
    other = subprocess.Popen([sys.executable, "-c", _OTHER, str(path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"{path} is being written by another live run"):
            claim(path)
        with pytest.raises(LockedError):
            atomic_save({"x": 1}, path)
        assert not path.exists()
    finally:
        other.kill()
        other.wait()
    claim(path)  # the kernel dropped the dead writer's lock
    atomic_save({"x": 1}, path)
    assert load_checkpoint(path)["x"] == 1 and lock_file(path).exists()
    release(path)
    assert not lock_file(path).exists()  # nothing left beside the checkpoint


def test_claims_made_inside_a_scope_are_released_on_leaving(tmp_path):
    from torchpint.runtime.files import claims

    outer, inner = tmp_path / "outer.pt", tmp_path / "inner.pt"
    claim(outer)
    with claims():
        claim(inner)
        assert lock_file(inner).exists()
    assert not lock_file(inner).exists() and lock_file(outer).exists()
    release(outer)
