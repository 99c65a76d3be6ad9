"""The embedded backend: a local directory that behaves like a GCS bucket.

- Generations are the file's mtime in ns, forced strictly upward on every mutation, so a
  rename swaps content and generation in one atomic step (no sidecar to get out of sync).
- Every mutation takes an exclusive `flock` on a per-object lock file and checks the
  generation precondition inside it, so processes on one machine cannot lose updates.
- Writes go to a temp file, fsync, then `os.replace`: a crash leaves the old object or the new.
- Compose onto the object itself (the live append path) appends in place so its cost does not
  grow with the object (GCS composes server-side); a journal holding the old size and
  generation makes it atomic: a crash mid-append is rolled back by the next one to lock it.
- `replace_from(offset)` (a merge that leaves the object's head alone, e.g. history inserted
  before a recent week) rewrites only the bytes from `offset` in place: the journal also keeps
  the old bytes from `offset`, so a crash rolls back the same way. Readers do not hold the lock
  while they read, so an in-place rewrite first advances the object's "epoch" (the mtime of its
  lock file); a reader checks it after every chunk and raises PreconditionFailed instead of
  handing on bytes that changed under it (a writer then re-reads, as after a 412).
- Crash leftovers (temp files, staged parts) older than `LEFTOVER_AGE_S` are removed by
  `clean_leftovers`; a live writer's files are younger (it fsyncs and renames within seconds).
- Names are escaped on disk (`%xx` for upper case and anything outside [a-z0-9._-/]) so
  `1m` and `1M` cannot collide on a case-insensitive disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import orjson

from klinelake.core.errors import ObjectNotFound, PreconditionFailed
from klinelake.core.merge import split_lines
from klinelake.core.storage import (
    STAGING_PREFIX,
    Chunks,
    Data,
    ObjectInfo,
    ObjectNames,
    OptBounds,
)

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_META = ".klinelake"
_CHUNK = 1 << 20
LEFTOVER_AGE_S = 3600.0  # far beyond any write's temp-file lifetime (seconds, not hours)


def escape_name(name: str) -> str:
    """Object name -> relative path; reversible, case-safe, no traversal."""
    if not name or name.startswith("/") or len(name) > 1024:
        raise ValueError(f"invalid object name {name!r}")
    parts = name.split("/")
    out = []
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"invalid object name {name!r}")
        esc = "".join(
            ch if ch in _SAFE else "".join(f"%{b:02x}" for b in ch.encode("utf-8")) for ch in part
        )
        if esc.startswith("."):  # keeps our .klinelake folder and hidden files out of reach
            esc = "%2e" + esc[1:]
        out.append(esc)
    return "/".join(out)


def unescape_name(path: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(path):
        if path[i] == "%":
            raw.append(int(path[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(path[i].encode())
            i += 1
    return raw.decode("utf-8")


class LocalStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # --- paths and locking -----------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.root / escape_name(name)

    def _meta(self, kind: str, name: str) -> Path:
        return self.root / _META / kind / escape_name(name).replace("/", "%2f")

    @contextlib.contextmanager
    def _locked(self, name: str, exclusive: bool) -> Iterator[Path]:
        lock_path = self._meta("locks", name)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            journal = self._meta("journal", name)
            if journal.exists():
                if not exclusive:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                self._recover(name, journal)
            yield self._path(name)
        finally:
            os.close(fd)  # releases the flock

    def _epoch(self, name: str) -> int:
        return os.stat(self._meta("locks", name)).st_mtime_ns

    def _advance_epoch(self, name: str) -> None:
        """Tell readers in flight that bytes they may be reading change in place (lock held)."""
        lock_path = self._meta("locks", name)
        now = max(time.time_ns(), os.stat(lock_path).st_mtime_ns + 1)
        os.utime(lock_path, ns=(now, now))

    def _recover(self, name: str, journal: Path) -> None:
        """Roll back an in-place append or rewrite that a crash interrupted."""
        saved = journal.with_name(journal.name + ".saved")
        try:
            state = orjson.loads(journal.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            journal.unlink(missing_ok=True)  # torn journal: the change never started
            saved.unlink(missing_ok=True)
            return
        path = self._path(name)
        if path.exists():
            self._advance_epoch(name)
            with open(path, "r+b") as f:
                offset = state.get("offset", state["size"])
                if offset < state["size"]:  # a rewrite: put the saved old bytes back
                    f.seek(offset)
                    with open(saved, "rb") as old:
                        _copy(old, f)
                f.truncate(state["size"])
                os.fsync(f.fileno())
            os.utime(path, ns=(state["generation"], state["generation"]))
        journal.unlink()
        saved.unlink(missing_ok=True)

    def _begin_in_place(self, name: str, path: Path, offset: int, old: int) -> Path:
        """Make an in-place change from `offset` undoable: save the old bytes from `offset`,
        then write the journal (the commit point of the undo record). Returns the journal."""
        journal = self._meta("journal", name)
        journal.parent.mkdir(parents=True, exist_ok=True)
        size = os.stat(path).st_size
        if offset < size:
            with (
                open(path, "rb") as src,
                open(journal.with_name(journal.name + ".saved"), "wb") as dst,
            ):
                src.seek(offset)
                _copy(src, dst)
                os.fsync(dst.fileno())
        jtmp = journal.with_suffix(".tmp")
        jtmp.write_bytes(orjson.dumps({"size": size, "generation": old, "offset": offset}))
        os.replace(jtmp, journal)
        self._fsync_dir(journal)
        return journal

    def _end_in_place(self, journal: Path) -> None:
        journal.unlink()
        journal.with_name(journal.name + ".saved").unlink(missing_ok=True)

    @staticmethod
    def _generation(path: Path) -> int | None:
        try:
            return os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return None

    @staticmethod
    def _check(name: str, current: int | None, expected: int) -> None:
        have = current or 0
        if have != expected:
            raise PreconditionFailed(
                f"{name}: generation is {have}, precondition wanted {expected} (412)"
            )

    @staticmethod
    def _bump(path: Path, old: int | None) -> int:
        """Give `path` a generation strictly above `old` and return it."""
        want = max(time.time_ns(), (old or 0) + 1)
        for _ in range(3):
            os.utime(path, ns=(want, want))
            got = os.stat(path).st_mtime_ns
            if got > (old or 0):
                return got
            want += 1_000_000_000  # a coarse-timestamp filesystem rounded us down
        raise OSError(f"cannot advance the generation of {path}")

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _temp(self) -> Path:
        tmp = self.root / _META / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{uuid.uuid4().hex}.tmp"

    # --- the ObjectStore interface ---------------------------------------------------------

    def stat(self, name: str) -> ObjectInfo | None:
        with self._locked(name, exclusive=False) as path:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            return ObjectInfo(name, st.st_mtime_ns, st.st_size)

    def read_range(self, name: str, start: int, end: int, generation: int) -> bytes:
        with self._locked(name, exclusive=False) as path:
            try:
                f = open(path, "rb")  # noqa: SIM115  # closed below
            except FileNotFoundError:
                raise ObjectNotFound(name) from None
            with f:
                st = os.fstat(f.fileno())
                self._check(name, st.st_mtime_ns, generation)
                start = max(0, start)
                return os.pread(f.fileno(), max(0, min(end, st.st_size) - start), start)

    @contextlib.contextmanager
    def open_lines(self, name: str, generation: int, start: int = 0) -> Iterator[Iterator[bytes]]:
        # The lock is held only to pin the generation: renames leave our file descriptor on the
        # old inode, and in-place appends only add bytes past the size we read, so reading up to
        # that size is a consistent snapshot without blocking writers (or our own merge). An
        # in-place rewrite advances the epoch first: the reader checks it after every chunk.
        with self._locked(name, exclusive=False) as path:
            try:
                f = open(path, "rb", buffering=0)  # noqa: SIM115  # closed after reading
            except FileNotFoundError:
                raise ObjectNotFound(name) from None
            st = os.fstat(f.fileno())
            try:
                self._check(name, st.st_mtime_ns, generation)
            except PreconditionFailed:
                f.close()
                raise
            epoch = self._epoch(name)

        def unchanged() -> None:
            if self._epoch(name) != epoch:
                raise PreconditionFailed(f"{name}: rewritten while being read (412)")

        with f:
            f.seek(start)
            yield split_lines(_chunks_upto(f, st.st_size - start, unchanged))

    def write(
        self, name: str, data: Data, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        path = self._path(name)
        with self._staged(data) as tmp, self._locked(name, exclusive=True):
            old = self._generation(path)
            self._check(name, old, if_generation_match)
            return self._install(name, path, tmp, old)

    def replace_from(
        self, name: str, offset: int, data: Chunks, if_generation_match: int, bounds: OptBounds
    ) -> ObjectInfo:
        path = self._path(name)
        with self._staged(data) as tmp, self._locked(name, exclusive=True):
            old = self._generation(path)
            self._check(name, old, if_generation_match)
            if old is None or offset == 0:  # the whole object: a rename is cheaper and atomic
                return self._install(name, path, tmp, old)
            if not 0 < offset <= os.stat(path).st_size:
                raise ValueError(f"{name}: offset {offset} outside the object")
            journal = self._begin_in_place(name, path, offset, old)
            self._advance_epoch(name)
            with open(path, "r+b") as out, open(tmp, "rb") as new:
                out.seek(offset)
                _copy(new, out)
                out.truncate()
                os.fsync(out.fileno())
            gen = self._bump(path, old)
            self._end_in_place(journal)
            return ObjectInfo(name, gen, os.stat(path).st_size)

    @contextlib.contextmanager
    def _staged(self, data: bytes | Iterable[bytes]) -> Iterator[Path]:
        """The data in a durable temp file (written before the lock is taken); removed after."""
        tmp = self._temp()
        try:
            with open(tmp, "wb") as f:
                if isinstance(data, bytes):
                    f.write(data)
                else:
                    for chunk in data:
                        f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    def compose(
        self, name: str, sources: ObjectNames, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        if not 1 <= len(sources) <= 32:
            raise ValueError(f"compose takes 1 to 32 sources, got {len(sources)}")
        path = self._path(name)
        with self._locked(name, exclusive=True):
            old = self._generation(path)
            self._check(name, old, if_generation_match)
            rest = list(sources)
            in_place = old is not None and rest[0] == name
            if in_place:
                rest = rest[1:]
            for src in rest:
                if not self._path(src).exists():
                    raise ObjectNotFound(f"compose source {src}")
            if in_place:
                return self._append_in_place(
                    name, path, old or 0, lambda out: self._copy_sources(out, rest)
                )
            tmp = self._temp()
            try:
                with open(tmp, "wb") as out:
                    self._copy_into(out, sources)
                return self._install(name, path, tmp, old)
            finally:
                tmp.unlink(missing_ok=True)

    def _install(self, name: str, path: Path, tmp: Path, old: int | None) -> ObjectInfo:
        """Swap the finished temp file in as the object's next generation (lock held)."""
        gen = self._bump(tmp, old)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        self._fsync_dir(path)
        return ObjectInfo(name, gen, os.stat(path).st_size)

    def _copy_sources(self, out: BinaryIO, sources: Sequence[str]) -> None:
        for src in sources:
            with open(self._path(src), "rb") as f:
                _copy(f, out)

    def _copy_into(self, out: BinaryIO, sources: Sequence[str]) -> None:
        """Concatenate the sources' bytes onto `out` and make them durable."""
        self._copy_sources(out, sources)
        out.flush()
        os.fsync(out.fileno())

    def _append_in_place(
        self, name: str, path: Path, old: int, write: Callable[[BinaryIO], object]
    ) -> ObjectInfo:
        """`write` the new bytes at the end of the object, durably; undoable until done (the
        journal: a crash in between is rolled back by the next lock holder)."""
        journal = self._begin_in_place(name, path, os.stat(path).st_size, old)
        with open(path, "ab") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        gen = self._bump(path, old)
        self._end_in_place(journal)
        return ObjectInfo(name, gen, os.stat(path).st_size)

    def append(
        self, name: str, data: bytes, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        """`compose(name, [name, part])` without the part: `data` is written at the end of the
        object in place, once, instead of to a part, then copied, then deleted."""
        path = self._path(name)
        with self._locked(name, exclusive=True):
            old = self._generation(path)
            self._check(name, old, if_generation_match)
            if old is None:
                raise ObjectNotFound(name)
            return self._append_in_place(name, path, old, lambda out: out.write(data))

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        path = self._path(name)
        with self._locked(name, exclusive=True):
            gen = self._generation(path)
            if gen is None:
                raise ObjectNotFound(name)
            if if_generation_match is not None:
                self._check(name, gen, if_generation_match)
            path.unlink()

    def list(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        if not self.root.exists():
            return out
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root and _META in dirnames:
                dirnames.remove(_META)
            for fn in filenames:
                full = Path(dirpath) / fn
                name = unescape_name(full.relative_to(self.root).as_posix())
                if name.startswith(prefix):
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue
                    out.append(ObjectInfo(name, st.st_mtime_ns, st.st_size))
        return sorted(out, key=lambda o: o.name)


def clean_leftovers(store: LocalStore, older_than_s: float = LEFTOVER_AGE_S) -> list[str]:
    """Remove what crashed writers left: temp files and staged parts older than
    `older_than_s`. A writer in flight holds its temp file for the length of one write and
    its part for one compose, far below the age; returns what it removed (for the log)."""
    cutoff = time.time() - older_than_s
    removed: list[str] = []
    for leftover in (store.root / _META / "tmp").glob("*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(leftover).st_mtime < cutoff:
                leftover.unlink()
                removed.append(str(leftover.relative_to(store.root)))
    for part in store.list(STAGING_PREFIX):
        if part.generation / 1e9 < cutoff:
            with contextlib.suppress(ObjectNotFound, PreconditionFailed):
                store.delete(part.name, if_generation_match=part.generation)
                removed.append(part.name)
    return removed


def _copy(src: BinaryIO, dst: BinaryIO) -> None:
    while chunk := src.read(_CHUNK):
        dst.write(chunk)


def _chunks_upto(f: BinaryIO, size: int, unchanged: Callable[[], None]) -> Iterator[bytes]:
    remaining = size
    while remaining > 0:
        chunk = f.read(min(_CHUNK, remaining))
        unchanged()  # before any byte of this chunk is handed on (or a short read trusted)
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk
