"""The small storage interface the lake writer is written against, once, for every backend.

Semantics follow GCS: every object has a `generation` (an integer that changes on every
mutation); `if_generation_match=0` means "only if the object does not exist"; a failed
precondition raises `PreconditionFailed` (HTTP 412). Backends translate their own exceptions
into `klinelake.errors` at this edge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    name: str
    generation: int
    size: int


class ObjectStore(Protocol):
    def stat(self, name: str) -> ObjectInfo | None:
        """Current generation and size, or None if the object does not exist."""

    def read_tail(self, name: str, nbytes: int, generation: int) -> bytes:
        """The last `nbytes` of that generation (fewer if the object is smaller)."""

    def open_lines(self, name: str, generation: int) -> AbstractContextManager[Iterator[bytes]]:
        """Stream that generation line by line (each line ends with b"\\n")."""

    def write(
        self, name: str, data: bytes | Iterable[bytes], if_generation_match: int
    ) -> ObjectInfo:
        """Create or replace the object from bytes or a stream of chunks, atomically."""

    def compose(self, name: str, sources: Sequence[str], if_generation_match: int) -> ObjectInfo:
        """Concatenate `sources` (1 to 32 object names) into `name`."""

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        """Delete the object; missing objects raise ObjectNotFound."""

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose name starts with `prefix`, sorted by name."""


class CountingStore:
    """Wraps a store and counts calls per method: proves e.g. that appends never download."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def stat(self, name: str) -> ObjectInfo | None:
        self.calls["stat"] += 1
        return self.inner.stat(name)

    def read_tail(self, name: str, nbytes: int, generation: int) -> bytes:
        self.calls["read_tail"] += 1
        return self.inner.read_tail(name, nbytes, generation)

    def open_lines(self, name: str, generation: int) -> AbstractContextManager[Iterator[bytes]]:
        self.calls["open_lines"] += 1
        return self.inner.open_lines(name, generation)

    def write(
        self, name: str, data: bytes | Iterable[bytes], if_generation_match: int
    ) -> ObjectInfo:
        self.calls["write"] += 1
        return self.inner.write(name, data, if_generation_match)

    def compose(self, name: str, sources: Sequence[str], if_generation_match: int) -> ObjectInfo:
        self.calls["compose"] += 1
        return self.inner.compose(name, sources, if_generation_match)

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        self.calls["delete"] += 1
        self.inner.delete(name, if_generation_match)

    def list(self, prefix: str) -> list[ObjectInfo]:
        self.calls["list"] += 1
        return self.inner.list(prefix)
