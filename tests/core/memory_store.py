"""An in-memory ObjectStore with GCS's semantics, for fast property tests of the writer:
generations on every mutation, a 412 on a failed precondition, a 404 when a generation that
is no longer current is read (a bucket without versioning), compose in any source order,
custom metadata (the bounds) returned by stat, and no partial writes
(`replace_from` rewrites the whole object, as GCSStore does)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

from klinelake.core.errors import ObjectNotFound, PreconditionFailed
from klinelake.core.merge import split_lines
from klinelake.core.storage import Bounds, Chunks, Data, ObjectInfo, ObjectNames, OptBounds


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[int, bytes, Bounds | None]] = {}
        self._generations = itertools.count(1000)
        self.bytes_read = 0  # what readers were handed: proves a route never passes the object

    def _current(self, name: str, generation: int) -> bytes:
        have = self.objects.get(name)
        if have is None or have[0] != generation:
            raise ObjectNotFound(f"{name}#{generation}")
        return have[1]

    def _put(self, name: str, data: bytes, expected: int, bounds: Bounds | None) -> ObjectInfo:
        have = self.objects.get(name)
        if (have[0] if have else 0) != expected:
            raise PreconditionFailed(f"{name}: 412")
        gen = next(self._generations)
        self.objects[name] = (gen, data, bounds)
        return ObjectInfo(name, gen, len(data), bounds)

    def stat(self, name: str) -> ObjectInfo | None:
        have = self.objects.get(name)
        return None if have is None else ObjectInfo(name, have[0], len(have[1]), have[2])

    def read_range(self, name: str, start: int, end: int, generation: int) -> bytes:
        data = self._current(name, generation)[max(0, start) : max(0, end)]
        self.bytes_read += len(data)
        return data

    @contextlib.contextmanager
    def open_lines(self, name: str, generation: int, start: int = 0) -> Iterator[Iterator[bytes]]:
        data = self._current(name, generation)
        yield split_lines(self._counted(data[i : i + 7]) for i in range(start, len(data), 7))

    def _counted(self, chunk: bytes) -> bytes:  # odd-sized chunks: rows straddle them
        self.bytes_read += len(chunk)
        return chunk

    def write(
        self, name: str, data: Data, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        body = data if isinstance(data, bytes) else b"".join(data)
        return self._put(name, body, if_generation_match, bounds)

    def replace_from(
        self, name: str, offset: int, data: Chunks, if_generation_match: int, bounds: OptBounds
    ) -> ObjectInfo:
        head = self._current(name, if_generation_match)[:offset]
        return self._put(name, head + b"".join(data), if_generation_match, bounds)

    def compose(
        self, name: str, sources: ObjectNames, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        if not 1 <= len(sources) <= 32:
            raise ValueError("compose takes 1 to 32 sources")
        body = b""
        for src in sources:
            if src not in self.objects:
                raise ObjectNotFound(src)
            body += self.objects[src][1]
        return self._put(name, body, if_generation_match, bounds)

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        have = self.objects.get(name)
        if have is None:
            raise ObjectNotFound(name)
        if if_generation_match is not None and have[0] != if_generation_match:
            raise PreconditionFailed(f"{name}: 412")
        del self.objects[name]

    def list(self, prefix: str) -> list[ObjectInfo]:
        return [
            ObjectInfo(n, g, len(d), b)
            for n, (g, d, b) in sorted(self.objects.items())
            if n.startswith(prefix)
        ]
