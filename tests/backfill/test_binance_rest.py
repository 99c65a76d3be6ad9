"""The REST client's logic against a function transport (httpx.MockTransport): no sockets."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import orjson
import pytest

from klinelake.binance.rest import (
    BadInterval,
    BinanceAPIError,
    BinanceRest,
    IPBanned,
    ServerError,
    UnknownSymbol,
)
from klinelake.binance.weight import WeightBudget
from klinelake.core.errors import InvalidRow, TransientError
from tests.recorded import DATA

PAGE = (DATA / "BTCUSDT-1m-2021-10-22.api_v3_klines.json").read_bytes()


def reply(status: int, body: object, used: int = 2, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=orjson.dumps(body),
        headers={"x-mbx-used-weight-1m": str(used), "x-mbx-used-weight": str(used), **headers},
    )


def client(handler: Callable[[httpx.Request], httpx.Response], **kw: object) -> BinanceRest:
    return BinanceRest(
        "http://sim.invalid",
        transport=httpx.MockTransport(handler),
        backoff_initial_s=0.001,
        backoff_max_s=0.01,
        **kw,  # type: ignore[arg-type]
    )


async def test_klines_parses_the_page_and_sends_the_range() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PAGE, headers={"x-mbx-used-weight-1m": "7"})

    weights: list[int] = []
    async with client(handler, on_used_weight=weights.append) as rest:
        rows = await rest.klines("BTCUSDT", "1m", 1634860800000, 1634947199999, limit=1000)
    assert rows and rows[0].symbol == "BTCUSDT" and rows[0].interval == "1m"
    assert seen[0].url.path == "/api/v3/klines"
    assert dict(seen[0].url.params) == {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "startTime": "1634860800000",
        "endTime": "1634947199999",
        "limit": "1000",
    }
    assert weights == [7]
    assert rest.counters.requests == 1 and rest.counters.weight_charged == 2
    assert rest.counters.max_used_weight == 7


@pytest.mark.parametrize(
    ("code", "cls"), [(-1121, UnknownSymbol), (-1120, BadInterval), (-1100, BinanceAPIError)]
)
async def test_4xx_is_translated_and_never_retried(code: int, cls: type[Exception]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return reply(400, {"code": code, "msg": "Invalid symbol."})

    async with client(handler) as rest:
        with pytest.raises(cls) as info:
            await rest.klines("NOPE", "1h", 0, 1)
    assert calls == 1 and rest.counters.retries == 0
    assert isinstance(info.value, BinanceAPIError) and info.value.code == code


async def test_5xx_and_network_errors_are_retried() -> None:
    answers: list[object] = [
        reply(503, {"code": -1008, "msg": "busy"}),
        httpx.ConnectError("refused"),
        reply(500, {"code": -1000, "msg": "unknown"}),
        httpx.Response(200, content=b'{"serverTime":1700000000000}'),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    async with client(handler) as rest:
        assert await rest.server_time() == 1700000000000
    assert rest.counters.requests == 4 and rest.counters.retries == 3


async def test_5xx_gives_up_after_max_attempts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return reply(502, "bad gateway")

    async with client(handler, max_attempts=3) as rest:
        with pytest.raises(ServerError) as info:
            await rest.server_time()
    assert isinstance(info.value, TransientError) and info.value.status == 502
    assert rest.counters.requests == 3


async def test_network_error_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    async with client(handler, max_attempts=2) as rest:
        with pytest.raises(TransientError, match="ReadTimeout"):
            await rest.server_time()


async def test_429_waits_retry_after_then_retries() -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return reply(
                429,
                {"code": -1003, "msg": "Too much request weight used"},
                **{"Retry-After": "0.3"},
            )
        return httpx.Response(200, content=b'{"serverTime":1}')

    async with client(handler) as rest:
        assert await rest.server_time() == 1
    assert times[1] - times[0] >= 0.29
    assert rest.counters.rate_limited == 1 and rest.counters.retries == 1


async def test_418_stops_everything_without_touching_the_network() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return reply(
            418,
            {"code": -1003, "msg": "Way too much request weight used; IP banned until 1."},
            **{"Retry-After": "120"},
        )

    async with client(handler) as rest:
        with pytest.raises(IPBanned) as info:
            await rest.klines("BTCUSDT", "1h", 0, 1)
        assert 119 <= info.value.retry_after_s <= 120
        with pytest.raises(IPBanned):
            await rest.exchange_info(["BTCUSDT"])
    assert calls == 1 and rest.counters.requests == 1 and rest.counters.retries == 0


async def test_bad_row_names_the_field() -> None:
    rows = orjson.loads(PAGE)
    rows[3][1] = "12,5"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=orjson.dumps(rows))

    async with client(handler) as rest:
        with pytest.raises(InvalidRow, match="'open'") as info:
            await rest.klines("BTCUSDT", "1m", 0, 1)
    assert info.value.field == "open" and "row 3" in str(info.value)


async def test_exchange_info_sends_symbols_as_json_array() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b'{"symbols":[{"symbol":"BTCUSDT"}]}')

    async with client(handler) as rest:
        info = await rest.exchange_info(["BTCUSDT", "ETHUSDT"])
    assert info["symbols"][0]["symbol"] == "BTCUSDT"
    assert seen[0].url.params["symbols"] == '["BTCUSDT","ETHUSDT"]'


async def test_requests_share_the_budget() -> None:
    used = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal used
        used += 20
        return reply(200, {"symbols": []}, used=used)

    budget = WeightBudget(limit=100, share=0.5)  # 50: two exchangeInfo per window
    async with client(handler, budget=budget) as rest:
        await rest.exchange_info()
        await rest.exchange_info()
        assert budget.ledger.try_reserve(budget.clock(), 20) is not None
    assert rest.counters.max_used_weight == 40
