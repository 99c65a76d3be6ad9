"""A backfill page fetched in several requests (more open times than the request limit: COIN-M
1M windows, a vision archive's REST fallback, a vision run's REST edge pages) reaches the sink
as the compiled parser's lines, like a page fetched in one request: no Kline is parsed back out
of a line on the way (issue 15: that costs ~15 µs per row, ~40 times the page's parse), and the
rows sent are every row of the page, once, in order."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from backfill.checkpoint import Checkpoint
from backfill.fetch_pool import fetch_all
from backfill.plan import Page
from backfill.result import RunResult
from backfill.vision import VisionFetcher
from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.core import row as lake_row
from klinelake.core.intervals import HOUR
from klinelake.core.markets import Market
from klinelake.core.row import Kline, StreamRows, parse_rest_page

from .conftest import Quiet
from .test_emit_order import RecordingSink as EmitOrderSink
from .test_run_unit import T0, kline, settings

pytestmark = pytest.mark.skipif(
    not lake_row.COMPILED_ROW_PATH, reason="the compiled row path is not built here"
)
LIMIT = 24


class PagedRest:
    """Regular 1h pages from `start`, at most `limit` rows, through the real page parser."""

    counters = SimpleNamespace(last_used_weight=0)

    def __init__(self) -> None:
        self.requests = 0

    async def klines(
        self, symbol: str, interval: str, start: int, end: int, limit: int = LIMIT
    ) -> Any:
        self.requests += 1
        last = min(end, start + (limit - 1) * HOUR)
        body = orjson.dumps([kline(t) for t in range(start, last + 1, HOUR)])
        return parse_rest_page(body, symbol, interval, Market.SPOT)


class RecordingSink(EmitOrderSink):
    """test_emit_order's recording sink, taking history oldest first (the local lake's order)."""

    history_newest_first = False


def expected_lines(first: int, last: int) -> list[bytes]:
    body = orjson.dumps([kline(t) for t in range(first, last + 1, HOUR)])
    return [k.to_line() for k in lake_row.parse_rest_rows(orjson.loads(body), "BTCUSDT", "1h")]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The lines parsed back into Klines (row.parse_lake_line, which StreamRows use)."""
    seen: list[bytes] = []
    parse = lake_row.parse_lake_line

    def counting(line: bytes, where: str = "", market: Market = Market.SPOT) -> Kline:
        seen.append(line)
        return parse(line, where, market)

    monkeypatch.setattr(lake_row, "parse_lake_line", counting)
    return seen


@pytest.mark.parametrize("parts", [1, 3])
async def test_a_page_fetched_in_parts_reaches_the_sink_as_its_lines(
    tmp_path: Path, parses: list[bytes], parts: int
) -> None:
    first, last = T0, T0 + (parts * LIMIT - 1) * HOUR
    page = Page("BTCUSDT", "1h", first, last, parts * LIMIT)
    rest, sink = PagedRest(), RecordingSink()
    config = settings(tmp_path, "http://127.0.0.1:9", page_limit=LIMIT, batch_rows=5000)
    await fetch_all(
        [page], rest=rest, sink=sink, checkpoint=Checkpoint(tmp_path, "test"),  # type: ignore[arg-type]
        empty=EmptyRanges(tmp_path), settings=config, result=RunResult(plan=None),  # type: ignore[arg-type]
        reporter=Quiet(),
    )  # fmt: skip
    assert rest.requests == parts
    sent = [line for b in sink.batches for line in lake_row.lake_lines(b.rows)]
    assert sent == expected_lines(first, last)
    assert all(isinstance(b.rows, StreamRows) for b in sink.batches)
    assert parses == []


async def test_vision_rest_pages_keep_their_lines(parses: list[bytes]) -> None:
    """An archive's REST fallback and the edge pages: several pages, each in several parts."""
    pages = [
        Page("BTCUSDT", "1h", T0, T0 + (2 * LIMIT - 1) * HOUR, 2 * LIMIT),
        Page("BTCUSDT", "1h", T0 + 2 * LIMIT * HOUR, T0 + (3 * LIMIT - 1) * HOUR, LIMIT),
    ]
    fetcher = VisionFetcher(None, PagedRest(), {}, page_limit=LIMIT)  # type: ignore[arg-type]
    rows = await fetcher.rest_pages(pages)
    assert list(lake_row.lake_lines(rows)) == expected_lines(T0, T0 + (3 * LIMIT - 1) * HOUR)
    assert isinstance(rows, StreamRows) and parses == []
    assert await fetcher.rest_pages([]) == []
