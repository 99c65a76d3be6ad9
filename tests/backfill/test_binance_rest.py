"""The REST client's logic against a function served over real sockets (tests/http_stub.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
from tests.http_stub import Drop, Handler, Reply, StubRequest, http_stub
from tests.recorded import DATA

PAGE = (DATA / "BTCUSDT-1m-2021-10-22.api_v3_klines.json").read_bytes()


def reply(status: int, body: object, used: int = 2, **headers: str) -> Reply:
    return Reply(
        status,
        orjson.dumps(body),
        {"x-mbx-used-weight-1m": str(used), "x-mbx-used-weight": str(used), **headers},
    )


@asynccontextmanager
async def client(handler: Handler, **kw: object) -> AsyncIterator[BinanceRest]:
    async with (
        http_stub(handler) as url,
        BinanceRest(
            url,
            backoff_initial_s=0.001,
            backoff_max_s=0.01,
            **kw,  # type: ignore[arg-type]
        ) as rest,
    ):
        yield rest


async def test_klines_parses_the_page_and_sends_the_range() -> None:
    seen: list[StubRequest] = []

    def handler(request: StubRequest) -> Reply:
        seen.append(request)
        return Reply(200, PAGE, {"X-MBX-USED-WEIGHT-1M": "7"})

    weights: list[int] = []
    async with client(handler, on_used_weight=weights.append) as rest:
        rows = await rest.klines("BTCUSDT", "1m", 1634860800000, 1634947199999, limit=1000)
    assert rows and rows[0].symbol == "BTCUSDT" and rows[0].interval == "1m"
    assert (seen[0].method, seen[0].path) == ("GET", "/api/v3/klines")
    assert seen[0].query == {
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

    def handler(request: StubRequest) -> Reply:
        nonlocal calls
        calls += 1
        return reply(400, {"code": code, "msg": "Invalid symbol."})

    async with client(handler) as rest:
        with pytest.raises(cls) as info:
            await rest.klines("NOPE", "1h", 0, 1)
    assert calls == 1 and rest.counters.retries == 0
    assert isinstance(info.value, BinanceAPIError) and info.value.code == code


async def test_5xx_and_network_errors_are_retried() -> None:
    answers: list[Reply | None] = [
        reply(503, {"code": -1008, "msg": "busy"}),
        # The connection is reset without an answer, twice: aiohttp itself resends an idempotent
        # request once on a fresh connection (RFC 9112 §9.3.1), then the error reaches us.
        None,
        None,
        reply(500, {"code": -1000, "msg": "unknown"}),
        Reply(200, b'{"serverTime":1700000000000}'),
    ]

    def handler(request: StubRequest) -> Reply:
        answer = answers.pop(0)
        if answer is None:
            raise Drop
        return answer

    async with client(handler) as rest:
        assert await rest.server_time() == 1700000000000
    assert not answers and rest.counters.requests == 4 and rest.counters.retries == 3


async def test_5xx_gives_up_after_max_attempts() -> None:
    def handler(request: StubRequest) -> Reply:
        return reply(502, "bad gateway")

    async with client(handler, max_attempts=3) as rest:
        with pytest.raises(ServerError) as info:
            await rest.server_time()
    assert isinstance(info.value, TransientError) and info.value.status == 502
    assert rest.counters.requests == 3


async def test_network_error_is_transient() -> None:
    calls = 0

    def handler(request: StubRequest) -> Reply:
        nonlocal calls
        calls += 1
        raise Drop

    async with client(handler, max_attempts=2) as rest:
        with pytest.raises(TransientError, match="GET /api/v3/time: ServerDisconnectedError"):
            await rest.server_time()
    # each of our 2 attempts is sent twice (aiohttp resends once on a fresh connection)
    assert calls == 4 and rest.counters.requests == 2 and rest.counters.retries == 1


async def test_timeout_is_transient() -> None:
    async def handler(request: StubRequest) -> Reply:
        await asyncio.Event().wait()  # never answers; cancelled when the client gives up
        raise AssertionError("unreachable")

    async with client(handler, max_attempts=2, timeout_s=0.2) as rest:
        with pytest.raises(TransientError, match=r"GET /api/v3/time: .*Timeout"):
            await rest.server_time()
    assert rest.counters.requests == 2 and rest.counters.retries == 1


async def test_429_waits_retry_after_then_retries() -> None:
    times: list[float] = []

    def handler(request: StubRequest) -> Reply:
        times.append(time.monotonic())
        if len(times) == 1:
            return reply(
                429,
                {"code": -1003, "msg": "Too much request weight used"},
                **{"Retry-After": "0.3"},
            )
        return Reply(200, b'{"serverTime":1}')

    async with client(handler) as rest:
        assert await rest.server_time() == 1
    assert times[1] - times[0] >= 0.29
    assert rest.counters.rate_limited == 1 and rest.counters.retries == 1


async def test_418_stops_everything_without_touching_the_network() -> None:
    calls = 0

    def handler(request: StubRequest) -> Reply:
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


@pytest.mark.parametrize("with_retry_after", [True, False])
async def test_418_ban_length_from_retry_after_else_from_the_message(
    with_retry_after: bool,
) -> None:
    """Retry-After (relative: independent of the server's clock) decides the ban's end; only
    without it does the message's "banned until <ms>" (binance-spot-api.md §8)."""
    until_ms = int(time.time() * 1000) + 600_000  # the message says 10 minutes
    headers = {"Retry-After": "120"} if with_retry_after else {}

    def handler(request: StubRequest) -> Reply:
        body = {
            "code": -1003,
            "msg": f"Way too much request weight used; IP banned until {until_ms}.",
        }
        return reply(418, body, **headers)

    async with client(handler) as rest:
        with pytest.raises(IPBanned) as info:
            await rest.klines("BTCUSDT", "1h", 0, 1)
    if with_retry_after:
        assert 119 <= info.value.retry_after_s <= 120
    else:
        assert 595 <= info.value.retry_after_s <= 600 and info.value.until_ms == until_ms


async def test_bad_row_names_the_field() -> None:
    rows = orjson.loads(PAGE)
    rows[3][1] = "12,5"

    def handler(request: StubRequest) -> Reply:
        return Reply(200, orjson.dumps(rows))

    async with client(handler) as rest:
        with pytest.raises(InvalidRow, match="'open'") as info:
            await rest.klines("BTCUSDT", "1m", 0, 1)
    assert info.value.field == "open" and "row 3" in str(info.value)


async def test_exchange_info_sends_symbols_as_json_array() -> None:
    seen: list[StubRequest] = []

    def handler(request: StubRequest) -> Reply:
        seen.append(request)
        return Reply(200, b'{"symbols":[{"symbol":"BTCUSDT"}]}')

    async with client(handler) as rest:
        info = await rest.exchange_info(["BTCUSDT", "ETHUSDT"])
    assert info["symbols"][0]["symbol"] == "BTCUSDT"
    assert seen[0].query["symbols"] == '["BTCUSDT","ETHUSDT"]'


async def test_requests_share_the_budget() -> None:
    used = 0

    def handler(request: StubRequest) -> Reply:
        nonlocal used
        used += 20
        return reply(200, {"symbols": []}, used=used)

    budget = WeightBudget(limit=100, share=0.5)  # 50: two exchangeInfo per window
    async with client(handler, budget=budget) as rest:
        await rest.exchange_info()
        await rest.exchange_info()
        assert budget.ledger.try_reserve(budget.clock(), 20) is not None
    assert rest.counters.max_used_weight == 40


async def test_a_proxy_named_in_the_environment_carries_the_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[StubRequest] = []

    def proxy(request: StubRequest) -> Reply:
        seen.append(request)
        return Reply(200, b'{"serverTime":5}')

    async with http_stub(proxy) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with BinanceRest("http://binance.invalid") as rest:
            assert await rest.server_time() == 5
        monkeypatch.setenv("NO_PROXY", "binance.invalid")  # bypassed: straight to the host
        async with BinanceRest("http://binance.invalid", max_attempts=1) as rest:
            with pytest.raises(TransientError, match="GET /api/v3/time"):
                await rest.server_time()
    assert [(r.path, r.headers["Host"]) for r in seen] == [("/api/v3/time", "binance.invalid")]
