"""The run's ordering and failure handling against a function served on 127.0.0.1
(tests/http_stub.py)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from backfill.run import run_backfill
from backfill.settings import Settings
from klinelake.backends.lake import read_rows
from klinelake.backends.local_store import LocalStore
from klinelake.binance.rest import BinanceAPIError
from klinelake.core.intervals import HOUR
from tests.http_stub import Handler, Reply, StubRequest, http_stub

from .conftest import Quiet

T0 = 1_672_531_200_000  # 2023-01-01
NOW = T0 + 100 * 24 * HOUR


def kline(t: int) -> list[object]:
    return [t, "1.0", "2.0", "0.5", "1.5", "10.0", t + HOUR - 1, "15.0", 3, "5.0", "7.5", "0"]


def exchange(
    fail_page_start: int | None,
    delays: dict[int, float],
    hold: dict[int, int] | None = None,
    answered: list[int] | None = None,
) -> Handler:
    """`hold` {page: other page}: answer `page` only once `other page` is answered (pages then
    complete out of order, without timing); `answered` records the order pages are answered."""
    done: dict[int, asyncio.Event] = {}

    async def handler(request: StubRequest) -> Reply:
        response = await answer(request)
        if "startTime" in request.query:
            start = int(request.query["startTime"])
            if answered is not None:
                answered.append(start)
            done.setdefault(start, asyncio.Event()).set()
        return response

    async def answer(request: StubRequest) -> Reply:
        headers = {"x-mbx-used-weight-1m": "2"}
        if request.path == "/api/v3/exchangeInfo":
            body = {"serverTime": NOW, "symbols": [{"symbol": "BTCUSDT"}], "rateLimits": []}
            return Reply(200, orjson.dumps(body), headers)
        start = int(request.query["startTime"])
        end = int(request.query["endTime"])
        if hold and start in hold:
            await done.setdefault(hold[start], asyncio.Event()).wait()
        if start in delays:  # this page answers late
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), delays[start])
        if start == fail_page_start:
            err = {"code": -1100, "msg": "Illegal characters found in parameter 'startTime'."}
            return Reply(400, orjson.dumps(err), headers)
        rows = [kline(t) for t in range(start, end + 1, HOUR)]
        return Reply(200, orjson.dumps(rows), headers)

    return handler


def settings(tmp: Path, url: str, **kw: object) -> Settings:
    """`url`: the stub serving `exchange(...)` (`tests.http_stub.http_stub`)."""
    return replace(Settings(
        symbols=("BTCUSDT",), start_ms=T0, end_ms=T0 + 10 * 24 * HOUR - 1, page_limit=24,
        batch_rows=48, concurrency=4, rest_url=url, lake=str(tmp / "lake"),
        state_dir=tmp / "state",
    ), **kw)  # type: ignore[arg-type]  # fmt: skip


def lake_times(tmp: Path) -> list[int]:
    return [k.open_time for k in read_rows(LocalStore(tmp / "lake"), "BTCUSDT", "1h")]


async def test_out_of_order_pages_are_written_in_order(tmp_path: Path) -> None:
    answered: list[int] = []
    hold = {T0: T0 + 48 * HOUR}  # the first page answers after the third
    async with http_stub(exchange(None, {}, hold=hold, answered=answered)) as url:
        result = await asyncio.wait_for(run_backfill(settings(tmp_path, url), Quiet()), 30)
    assert answered.index(T0 + 48 * HOUR) < answered.index(T0), "pages completed in order"
    assert lake_times(tmp_path) == list(range(T0, T0 + 240 * HOUR, HOUR))
    assert result.pages_fetched == 10 and result.batches_sent == 5


async def test_a_failing_page_stops_fetching_and_keeps_the_prefix(tmp_path: Path) -> None:
    bad_page = T0 + 5 * 24 * HOUR
    # The bad page answers late: meanwhile the other worker fills every buffer slot with later
    # pages and blocks; the failure must still wake it (no deadlock) and end the run.
    async with http_stub(exchange(bad_page, {bad_page: 0.3})) as url:
        with pytest.raises(BinanceAPIError):
            await asyncio.wait_for(
                run_backfill(
                    settings(tmp_path, url, concurrency=2, end_ms=T0 + 30 * 24 * HOUR - 1),
                    Quiet(),
                ),
                30,
            )
    # everything before the failed page is written (and checkpointed), nothing after it
    assert lake_times(tmp_path) == list(range(T0, bad_page, HOUR))
