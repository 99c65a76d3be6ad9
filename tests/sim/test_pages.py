"""Pre-rendered REST pages are byte-identical to the pages `select` would render (pure)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from binance_sim.market import Halt, Market, SyntheticSpec, load_dir, rest_row

from .conftest import BUNDLED, JAN_START

HOUR = 3_600_000
DAY = 24 * HOUR
NOW = JAN_START + 400 * DAY  # 2023-02: the bundled 2022-01 and 2023-05 files straddle it


def market(halts: list[Halt]) -> Market:
    synthetic = [SyntheticSpec("BTCUSDT", iv, JAN_START - 20 * DAY) for iv in ("1m", "1w", "3d")]
    m = Market(load_dir(BUNDLED), synthetic, page_cache_bytes=2_000_000)  # evictions happen
    for h in halts:
        m.add_halt(h)
    return m


def expected(
    m: Market, interval: str, now: int, *, start: int, end: int | None, limit: int
) -> bytes:
    rows = m.select("BTCUSDT", interval, now, start=start, end=end, limit=limit)
    return orjson.dumps([rest_row(k, False) for k in rows])


requests = st.lists(
    st.tuples(
        st.sampled_from(["1m", "1h", "1w", "3d", "1M"]),
        st.integers(JAN_START - 30 * DAY, NOW + DAY),  # start
        st.one_of(st.none(), st.integers(0, 800 * DAY)),  # end - start
        st.integers(1, 1000),  # limit
        st.integers(-2 * DAY, 2 * DAY),  # now - NOW
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(requests, st.lists(st.tuples(st.integers(0, 60), st.integers(0, 3 * DAY)), max_size=2))
def test_cached_pages_equal_rendered_selections(
    reqs: list[tuple[str, int, int | None, int, int]], halt_at: list[tuple[int, int]]
) -> None:
    m = market([])
    for n, (interval, start, span, limit, skew) in enumerate(reqs):
        if n == len(reqs) // 2:  # halts added while pages are cached
            for day, length in halt_at:
                t = JAN_START + day * DAY
                m.add_halt(Halt("BTCUSDT", interval, t, t + length))
        now = NOW + skew
        end = None if span is None else start + span
        page = m.closed_page_json("BTCUSDT", interval, now, start=start, end=end, limit=limit)
        if page is not None:
            assert page == expected(m, interval, now, start=start, end=end, limit=limit)


def test_a_history_page_is_served_from_the_cache() -> None:
    m = market([])
    args: dict[str, Any] = {"start": JAN_START, "end": None, "limit": 1000}
    first = m.closed_page_json("BTCUSDT", "1m", NOW, **args)
    assert first is not None and len(orjson.loads(first)) == 1000
    assert first == expected(m, "1m", NOW, **args)
    assert m.closed_page_json("BTCUSDT", "1m", NOW, **args) == first
    # the page holding the forming kline is not cached: select renders it (partial)
    assert m.closed_page_json("BTCUSDT", "1m", NOW, start=NOW - 60_000, end=None, limit=5) is None


def test_a_halt_added_later_reaches_cached_pages() -> None:
    m = market([])
    args: dict[str, Any] = {"start": JAN_START, "end": JAN_START + DAY, "limit": 1000}
    before = m.closed_page_json("BTCUSDT", "1m", NOW, **args)
    m.add_halt(Halt("BTCUSDT", "1m", JAN_START + HOUR, JAN_START + 2 * HOUR))
    after = m.closed_page_json("BTCUSDT", "1m", NOW, **args)
    assert after != before and after == expected(m, "1m", NOW, **args)


def test_a_kline_forming_past_the_chunk_end_is_not_cached() -> None:
    """1w klines open on Mondays, so one straddles each chunk boundary (7,000 days apart)."""
    boundary = 21_000 * DAY  # 2027-07-01, a Thursday: the week that opened on Monday is forming
    m = Market({}, [SyntheticSpec("BTCUSDT", "1w", boundary - 70 * DAY)])
    now, start, end = boundary + DAY, boundary - 30 * DAY, boundary - 1
    page = m.closed_page_json("BTCUSDT", "1w", now, start=start, end=end, limit=9)
    assert page is None or page == expected(m, "1w", now, start=start, end=end, limit=9)
