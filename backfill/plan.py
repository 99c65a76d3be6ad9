"""The backfill plan (pure): which pages to fetch for which streams, from interval arithmetic.

A page is one `GET /api/v3/klines` request: `[start, end]` (ms, inclusive, selecting klines by
open time, binance-spot-api.md §6) covering at most `page_limit` open times. Pages sit on a
fixed grid per stream (cell k covers the `page_limit` open times from anchor + k·limit·interval),
clipped to the wanted ranges, so the same page has the same key whatever range a run asks for,
and a re-run after a crash recognises the pages it finished.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from klinelake.core.intervals import (
    Gap,
    _month_index,  # the calendar-month helpers of the shared interval arithmetic
    _month_start,
    align_down,
    count_between,
    grid_anchor,
    interval_ms,
    next_open_time,
)
from klinelake.core.markets import Market, page_bars, spec
from klinelake.core.symbols import stream_id

MAX_PAGE_LIMIT = 1000
_MONTHS_EPOCH_INDEX = 1970 * 12


@dataclass(frozen=True, slots=True)
class Page:
    symbol: str
    interval: str
    start: int  # first open time requested (ms)
    end: int  # request endTime (ms, inclusive)
    expected: int  # open times in [start, end] on the interval grid
    market: Market = Market.SPOT

    @property
    def stream(self) -> str:
        return stream_id(self.symbol, self.interval, self.market)

    @property
    def key(self) -> str:
        return f"{self.stream}:{self.start}:{self.end}"


@dataclass(frozen=True, slots=True)
class StreamPlan:
    symbol: str
    interval: str
    first: int  # first open time of the range (ms)
    last: int  # last open time of the range (ms)
    pages: tuple[Page, ...]
    market: Market = Market.SPOT

    @property
    def stream(self) -> str:
        return stream_id(self.symbol, self.interval, self.market)

    @property
    def rows_expected(self) -> int:
        return sum(p.expected for p in self.pages)


@dataclass(frozen=True, slots=True)
class Plan:
    streams: tuple[StreamPlan, ...]
    page_limit: int
    market: Market = Market.SPOT

    @property
    def pages(self) -> list[Page]:
        """Every page, interleaved across streams (round robin) so all streams progress."""
        out: list[Page] = []
        longest = max((len(s.pages) for s in self.streams), default=0)
        for i in range(longest):
            out.extend(s.pages[i] for s in self.streams if i < len(s.pages))
        return out

    def pages_to_emit(self, newest_first: bool) -> list[Page]:
        """Every page in the order the run fetches and emits it: streams interleaved, each
        stream oldest first, or newest first where the lake prepends cheaply (GCS compose: every
        batch then lies before the object's first row, O(batch); sink.history_newest_first)."""
        if not newest_first:
            return self.pages
        return Plan(
            tuple(replace(s, pages=s.pages[::-1]) for s in self.streams), self.page_limit
        ).pages

    @property
    def page_count(self) -> int:
        return sum(len(s.pages) for s in self.streams)

    @property
    def rows_expected(self) -> int:
        return sum(s.rows_expected for s in self.streams)

    @property
    def weight(self) -> int:
        return self.page_count * spec(self.market).weight_for_limit(self.page_limit)


def first_open_at_or_after(ms: int, interval: str) -> int:
    aligned = align_down(ms, interval)
    return aligned if aligned == ms else next_open_time(aligned, interval)


def _cell(open_time: int, interval: str, page_limit: int) -> tuple[int, int]:
    """(first open time, next cell's first open time) of the grid cell holding `open_time`."""
    if interval == "1M":
        first_index = _month_index(open_time)
        start_index = first_index - (first_index - _MONTHS_EPOCH_INDEX) % page_limit
        start = _month_start(start_index)
        return start, _month_start(start_index + page_limit)
    step = interval_ms(interval)
    anchor = grid_anchor(interval)  # Monday for weeks
    span = step * page_limit
    start = open_time - (open_time - anchor) % span
    return start, start + span


def plan_ranges(
    symbol: str,
    interval: str,
    ranges: Iterable[Gap],
    page_limit: int = MAX_PAGE_LIMIT,
    market: Market = Market.SPOT,
) -> list[Page]:
    """Pages covering each inclusive open-time range, on the page grid (COIN-M pages hold at
    most 200 days: klinelake.core.markets.page_bars)."""
    ceiling = spec(market).max_limit
    if not 1 <= page_limit <= ceiling:
        raise ValueError(f"page limit must be 1..{ceiling}, got {page_limit}")
    bars = page_bars(market, interval, page_limit)
    pages: list[Page] = []
    for first, last in ranges:
        t = first
        while t <= last:
            _, next_cell = _cell(t, interval, bars)
            end = min(last, next_cell - 1)
            expected = count_between(t, align_down(end, interval), interval)
            pages.append(Page(symbol, interval, t, end, expected, market))
            t = next_cell
    return pages


def plan_stream(
    symbol: str,
    interval: str,
    first: int,
    last: int,
    *,
    page_limit: int = MAX_PAGE_LIMIT,
    missing: Sequence[Gap] | None = None,
    market: Market = Market.SPOT,
) -> StreamPlan:
    """Pages for open times [first, last]; only the `missing` ranges if given."""
    ranges: Sequence[Gap] = [(first, last)] if missing is None else missing
    pages = tuple(plan_ranges(symbol, interval, ranges, page_limit, market))
    return StreamPlan(symbol, interval, first, last, pages, market)


def plan_identity(sink: str, page_limit: int, source: str) -> str:
    """What a checkpoint is keyed by: the same pages written to the same place the same way."""
    text = f"{source}|{sink}|{page_limit}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
