"""The small storage interface the lake writer is written against, once, for every backend.

Semantics follow GCS: every object has a `generation` (an integer that changes on every
mutation); `if_generation_match=0` means "only if the object does not exist"; a failed
precondition raises `PreconditionFailed` (HTTP 412). Backends translate their own exceptions
into `klinelake.core.errors` at this edge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, cast

STAGING_PREFIX = "staging/"  # where writers stage parts before composing them onto an object


@dataclass(frozen=True, slots=True)
class Bounds:
    """First and last open_time of an object's rows: kept beside the object where the backend
    can (GCS custom metadata, returned by every stat) so the live path need not read the tail."""

    first: int
    last: int


OptBounds = Bounds | None
Data = bytes | Iterable[bytes]  # a whole object, or its chunks in order
Chunks = Iterable[bytes]
ObjectNames = Sequence[str]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    name: str
    generation: int
    size: int
    bounds: Bounds | None = None  # None: unknown (not recorded, or a backend without metadata)


class ObjectStore(Protocol):
    def stat(self, name: str) -> ObjectInfo | None:
        """Current generation and size, or None if the object does not exist."""

    def read_range(self, name: str, start: int, end: int, generation: int) -> bytes:
        """Bytes [start, end) of that generation, clipped to its size."""

    def open_lines(
        self, name: str, generation: int, start: int = 0
    ) -> AbstractContextManager[Iterator[bytes]]:
        """Stream that generation line by line from byte `start` (a line start; each line ends
        with b"\\n"). A concurrent change to the bytes raises PreconditionFailed."""

    def write(
        self, name: str, data: Data, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        """Create or replace the object from bytes or a stream of chunks, atomically."""

    def replace_from(
        self, name: str, offset: int, data: Chunks, if_generation_match: int, bounds: OptBounds
    ) -> ObjectInfo:
        """Keep bytes [0, offset), replace the rest with `data`, atomically. The local disk does
        it in place (cost O(size - offset)); GCS rewrites the object (it has no partial write)."""

    def compose(
        self, name: str, sources: ObjectNames, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        """Concatenate `sources` (1 to 32 object names, in any order) into `name`."""

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        """Delete the object; missing objects raise ObjectNotFound."""

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose name starts with `prefix`, sorted by name."""


class AppendingStore(ObjectStore, Protocol):
    """A store that adds bytes at the end of an object in place (the local disk). GCS has no
    append: there the writer uploads a part and composes it onto the object."""

    def append(
        self, name: str, data: bytes, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        """What `compose(name, [name, part])` of a part holding `data` makes, atomically,
        without the part (no upload, copy and delete of the batch)."""


def appends_in_place(store: ObjectStore) -> bool:
    return callable(getattr(store, "append", None))


class CountingStore:
    """Wraps a store and counts calls per method: proves e.g. that appends never download."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def stat(self, name: str) -> ObjectInfo | None:
        self.calls["stat"] += 1
        return self.inner.stat(name)

    def read_range(self, name: str, start: int, end: int, generation: int) -> bytes:
        self.calls["read_range"] += 1
        return self.inner.read_range(name, start, end, generation)

    def open_lines(
        self, name: str, generation: int, start: int = 0
    ) -> AbstractContextManager[Iterator[bytes]]:
        self.calls["open_lines"] += 1
        return self.inner.open_lines(name, generation, start)

    def write(
        self, name: str, data: Data, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        self.calls["write"] += 1
        return self.inner.write(name, data, if_generation_match, bounds)

    def replace_from(
        self, name: str, offset: int, data: Chunks, if_generation_match: int, bounds: OptBounds
    ) -> ObjectInfo:
        self.calls["replace_from"] += 1
        return self.inner.replace_from(name, offset, data, if_generation_match, bounds)

    def compose(
        self, name: str, sources: ObjectNames, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        self.calls["compose"] += 1
        return self.inner.compose(name, sources, if_generation_match, bounds)

    def append(
        self, name: str, data: bytes, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        """Only where the wrapped store appends (`appends_in_place(inner)`)."""
        self.calls["append"] += 1
        inner = cast(AppendingStore, self.inner)
        return inner.append(name, data, if_generation_match, bounds)

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        self.calls["delete"] += 1
        self.inner.delete(name, if_generation_match)

    def list(self, prefix: str) -> list[ObjectInfo]:
        self.calls["list"] += 1
        return self.inner.list(prefix)
