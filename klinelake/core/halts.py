"""Confirmed-empty ranges (exchange halts) as values: range algebra and the meta object's bytes.

DESIGN.md, contract 4. A range is an inclusive pair of open times `(first, last)` (`Gap`); the
meta object `meta/{market}_{symbol lowercased}_{interval}.empty.jsonl` holds them sorted,
non-overlapping, adjacent ranges coalesced, one compact row each:

    {"from":1679662800000,"to":1679662800000}

Pure: no I/O. The writer (`klinelake.core.halts_writer`) and the readers (`klinelake status`,
`verify`, backfill `--missing-only`, the streamer's repair) all use these functions.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from klinelake.core.errors import InvalidData, InvalidMessage
from klinelake.core.intervals import Gap, check_interval, is_aligned, next_open_time, prev_open_time
from klinelake.core.symbols import validate_symbol

META_PREFIX = "meta/"
META_SUFFIX = ".empty.jsonl"
SPOT_MARKET = "binance"  # the market token of contract 2 (`binance-um`, `binance-cm` later)


def meta_object_name(market: str, symbol: str, interval: str) -> str:
    """`meta/binance_ethusdt_1h.empty.jsonl` (market token as in contract 2)."""
    validate_symbol(symbol)
    check_interval(interval)
    return f"{META_PREFIX}{market}_{symbol.lower()}_{interval}{META_SUFFIX}"


def coalesce(ranges: Iterable[Gap], interval: str) -> list[Gap]:
    """Sorted, with overlapping and adjacent ranges joined (the union of the ranges)."""
    out: list[Gap] = []
    for first, last in sorted(ranges):
        if last < first:
            continue
        if out and first <= next_open_time(out[-1][1], interval):
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def subtract(ranges: Iterable[Gap], holes: Iterable[Gap], interval: str) -> list[Gap]:
    """The parts of `ranges` not covered by `holes` (both inclusive open-time ranges)."""
    cut = coalesce(holes, interval)
    out: list[Gap] = []
    for first, last in coalesce(ranges, interval):
        start = first
        for h_first, h_last in cut:
            if h_last < start or h_first > last:
                continue
            if h_first > start:
                out.append((start, prev_open_time(h_first, interval)))
            start = next_open_time(h_last, interval)
            if start > last:
                break
        if start <= last:
            out.append((start, last))
    return out


def subtract_rows(
    ranges: Sequence[Gap], open_times: Sequence[int], interval: str
) -> tuple[list[Gap], list[int]]:
    """(the ranges without the given row open times, the open times that were under a range).

    Rows win (contract 4): an open time that has a row is never empty. `open_times` ascending.
    """
    under = [t for t in open_times if _covered(ranges, t)]
    if not under:
        return coalesce(ranges, interval), []
    return subtract(ranges, [(t, t) for t in under], interval), under


def _covered(ranges: Sequence[Gap], t: int) -> bool:
    i = bisect.bisect_right(ranges, (t, float("inf"))) - 1
    return i >= 0 and ranges[i][0] <= t <= ranges[i][1]


def check_range(first: object, last: object, interval: str, where: str = "empty") -> Gap:
    """A valid range of `interval`: integer open times, first <= last, aligned to the interval
    (except `3d`, whose anchor Binance does not document: accept what the publisher saw)."""
    if type(first) is not int or type(last) is not int:
        raise InvalidMessage(
            f"{where}: 'from' and 'to' must be integer ms, got {first!r}, {last!r}"
        )
    if last < first:
        raise InvalidMessage(f"{where}: 'to' {last} is before 'from' {first}")
    if first < 0:
        raise InvalidMessage(f"{where}: 'from' {first} is negative")
    if interval != "3d":
        for name, t in (("from", first), ("to", last)):
            if not is_aligned(t, interval):
                raise InvalidMessage(f"{where}: '{name}' {t} is not a {interval} open time")
    return first, last


def ranges_from_json(value: Any, interval: str) -> tuple[Gap, ...]:
    """The message's `"empty": [{"from": MS, "to": MS}, ...]`, validated (any order)."""
    if not isinstance(value, list):
        raise InvalidMessage('\'empty\' must be an array of {"from", "to"} objects')
    out: list[Gap] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"from", "to"}:
            raise InvalidMessage(f"empty[{i}] must be an object with exactly 'from' and 'to'")
        out.append(check_range(item["from"], item["to"], interval, where=f"empty[{i}]"))
    return tuple(out)


def ranges_to_json(ranges: Iterable[Gap]) -> list[dict[str, int]]:
    return [{"from": a, "to": b} for a, b in ranges]


def encode_meta(ranges: Iterable[Gap]) -> bytes:
    """The meta object's bytes: one compact row per range, `\\n` after each; byte-stable."""
    return b"".join(b'{"from":%d,"to":%d}\n' % (a, b) for a, b in ranges)


def decode_meta(data: bytes, interval: str, where: str = "meta object") -> list[Gap]:
    """Parse a meta object; anything but canonical rows raises InvalidData (never guessed)."""
    out: list[Gap] = []
    for n, line in enumerate(data.splitlines(), start=1):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidData(f"{where} line {n}: not JSON: {exc}") from None
        if not isinstance(obj, dict) or set(obj) != {"from", "to"}:
            raise InvalidData(f'{where} line {n}: expected {{"from", "to"}}, got {line!r}')
        try:
            out.append(check_range(obj["from"], obj["to"], interval, where=f"{where} line {n}"))
        except InvalidMessage as exc:
            raise InvalidData(str(exc)) from None
    return coalesce(out, interval)
