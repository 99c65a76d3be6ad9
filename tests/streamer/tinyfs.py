"""Real small and read-only filesystems for the disk-fault tests.

A full disk is a tmpfs mount of a few hundred KiB filled to the last byte: the spool then meets
real ENOSPC / SQLITE_FULL. Neither `PRAGMA max_page_count` (SQLITE_FULL without ENOSPC, and only
for the main file, not the WAL) nor RLIMIT_FSIZE (EFBIG) is the same failure, so without the
privilege to mount the test is skipped, saying why. A read-only directory is a read-only tmpfs
mount when we may mount (root ignores file modes), else a directory without write permission.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def why_no_mount(path: Path, options: str = "size=64k") -> str | None:
    """Mount a tmpfs at `path`; None if it worked, else why not (the caller skips, saying so)."""
    if os.geteuid() != 0:
        return "a real full disk needs a tmpfs mount, which needs root (CI runs as root)"
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    return None if out.returncode == 0 else f"cannot mount a tmpfs here: {out.stderr.strip()}"


def _mount(path: Path, options: str) -> None:
    reason = why_no_mount(path, options)
    if reason is not None:
        pytest.skip(reason)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def tiny_fs(path: Path, size: str = "512k") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the duration."""
    _mount(path, f"size={size},mode=0755")
    try:
        yield path
    finally:
        umount(path)


def fill(directory: Path) -> Path:
    """Take every free byte of `directory`'s filesystem; delete the returned file to free it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    probe = directory / "probe"
    with pytest.raises(OSError) as exc, open(probe, "wb") as f:  # the disk is really full now
        f.write(b"\0" * 4096)
        f.flush()
    probe.unlink(missing_ok=True)
    assert exc.value.errno == errno.ENOSPC
    return filler


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """`path` as a directory nobody can write to (a read-only mount when we may mount)."""
    if os.geteuid() == 0:
        _mount(path, "size=64k,ro")
        try:
            yield path
        finally:
            umount(path)
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)
