"""Gap repair over REST (binance-spot-api.md §6): which open times are missing, and fetching them.

A stream's published history must be contiguous up to what it sends next. The missing ranges are
the gaps between the last published kline, the spooled ones and the target (the newest kline
closed by server time); they are fetched with the shared weight-aware REST client, page by page
(1000 rows), and handed to `store` (the spool) in order. What REST does not return for a closed
range does not exist (a halt or an exchange outage): those ranges are confirmed empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from klinelake.intervals import Gap, find_gaps, next_open_time
from klinelake.row import Kline

PAGE = 1000


class KlineSource(Protocol):
    async def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = PAGE
    ) -> list[Kline]: ...


def plan_gaps(
    *,
    last_published: int | None,
    spooled: Iterable[int],
    first_spooled: int | None,
    target: int,
    interval: str,
) -> list[Gap]:
    """Missing open times in (last published, target] given the spooled ones (ascending).

    With nothing published yet, history starts at the first spooled kline (the streamer does not
    backfill: that is `python -m backfill`'s job)."""
    if last_published is not None:
        head = next_open_time(last_published, interval)
    elif first_spooled is not None:
        head = first_spooled
    else:
        return []
    if target < head:
        return []
    return find_gaps(spooled, head, target, interval)


async def fetch_gap(
    rest: KlineSource,
    *,
    symbol: str,
    interval: str,
    gap: Gap,
    closed_upto: int,
    store: Callable[[list[Kline]], object],
) -> int:
    """Fetch every closed kline in the inclusive range `gap` (bounded by `closed_upto`, the
    newest closed open_time) and pass them to `store` a page at a time. Returns the row count."""
    first, last = gap[0], min(gap[1], closed_upto)
    total = 0
    start = first
    while start <= last:
        page = await rest.klines(symbol, interval, start, last, PAGE)
        rows = [k for k in page if start <= k.open_time <= last]
        if rows:
            store(rows)
            total += len(rows)
        # Not `len(page) < PAGE`: a COIN-M page can hold fewer bars (200 days) with more to come.
        if not rows or rows[-1].open_time >= last:
            break
        start = next_open_time(rows[-1].open_time, interval)
    return total
