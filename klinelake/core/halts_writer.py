"""Writing confirmed-empty ranges into the stream's meta object (DESIGN.md, contract 4).

`write_empty` stores the union of what the meta object holds and what arrives, under the same
rules as rows: a generation precondition on every write (`if_generation_match=0` to create),
412s re-read and retried by the lake writer's own retry loop (`LakeWriter.retry_conditional`), and a
batch that changes nothing writes nothing (the generation stays).

Rows win: the open times of the incoming ranges that have a row in the stream's rows object are
dropped with a warning, never stored. Finding them reads only the rows inside the ranges' span:
the writer's binary search over ranged reads finds the first row at or after the span's start
(O(log size) probes; nothing at all when the object's recorded bounds lie outside the span), then
the rows are streamed until the first one past the span. Meta writes are rare (a few halts a
year per stream). Rows and meta are two objects: GCS has no precondition across both, so a row
written after this check can still land under a stored range. Readers therefore ignore any
range under a row (`klinelake status` does), as contract 4 says.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from klinelake.core.errors import InvalidData
from klinelake.core.halts import (
    SPOT_MARKET,
    coalesce,
    decode_meta,
    encode_meta,
    meta_object_name,
    subtract_rows,
)
from klinelake.core.intervals import Gap
from klinelake.core.markets import market_of_token
from klinelake.core.row import open_time_of_line
from klinelake.core.storage import ObjectStore
from klinelake.core.symbols import object_name
from klinelake.core.writer import LakeWriter, _offset_of
from klinelake.logs import log_event

log = logging.getLogger("klinelake.halts")


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
    rows_market = market_of_token(market)
    if rows_market is None:
        raise InvalidData(f"{market!r} is not a market token (binance, binance-um, binance-cm)")
    rows_name = object_name(symbol, interval, rows_market)
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

    return writer.retry_conditional(name, attempt)


def _read_meta(store: ObjectStore, name: str, generation: int, interval: str) -> list[Gap]:
    with store.open_lines(name, generation) as lines:
        return decode_meta(b"".join(lines), interval, where=name)


def rows_in_span(store: ObjectStore, name: str, lo: int, hi: int) -> list[int]:
    """Ascending open times of the rows with lo <= open_time <= hi (see the module docstring)."""
    info = store.stat(name)
    if info is None or info.size == 0:
        return []
    if info.bounds is not None and (hi < info.bounds.first or lo > info.bounds.last):
        return []
    out: list[int] = []
    with store.open_lines(name, info.generation, _offset_of(store, info, lo)) as lines:
        for line in lines:
            t = open_time_of_line(line)
            if t > hi:
                break
            out.append(t)
    return out
