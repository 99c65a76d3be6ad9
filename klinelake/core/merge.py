"""Merging a batch into an object's rows (pure: lines in, lines out, streaming).

Lines are canonical lake rows (`Kline.to_line()`), ascending and unique by open_time. For the
same open_time the batch wins; identical rows are no-ops. Both functions consume the object's
lines lazily, so memory is bounded by the batch, never by the object.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from klinelake.core.errors import KlineLakeError
from klinelake.core.row import Kline, lake_lines, open_time_of_line, open_times

Pairs = Sequence[tuple[int, bytes]]  # (open_time, line), ascending and unique


class CorruptObject(KlineLakeError):
    """An object breaks the lake invariant (unsorted, duplicated or non-canonical rows)."""


@dataclass(frozen=True, slots=True)
class MergeStats:
    added: int
    replaced: int
    unchanged: int

    @property
    def changes(self) -> bool:
        return self.added > 0 or self.replaced > 0

    def __add__(self, other: MergeStats) -> MergeStats:
        return MergeStats(
            self.added + other.added, self.replaced + other.replaced,
            self.unchanged + other.unchanged,
        )  # fmt: skip


class BatchLines(Sequence[tuple[int, bytes]]):
    """A batch's rows as (open_time, line) pairs, held as two lists: the writer's usual routes
    (create, append, prepend) need only the first and last open times and the joined lines, so
    no pair is built per row (issue 15); a merge reads pairs."""

    __slots__ = ("lines", "times")

    def __init__(self, times: Sequence[int], lines: Sequence[bytes]) -> None:
        if len(times) != len(lines):
            raise ValueError("times and lines differ in length")
        self.times, self.lines = times, lines

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, index: int) -> tuple[int, bytes]: ...
    @overload
    def __getitem__(self, index: slice) -> BatchLines: ...
    def __getitem__(self, index: int | slice) -> tuple[int, bytes] | BatchLines:
        if isinstance(index, slice):
            return BatchLines(self.times[index], self.lines[index])
        return self.times[index], self.lines[index]

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return zip(self.times, self.lines, strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compared by value, like the list it replaces

    def body(self) -> bytes:
        """The lines joined: the bytes the rows take in an object."""
        return b"".join(self.lines)


def batch_lines(rows: Sequence[Kline]) -> BatchLines:
    return BatchLines(open_times(rows), lake_lines(rows))


def _ordered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    prev = -1
    for line in lines:
        t = open_time_of_line(line)
        if t <= prev:
            raise CorruptObject(f"object rows not ascending/unique at open_time {t}")
        prev = t
        yield t, line


def diff_batch(existing: Iterable[bytes], batch: Pairs) -> MergeStats:
    """What merging `batch` would change; stops reading once past the batch's last row."""
    if not batch:
        return MergeStats(0, 0, 0)
    wanted = dict(batch)
    last = batch[-1][0]
    replaced = unchanged = 0
    for t, line in _ordered(existing):
        if t > last:
            break
        new = wanted.get(t)
        if new is not None:
            if new == line:
                unchanged += 1
            else:
                replaced += 1
    added = len(batch) - replaced - unchanged
    return MergeStats(added, replaced, unchanged)


def merge_lines(existing: Iterable[bytes], batch: Pairs) -> Iterator[bytes]:
    """All rows of object ∪ batch, ascending, one per open_time, the batch winning."""
    i, n = 0, len(batch)
    it = iter(existing)
    for t, line in _ordered(it):
        while i < n and batch[i][0] < t:
            yield batch[i][1]
            i += 1
        if i < n and batch[i][0] == t:
            yield batch[i][1]
            i += 1
        else:
            yield line
        if i == n:
            break
    else:
        while i < n:
            yield batch[i][1]
            i += 1
        return
    yield from it  # past the batch: the rest of the object is copied as it is


def chunked(lines: Iterable[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Group lines into ~`size`-byte chunks so storage writes are few and large."""
    buf: list[bytes] = []
    n = 0
    for line in lines:
        buf.append(line)
        n += len(line)
        if n >= size:
            yield b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (each ending in b"\\n") out of byte chunks: one C-speed `split` per chunk, never a
    read per line. A last line without its newline is yielded as it is."""
    pending = b""
    for chunk in chunks:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


def first_line(head: bytes) -> bytes | None:
    """The first complete line of bytes that start at a line start, or None if none is whole."""
    cut = head.find(b"\n")
    return None if cut < 0 else head[: cut + 1]


def last_line(tail: bytes) -> bytes | None:
    """The last complete line of an object's tail, or None if the tail holds no whole line."""
    body = tail[:-1] if tail.endswith(b"\n") else tail
    cut = body.rfind(b"\n")
    if cut < 0:
        return None
    return body[cut + 1 :] + b"\n"
