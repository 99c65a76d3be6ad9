"""Interval arithmetic for Binance's 16 kline intervals (pure, UTC, integer milliseconds).

Fixed-length intervals are anchored at the Unix epoch, except `1w`, which opens on Monday
00:00 UTC (the REST doc example: a 1w bar from Monday 2017-07-03), and `1M`, which opens on
the first day of each calendar month. `3d` is anchored at the epoch here, but Binance does not
document its anchor (DESIGN.md: accept what Binance sends), so `GRID_UNDOCUMENTED` names the
intervals whose alignment nothing may check or infer holes from: the one home of that rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from klinelake.core.errors import InvalidInterval

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
# 1970-01-01 was a Thursday; the first Monday 00:00 UTC after the epoch is 1970-01-05.
WEEK_ANCHOR_MS = 4 * DAY

INTERVALS: tuple[str, ...] = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
    "1d", "3d", "1w", "1M",
)  # fmt: skip

_FIXED_MS: dict[str, int] = {
    "1s": SECOND,
    "1m": MINUTE,
    "3m": 3 * MINUTE,
    "5m": 5 * MINUTE,
    "15m": 15 * MINUTE,
    "30m": 30 * MINUTE,
    "1h": HOUR,
    "2h": 2 * HOUR,
    "4h": 4 * HOUR,
    "6h": 6 * HOUR,
    "8h": 8 * HOUR,
    "12h": 12 * HOUR,
    "1d": DAY,
    "3d": 3 * DAY,
    "1w": WEEK,
}

# Typical length, for sizing plans (pages, weight). Exact for all but 1M.
NOMINAL_MS: dict[str, int] = {**_FIXED_MS, "1M": 30 * DAY}

# Intervals whose grid anchor Binance does not document: rows are not checked for alignment
# and no hole is inferred from our grid (a gap check or halt inference would be guessing).
GRID_UNDOCUMENTED: frozenset[str] = frozenset({"3d"})


def grid_anchor(interval: str) -> int:
    """The instant (ms) a fixed interval's grid starts from: Monday 1970-01-05 for 1w, else 0."""
    return WEEK_ANCHOR_MS if interval == "1w" else 0


def grid_is_documented(interval: str) -> bool:
    return interval not in GRID_UNDOCUMENTED


def check_interval(interval: str) -> str:
    if interval not in NOMINAL_MS:
        raise InvalidInterval(
            f"invalid interval {interval!r}: expected one of {' '.join(INTERVALS)} "
            "(case-sensitive: 1m is a minute, 1M a month)"
        )
    return interval


def interval_ms(interval: str) -> int:
    """Length of a fixed interval in ms; `1M` has no fixed length and raises."""
    check_interval(interval)
    if interval == "1M":
        raise InvalidInterval("1M has no fixed length; use next_open_time()")
    return _FIXED_MS[interval]


def _month_index(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return d.year * 12 + (d.month - 1)


def _month_start(index: int) -> int:
    year, month0 = divmod(index, 12)
    return int(datetime(year, month0 + 1, 1, tzinfo=UTC).timestamp()) * 1000


def align_down(ms: int, interval: str) -> int:
    """Open time of the kline that contains instant `ms`."""
    check_interval(interval)
    if interval == "1M":
        return _month_start(_month_index(ms))
    return ms - ((ms - grid_anchor(interval)) % _FIXED_MS[interval])


def is_aligned(ms: int, interval: str) -> bool:
    return align_down(ms, interval) == ms


def next_open_time(open_time: int, interval: str) -> int:
    check_interval(interval)
    if interval == "1M":
        return _month_start(_month_index(open_time) + 1)
    return open_time + _FIXED_MS[interval]


def prev_open_time(open_time: int, interval: str) -> int:
    check_interval(interval)
    if interval == "1M":
        return _month_start(_month_index(open_time) - 1)
    return open_time - _FIXED_MS[interval]


def close_time(open_time: int, interval: str) -> int:
    """The regular close time: next open − 1 ms."""
    return next_open_time(open_time, interval) - 1


def open_times(first: int, last: int, interval: str) -> Iterator[int]:
    """Every open time from `first` to `last` inclusive (`first` must be an open time)."""
    t = first
    while t <= last:
        yield t
        t = next_open_time(t, interval)


def count_between(first: int, last: int, interval: str) -> int:
    """How many open times lie in [first, last] (both open times), without iterating."""
    if last < first:
        return 0
    if interval == "1M":
        return _month_index(last) - _month_index(first) + 1
    return (last - first) // _FIXED_MS[interval] + 1


def last_closed_open_time(now_ms: int, interval: str) -> int:
    """Open time of the newest kline that has closed at instant `now_ms`."""
    return prev_open_time(align_down(now_ms, interval), interval)


Gap = tuple[int, int]
"""An inclusive range of missing open times: (first missing, last missing)."""


def find_gaps(present: Iterable[int], first: int, last: int, interval: str) -> list[Gap]:
    """Missing open times in [first, last], as inclusive ranges, from ascending `present`.

    `present` may contain values outside the bounds and repeated values; it must be ascending.
    Steps follow the interval grid anchored at `first`, so `3d` works whatever Binance's anchor.
    """
    step = _FIXED_MS.get(interval)
    if isinstance(present, list) and step and present == list(range(first, last + 1, step)):
        return []  # a complete answer (the common case): one C-level comparison, not a walk
    gaps: list[Gap] = []
    expected = first
    for t in present:
        if t < expected:
            continue
        if t > last:
            break
        if t > expected:
            gaps.append((expected, prev_open_time(t, interval)))
        expected = next_open_time(t, interval)
    if expected <= last:
        gaps.append((expected, last))
    return gaps
