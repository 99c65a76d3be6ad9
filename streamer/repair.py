"""Gap repair over REST (binance-spot-api.md §6): which open times are missing, and fetching them.

A stream's published history must be contiguous up to what it sends next. The missing ranges are
the gaps between the last published kline, the spooled ones and the target (the newest kline
closed by server time); the sender fetches them through the core's REST range pager
(`klinelake.core.publish.fetch_range`) into the spool, in order. What REST does not return for a
closed range does not exist (a halt or an exchange outage):
`klinelake.core.publish.confirmed_empty`.
"""

from __future__ import annotations

from collections.abc import Iterable

from klinelake.core.intervals import Gap, find_gaps, next_open_time


def history_head(
    last_published: int | None, first_spooled: int | None, interval: str
) -> int | None:
    """The first open time the published history must contain next: after the last published
    kline, or (nothing published yet) the first spooled one; None when there is neither."""
    if last_published is not None:
        return next_open_time(last_published, interval)
    return first_spooled


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
    head = history_head(last_published, first_spooled, interval)
    if head is None or target < head:
        return []
    return find_gaps(spooled, head, target, interval)
