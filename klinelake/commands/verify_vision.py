"""`python -m klinelake verify-vision --lake URI`: the lake against Binance's own archives.

For each stream in the lake (or the ones named), the span [first row, last row] is rounded out
to whole UTC days and covered by data.binance.vision archives (`klinelake.core.vision.cover`: whole
months as monthly zips, the days of partial months as daily zips). Each archive is downloaded
and checked against its `.CHECKSUM`, then merge-joined with the lake rows inside the span
(`klinelake.core.archive_diff`): every row that differs, every archive row missing from the lake and
every lake row the archive lacks is reported. An archive that fails its CHECKSUM (or is not a
zip) is a difference too, and its period is not compared. A monthly zip that is a 404 (not
published yet) is replaced by its daily zips; a daily zip that is a 404 leaves its day
`unchecked` (reported, not a failure: the newest day is never published yet). Exit 1 on any
difference. Memory: one archive and one lake row at a time; the archives are fetched in order.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import click
import orjson

from klinelake import config as cfg
from klinelake.backends.lake import open_store, read_lines
from klinelake.binance.vision_client import VisionClient
from klinelake.core.archive_diff import Difference, diff_rows
from klinelake.core.errors import InvalidData, KlineLakeError
from klinelake.core.intervals import DAY, align_down
from klinelake.core.markets import Market
from klinelake.core.row import Kline, parse_lake_line
from klinelake.core.storage import ObjectStore
from klinelake.core.symbols import OBJECT_PREFIX, parse_stream_object, stream_id
from klinelake.core.vision import (
    DAILY_INTERVALS,
    Archive,
    ArchiveError,
    cover,
    day,
)


@dataclass
class StreamCheck:
    stream: str
    rows_compared: int = 0
    archives: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.failing for d in self.differences)


def _rows(store: ObjectStore, name: str, market: Market = Market.SPOT) -> Iterator[Kline]:
    for n, line in enumerate(read_lines(store, name), start=1):
        yield parse_lake_line(line, f"{name} line {n}", market)


def _span(
    store: ObjectStore, name: str, market: Market = Market.SPOT
) -> tuple[str, int, int] | None:
    """(exchange symbol, first open time, last open time) of a lake object, None if empty."""
    first: Kline | None = None
    last = None
    for row in _rows(store, name, market):
        first = first or row
        last = row.open_time
    return None if first is None or last is None else (first.symbol, first.open_time, last)


async def _archives(
    client: VisionClient, archives: list[Archive], check: StreamCheck
) -> AsyncIterator[tuple[Archive, list[Kline]]]:
    """Each archive's verified rows in order; monthly 404s are replaced by their days."""
    for a in archives:
        try:
            rows = await client.fetch(a)
        except (ArchiveError, InvalidData) as exc:
            check.differences.append(Difference(check.stream, "bad_archive", a.start, str(exc)))
            continue
        if rows is not None:
            check.archives += 1
            yield a, rows
        elif a.period == "monthly" and a.interval in DAILY_INTERVALS:
            days = [day(a.symbol, a.interval, t, a.market) for t in range(a.start, a.end, DAY)]
            async for pair in _archives(client, days, check):
                yield pair
        else:
            detail = f"{a.path}: not published (404), not compared"
            check.differences.append(Difference(check.stream, "unchecked", a.start, detail))


async def check_stream(store: ObjectStore, client: VisionClient, name: str) -> StreamCheck | None:
    parsed = parse_stream_object(name)  # any market: futures archives are data/futures/um|cm
    if parsed is None:
        return None
    market, _, interval = parsed
    span = _span(store, name, market)
    if span is None:
        return None
    symbol, first, last = span
    check = StreamCheck(stream_id(symbol, interval, market))
    day_first = first - first % DAY
    day_last = align_down(last - last % DAY + DAY - 1, interval)
    archives, rest = cover(symbol, interval, day_first, day_last, market)
    for lo, hi in rest:  # intervals without daily files: partial months have no archive
        detail = f"open times {lo}..{hi}: no archive covers them, not compared"
        check.differences.append(Difference(check.stream, "unchecked", lo, detail))
    lake = _rows(store, name, market)
    pending: Kline | None = next(lake, None)
    async for archive, archive_rows in _archives(client, archives, check):
        lo, hi = max(archive.start, first), min(archive.end - 1, last)
        while pending is not None and pending.open_time < lo:  # in no archive: not compared
            pending = next(lake, None)
        inside: list[Kline] = []
        while pending is not None and pending.open_time <= hi:
            inside.append(pending)
            pending = next(lake, None)
        theirs = [r for r in archive_rows if lo <= r.open_time <= hi]
        check.rows_compared += len(inside)
        check.differences.extend(diff_rows(check.stream, inside, theirs))
    return check


async def verify_lake(
    lake_uri: str, vision_url: str, streams: tuple[str, ...] = ()
) -> list[StreamCheck]:
    store = open_store(lake_uri)
    client = VisionClient(vision_url)
    wanted = {s.lower() for s in streams}
    checks: list[StreamCheck] = []
    try:
        for info in store.list(OBJECT_PREFIX):
            parsed = parse_stream_object(info.name)
            if parsed is None or (wanted and stream_id(parsed[1], parsed[2], parsed[0]).lower()
                                  not in wanted):  # fmt: skip
                continue
            check = await check_stream(store, client, info.name)
            if check is not None:
                checks.append(check)
    finally:
        await client.aclose()
    return checks


def _as_json(c: StreamCheck) -> dict[str, object]:
    return {
        "stream": c.stream, "ok": c.ok, "rows_compared": c.rows_compared, "archives": c.archives,
        "differences": [
            {"kind": d.kind, "open_time": d.open_time, "detail": d.detail} for d in c.differences
        ],
    }  # fmt: skip


@click.command("verify-vision")
@cfg.option(cfg.LAKE)
@cfg.option(cfg.VISION_URL)
@click.option(
    "--stream", "streams", multiple=True, help="SYMBOL@interval or um:SYMBOL@interval (repeat)"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def verify_vision(lake: str, vision_url: str, streams: tuple[str, ...], as_json: bool) -> None:
    """Compare the lake with the data.binance.vision archives; exit 1 on any difference."""
    try:
        checks = asyncio.run(verify_lake(lake, vision_url, streams))
    except KlineLakeError as exc:
        click.echo(f"verify-vision: {type(exc).__name__}: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(orjson.dumps([_as_json(c) for c in checks], option=orjson.OPT_INDENT_2))
    else:
        for c in checks:
            for d in c.differences:
                click.echo(f"{c.stream}\t{d.kind}\t{d.open_time}\t{d.detail}")
    bad = [c for c in checks if not c.ok]
    for c in checks:
        failing = sum(d.failing for d in c.differences)
        click.echo(f"{c.stream}: {c.rows_compared} lake rows against {c.archives} archive(s), "
                   f"{failing} difference(s)", err=True)  # fmt: skip
    if bad:
        click.echo(f"verify-vision: {len(bad)} of {len(checks)} stream(s) differ from the "
                   "archives", err=True)  # fmt: skip
        sys.exit(1)
    click.echo(f"verify-vision: {len(checks)} stream(s) match the archives", err=True)
