"""Writing confirmed-empty ranges into the stream's meta object (DESIGN.md, contract 4).

`write_empty` stores the union of what the meta object holds and what arrives, under the same
rules as rows: a generation precondition on every write (`if_generation_match=0` to create),
412s re-read and retried by the lake writer's own retry loop (`LakeWriter.retrying`), and a
batch that changes nothing writes nothing (the generation stays).

Rows win: the open times of the incoming ranges that have a row in the stream's rows object are
dropped with a warning, never stored. Finding them reads only the rows around the ranges:
1. the object's tail, growing ×4 from 64 KiB up to 4 MiB, until it reaches back past the first
   incoming range (the live case: a halt confirmed just before the newest rows);
2. otherwise the object streamed from its head, stopping at the first row past the last range
   (the backfill case: a halt in history).
So the cost is bounded by the object's size and is usually a few KiB; meta writes are rare (a
few halts a year per stream). Rows and meta are two objects: GCS has no precondition across
both, so a row written after this check can still land under a stored range. Readers therefore
ignore any range under a row (`klinelake status` does), as contract 4 says.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from klinelake.halts import (
    SPOT_MARKET,
    coalesce,
    decode_meta,
    encode_meta,
    meta_object_name,
    subtract_rows,
)
from klinelake.intervals import Gap
from klinelake.logs import log_event
from klinelake.row import open_time_of_line
from klinelake.storage import ObjectStore
from klinelake.symbols import object_name

if TYPE_CHECKING:
    from klinelake.writer import LakeWriter

log = logging.getLogger("klinelake.halts")
_TAIL_FIRST = 64 * 1024
_TAIL_MAX = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HaltsResult:
    object_name: str
    action: Literal["create", "merge", "noop"]
    ranges_in: int
    ranges_stored: int  # in the object after the write
    dropped_under_rows: int  # open times of incoming ranges that have a row
    generation_before: int | None
    generation_after: int | None

    def log_fields(self) -> dict[str, object]:
        return {
            "halts_object": self.object_name,
            "halts_action": self.action,
            "halts_in": self.ranges_in,
            "halts_stored": self.ranges_stored,
            "halts_dropped_under_rows": self.dropped_under_rows,
            "halts_generation_after": self.generation_after,
        }


def read_empty(
    store: ObjectStore, symbol: str, interval: str, market: str = SPOT_MARKET
) -> list[Gap]:
    """The stream's stored ranges ([] if there is no meta object)."""
    name = meta_object_name(market, symbol, interval)
    info = store.stat(name)
    if info is None:
        return []
    return _read_meta(store, name, info.generation, interval)


def write_empty(
    writer: LakeWriter,
    symbol: str,
    interval: str,
    ranges: Iterable[Gap],
    market: str = SPOT_MARKET,
) -> HaltsResult:
    """Merge `ranges` into the stream's meta object (rows win); see the module docstring."""
    name = meta_object_name(market, symbol, interval)
    rows_name = object_name(symbol, interval)  # the market threads through here with futures
    incoming = coalesce(ranges, interval)
    store = writer.store

    def attempt(retries: int) -> HaltsResult:
        under = rows_in_span(store, rows_name, incoming[0][0], incoming[-1][1]) if incoming else []
        kept, dropped = subtract_rows(incoming, under, interval)
        if dropped:
            log_event(
                log, "WARNING", f"{name}: empty range(s) under existing rows dropped (rows win)",
                object=name, open_times=dropped[:10], dropped=len(dropped),
            )  # fmt: skip
        info = store.stat(name)
        gen = None if info is None else info.generation
        existing = [] if gen is None else _read_meta(store, name, gen, interval)
        merged = coalesce([*existing, *kept], interval)
        n_in, n_dropped = len(incoming), len(dropped)
        if merged == existing:
            return HaltsResult(name, "noop", n_in, len(merged), n_dropped, gen, gen)
        after = store.write(name, encode_meta(merged), if_generation_match=gen or 0)
        action: Literal["create", "merge"] = "create" if gen is None else "merge"
        return HaltsResult(name, action, n_in, len(merged), n_dropped, gen, after.generation)

    return writer.retrying(name, attempt)


def _read_meta(store: ObjectStore, name: str, generation: int, interval: str) -> list[Gap]:
    with store.open_lines(name, generation) as lines:
        return decode_meta(b"".join(lines), interval, where=name)


def rows_in_span(store: ObjectStore, name: str, lo: int, hi: int) -> list[int]:
    """Ascending open times of the rows with lo <= open_time <= hi (see the module docstring)."""
    info = store.stat(name)
    if info is None or info.size == 0:
        return []
    nbytes = _TAIL_FIRST
    while nbytes <= _TAIL_MAX:
        tail = store.read_tail(name, nbytes, info.generation)
        whole = len(tail) >= info.size
        lines = tail.split(b"\n")[:-1]  # every line ends with \n: the last piece is empty
        if not whole:
            lines = lines[1:]  # the first piece may be cut
        times = [open_time_of_line(ln + b"\n") for ln in lines]
        if whole or (times and times[0] <= lo):
            return [t for t in times if lo <= t <= hi]
        nbytes *= 4
    out: list[int] = []
    with store.open_lines(name, info.generation) as stream:
        for line in stream:
            t = open_time_of_line(line)
            if t > hi:
                break
            if t >= lo:
                out.append(t)
    return out
