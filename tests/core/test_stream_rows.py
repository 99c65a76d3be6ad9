"""StreamRows (a page as open times and lake lines, no Kline per row) against the same rows as
Klines, through every consumer of rows: whatever the rows (any order, repeated, empty, every
market), each consumer gives the same outcome for both, the same batches, bytes and errors.

The backfill carries its pages as StreamRows from the compiled parser to the sink (issue 15),
so a consumer with a fast path for them must not decide differently from its Kline path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core.contract import KlineBatch, encode_batch, make_batches, sort_unique
from klinelake.core.errors import InvalidData
from klinelake.core.markets import Market
from klinelake.core.merge import batch_lines
from klinelake.core.publish import within
from klinelake.core.row import Kline, StreamRows, lake_lines, open_time_at, open_times
from klinelake.core.writer import LakeWriter
from tests.core.memory_store import MemoryStore
from tests.core.test_rest_page_fast import first_open, regular_page

STREAM = ("BTCUSDT", "1m")


def klines(n: int, market: Market) -> list[Kline]:
    from klinelake.core.row import parse_rest_rows

    return parse_rest_rows(regular_page(n, "1m", first_open("1m")), *STREAM, market)


# the rows: picked from a page by index (so any order, repeats, gaps), or the page as it came
picks = st.one_of(
    st.integers(0, 12).map(lambda n: list(range(n))),
    st.integers(0, 12).map(lambda n: list(range(n))[::-1]),
    st.lists(st.integers(0, 11), max_size=14),
)


def both(picked: list[int], market: Market) -> tuple[list[Kline], StreamRows]:
    page = klines(12, market)
    rows = [page[i] for i in picked]
    return rows, StreamRows.of(*STREAM, market, rows)


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """What `fn` gives, or the error it raises (its type and text)."""
    try:
        return "rows", fn()
    except Exception as exc:  # compared, not swallowed: both sides must raise the same
        return type(exc).__name__, str(exc)


def batches_outcome(rows: Any) -> tuple[str, Any]:
    return outcome(lambda: [(b.rows, b.empty, b.market) for b in make_batches(rows, 5)])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(picks, st.sampled_from(list(Market)))
def test_every_consumer_decides_the_same_for_stream_rows(picked: list[int], market: Market) -> None:
    rows, sr = both(picked, market)
    assert sr == rows and list(sr) == rows and len(sr) == len(rows)
    assert list(lake_lines(sr)) == [k.to_line() for k in rows]
    assert list(open_times(sr)) == [k.open_time for k in rows]
    assert batch_lines(sr) == batch_lines(rows)
    assert sort_unique(sr) == sort_unique(rows)
    assert batches_outcome(sr) == batches_outcome(rows)
    as_tuple = outcome(lambda: KlineBatch(*STREAM, tuple(rows), market=market))
    as_stream_rows = outcome(lambda: KlineBatch(*STREAM, sr, market=market))
    assert as_stream_rows == as_tuple  # the same batch, or the same error text
    if as_tuple[0] == "rows":
        batch, fast = as_tuple[1], as_stream_rows[1]
        assert encode_batch(fast, "rest") == encode_batch(batch, "rest")
        assert (fast.first_open_time, fast.last_open_time) == (
            batch.first_open_time,
            batch.last_open_time,
        )
        stores = MemoryStore(), MemoryStore()
        results = [LakeWriter(s).write_batch(b) for s, b in zip(stores, (batch, fast), strict=True)]
        assert results[0] == results[1] and stores[0].objects == stores[1].objects
        for first, last in ((0, 2**62), (rows[0].open_time + 1, rows[-1].open_time - 1)):
            assert within(sr, first, last) == within(rows, first, last)
        assert [open_time_at(sr, i) for i in (0, -1)] == [rows[0].open_time, rows[-1].open_time]


@pytest.mark.parametrize("market", list(Market))
def test_rows_of_another_stream_are_refused(market: Market) -> None:
    """StreamRows say their stream once, so rows of another stream never enter them."""
    rows = klines(3, market)
    other = Market.UM if market != Market.UM else Market.SPOT
    with pytest.raises(InvalidData, match="given as a row of"):
        StreamRows.of("BTCUSDT", "1m", other, rows)
    with pytest.raises(InvalidData, match="given as a row of"):
        StreamRows.of("ETHUSDT", "1m", market, rows)
    sr = StreamRows.of(*STREAM, market, rows)
    with pytest.raises(InvalidData, match="given as rows of"):
        StreamRows.of("BTCUSDT", "5m", market, sr)
    # a batch of another stream is refused as it is for Klines, naming the first row
    with pytest.raises(InvalidData, match="row 0 is BTCUSDT@1m, the batch is ETHUSDT@1m"):
        KlineBatch("ETHUSDT", "1m", tuple(sr), market=market)
    assert outcome(lambda: KlineBatch("ETHUSDT", "1m", sr, market=market)) == outcome(
        lambda: KlineBatch("ETHUSDT", "1m", tuple(rows), market=market)
    )


def test_a_row_is_parsed_from_its_line_only_when_asked_for() -> None:
    """StreamRows keep lines, not Klines: a line that a parser never wrote fails when read."""
    rows = klines(2, Market.SPOT)
    lines = [rows[0].to_line(), orjson.dumps({"open_time": 1}) + b"\n"]
    sr = StreamRows(*STREAM, Market.SPOT, [r.open_time for r in rows], lines)
    assert sr[0] == rows[0] and len(sr) == 2
    with pytest.raises(InvalidData, match="row 1"):
        sr[1]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(picks, st.booleans()), max_size=4),
    st.sampled_from(list(Market)),
)
def test_joined_parts_are_the_parts_rows_in_order(
    parts: list[tuple[list[int], bool]], market: Market
) -> None:
    """A page fetched in several requests (StreamRows or, from an irregular page, Klines)."""
    given_parts: list[Any] = []
    for picked, as_stream_rows in parts:
        rows, sr = both(picked, market)
        given_parts.append(sr if as_stream_rows else rows)
    joined = StreamRows.joined(*STREAM, market, given_parts)
    expected = [k for part in given_parts for k in part]
    assert joined == expected and list(joined.lines) == [k.to_line() for k in expected]
    with pytest.raises(InvalidData, match="given as"):
        StreamRows.joined("ETHUSDT", "1m", market, [*given_parts, klines(1, market)])


@pytest.mark.parametrize("market", list(Market))
def test_stream_rows_pickle_and_copy_like_a_tuple_of_their_klines(market: Market) -> None:
    """Every pickle protocol a tuple of Klines takes (0 and 1 too), and copies: equal rows."""
    import copy
    import pickle

    rows = klines(3, market)
    sr = StreamRows.of(*STREAM, market, rows)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(tuple(rows), protocol)) == tuple(rows)
        back = pickle.loads(pickle.dumps(sr, protocol))
        assert type(back) is StreamRows and back == sr and back.stream == sr.stream
    for twin in (copy.copy(sr), copy.deepcopy(sr)):
        assert type(twin) is StreamRows and twin == sr
