"""The one publish path (klinelake.core.publish): send policy, REST range pager, halt inference,
symbols against exchangeInfo. In process, no network; hypothesis derandomized."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.binance.rest import UnknownSymbol
from klinelake.core import publish
from klinelake.core.contract import KlineBatch
from klinelake.core.errors import InvalidData, TransientError
from klinelake.core.intervals import DAY, MINUTE, NOMINAL_MS, find_gaps
from klinelake.core.markets import Market
from klinelake.core.publish import Patience
from klinelake.core.row import Kline

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z, a Monday
_SEEDED = settings(derandomize=True, max_examples=200, deadline=None)
# the open times present (bars after T0), a range of them, and a page limit
_RANGES = given(
    present=st.sets(st.integers(0, 60), max_size=61),
    first=st.integers(0, 60),
    span=st.integers(0, 60),
    limit=st.integers(1, 7),
)


def kline(i: int, interval: str = "1m") -> Kline:
    bar = NOMINAL_MS[interval]
    t = T0 + i * bar
    return Kline(
        open_time=t, close_time=t + bar - 1, symbol="AAAUSDC", interval=interval, open="1",
        high="2", low="0.5", close="1.5", volume="10", quote_volume="15", trades=3,
        taker_buy_base_volume="5", taker_buy_quote_volume="7.5",
    )  # fmt: skip


class ListRest:
    """REST over a fixed set of kline indexes: at most `limit` per request, ascending."""

    def __init__(self, present: set[int], interval: str = "1m") -> None:
        self.rows = [kline(i, interval) for i in sorted(present)]
        self.requests = 0

    async def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = 1000
    ) -> list[Kline]:
        self.requests += 1
        return [k for k in self.rows if start_ms <= k.open_time <= end_ms][:limit]


class CoinMRest(ListRest):
    """COIN-M's klines (binance-futures-api.md §6): endTime − startTime ≤ 200 days, and the
    answer is the NEWEST `limit` bars of the window, not the first."""

    async def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = 1500
    ) -> list[Kline]:
        self.requests += 1
        if end_ms - start_ms > 200 * DAY:
            raise AssertionError("-4088 Maximum time interval is 200 days")
        return [k for k in self.rows if start_ms <= k.open_time <= end_ms][-limit:]


def _fetch(
    rest: ListRest,
    first: int,
    last: int,
    limit: int,
    *,
    market: Market = Market.SPOT,
    interval: str = "1m",
) -> list[list[Kline]]:
    bar = NOMINAL_MS[interval]

    async def go() -> list[list[Kline]]:
        pages = publish.fetch_range(rest, "AAAUSDC", interval, T0 + first * bar, T0 + last * bar,
                                    limit=limit, market=market)  # fmt: skip
        return [p async for p in pages]

    return asyncio.run(go())


@_SEEDED
@_RANGES
def test_pager_returns_every_kline_of_the_range_once_in_order(
    present: set[int], first: int, span: int, limit: int
) -> None:
    last = first + span
    rest = ListRest(present)
    pages = _fetch(rest, first, last, limit)
    got = [k.open_time for p in pages for k in p]
    assert got == [T0 + i * MINUTE for i in sorted(present) if first <= i <= last]
    assert all(len(p) <= limit for p in pages)
    # one request per full page, plus the one that finds the range complete (at most)
    assert rest.requests <= len(got) // limit + 1


@_SEEDED
@_RANGES
def test_coin_m_pager_returns_every_kline_although_pages_are_newest_first_windows(
    present: set[int], first: int, span: int, limit: int
) -> None:
    """COIN-M answers the newest bars of a window: a short page (a halt inside the window)
    is not the end of the range (the spot rule would stop there and lose the rest)."""
    last = first + span
    rest = CoinMRest(present)
    pages = _fetch(rest, first, last, limit, market=Market.CM)
    got = [k.open_time for p in pages for k in p]
    assert got == [T0 + i * MINUTE for i in sorted(present) if first <= i <= last]
    assert all(len(p) <= limit for p in pages)
    # one request per window of `limit` bars, never more
    assert rest.requests <= span // limit + 1


def test_coin_m_pager_keeps_each_window_within_200_days() -> None:
    """1d bars, limit 1500: each request spans at most 200 days; a halt at a window's start
    and a window with no bar at all do not end the range."""
    present = set(range(600)) - set(range(200, 215)) - set(range(401, 602))
    rest = CoinMRest(present, "1d")
    pages = _fetch(rest, 0, 700, 1500, market=Market.CM, interval="1d")
    got = [(k.open_time - T0) // DAY for p in pages for k in p]
    assert got == sorted(present)
    assert rest.requests == 4  # days 0-200, 201-401, 402-602, 603-700


@_SEEDED
@given(present=st.sets(st.integers(0, 40), max_size=41), first=st.integers(0, 40),
       span=st.integers(0, 40))  # fmt: skip
def test_confirmed_empty_is_what_the_complete_answer_lacks(
    present: set[int], first: int, span: int
) -> None:
    last = first + span
    times = [T0 + i * MINUTE for i in sorted(present)]
    holes = publish.confirmed_empty(times, T0 + first * MINUTE, T0 + last * MINUTE, "1m")
    lacking = {i for i in range(first, last + 1) if i not in present}
    covered = {(t - T0) // MINUTE for a, b in holes for t in range(a, b + 1, MINUTE)}
    assert covered == lacking
    assert holes == find_gaps(times, T0 + first * MINUTE, T0 + last * MINUTE, "1m")


def test_confirmed_empty_3d_only_when_nothing_came() -> None:
    day3 = 3 * 86_400_000
    # our 3d grid may not be Binance's
    assert publish.confirmed_empty([T0], T0, T0 + 4 * day3, "3d") == []
    assert publish.confirmed_empty([], T0, T0 + day3, "3d") != []


class Sink:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.sent = 0

    async def send(self, batch: KlineBatch, source: str) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent += 1

    async def close(self) -> None:
        return None

    @property
    def description(self) -> str:
        return "memory"


BATCH = KlineBatch("AAAUSDC", "1m", (kline(0),))
QUICK = Patience(first_s=0.0001, cap_s=0.0005)


def test_send_forever_outlasts_any_failure_kind_and_reports_each() -> None:
    failures: list[Exception] = [TransientError("a")] * 20 + [RuntimeError("b"), OSError("c")]
    sink = Sink(list(failures))
    seen: list[tuple[str, float]] = []
    asyncio.run(
        publish.send_until_durable(sink, BATCH, "ws", patience=QUICK,
                           on_retry=lambda e, d: seen.append((type(e).__name__, d)))
    )  # fmt: skip
    assert sink.sent == 1
    assert [n for n, _ in seen] == [type(e).__name__ for e in failures]
    assert all(0 <= d <= QUICK.cap_s for _, d in seen)


def test_bounded_patience_gives_up_on_permanent_at_once_and_transient_after_attempts() -> None:
    patience = Patience(attempts=3, first_s=0.0001, cap_s=0.0005,
                        permanent=lambda e: not isinstance(e, TransientError))  # fmt: skip
    sink = Sink([InvalidData("rejected"), TransientError("never")])
    with pytest.raises(InvalidData, match="rejected"):
        asyncio.run(publish.send_until_durable(sink, BATCH, "rest", patience=patience))
    sink = Sink([TransientError(str(i)) for i in range(3)])
    with pytest.raises(TransientError, match="2"):
        asyncio.run(publish.send_until_durable(sink, BATCH, "rest", patience=patience))
    sink = Sink([TransientError(str(i)) for i in range(2)])
    asyncio.run(publish.send_until_durable(sink, BATCH, "rest", patience=patience))
    assert sink.sent == 1


def test_cancellation_is_not_retried() -> None:
    class Stuck(Sink):
        started: asyncio.Event

        async def send(self, batch: KlineBatch, source: str) -> None:
            self.sent += 1
            self.started.set()
            if self.sent == 1:  # blocks until cancelled; a (wrong) retry would succeed
                await asyncio.Event().wait()

    async def go() -> None:
        sink = Stuck([])
        sink.started = asyncio.Event()
        task = asyncio.create_task(publish.send_until_durable(sink, BATCH, "ws"))
        await asyncio.wait_for(sink.started.wait(), timeout=5)  # cancel inside the send
        task.cancel()
        await asyncio.wait({task}, timeout=5)  # a deadline: a retried cancel would never end
        assert task.cancelled()

    asyncio.run(go())


class InfoRest:
    def __init__(self, listed: set[str]) -> None:
        self.listed = listed
        self.requests: list[list[str]] = []

    async def exchange_info(self, symbols: list[str] | None = None) -> dict[str, Any]:
        assert symbols is not None
        self.requests.append(symbols)
        if any(s not in self.listed for s in symbols):
            raise UnknownSymbol(400, -1121, "Invalid symbol.")
        return {"serverTime": 5, "symbols": [{"symbol": s} for s in symbols]}


def test_check_listed_names_exactly_the_unknown_symbols() -> None:
    rest = InfoRest({"AUSDT", "BUSDT"})
    with pytest.raises(publish.UnlistedSymbols) as err:
        asyncio.run(publish.check_listed(rest, ["AUSDT", "NOPE1", "BUSDT", "NOPE2"]))
    assert err.value.symbols == ("NOPE1", "NOPE2")
    info = asyncio.run(publish.check_listed(InfoRest({"AUSDT"}), ["AUSDT"]))
    assert info["serverTime"] == 5 and [s["symbol"] for s in info["symbols"]] == ["AUSDT"]
    many = [f"S{i:03d}USDT" for i in range(250)]
    rest = InfoRest(set(many))
    info = asyncio.run(publish.check_listed(rest, many))
    assert [len(r) for r in rest.requests] == [100, 100, 50]
    assert [s["symbol"] for s in info["symbols"]] == many


class FuturesInfoRest:
    """Futures exchangeInfo: no parameters, every symbol of the market (FS §7)."""

    def __init__(self, listed: list[str]) -> None:
        self.listed = listed
        self.requests: list[list[str] | None] = []

    async def exchange_info(self, symbols: list[str] | None = None) -> dict[str, Any]:
        self.requests.append(symbols)
        if symbols is not None:
            raise AssertionError("futures exchangeInfo takes no symbols parameter")
        return {"serverTime": 7, "symbols": [{"symbol": s} for s in self.listed]}


@pytest.mark.parametrize("market", [Market.UM, Market.CM])
def test_check_listed_futures_one_parameterless_request_filtered(market: Market) -> None:
    listed = [f"S{i:03d}USD_PERP" for i in range(300)]
    rest = FuturesInfoRest(listed)
    wanted = listed[::2]  # 150 symbols: one request all the same (no 100-symbol chunks)
    info = asyncio.run(publish.check_listed(rest, wanted, market))
    assert rest.requests == [None]
    assert info["serverTime"] == 7 and [s["symbol"] for s in info["symbols"]] == wanted
    rest = FuturesInfoRest(listed)
    with pytest.raises(publish.UnlistedSymbols) as err:
        asyncio.run(publish.check_listed(rest, [listed[0], "NOPE_PERP", listed[1], "GONEUSDT"],
                                         market))  # fmt: skip
    assert err.value.symbols == ("NOPE_PERP", "GONEUSDT") and rest.requests == [None]


def test_read_listing_asks_per_market() -> None:
    """Spot: `symbols=[...]` up to 100, everything past that or after a -1121 (a delisting is
    then seen as absent, not as an error); futures: always the parameterless request."""

    class Recording(InfoRest):
        async def exchange_info(self, symbols: list[str] | None = None) -> dict[str, Any]:
            if symbols is None:
                self.requests.append(["*"])
                return {"symbols": [{"symbol": s} for s in sorted(self.listed)]}
            return await super().exchange_info(symbols)

    rest = Recording({"AUSDT", "BUSDT"})
    asyncio.run(publish.read_listing(rest, ["AUSDT"]))
    asyncio.run(publish.read_listing(rest, ["AUSDT", "GONEUSDT"]))
    asyncio.run(publish.read_listing(rest, [f"S{i:03d}USDT" for i in range(101)]))
    asyncio.run(publish.read_listing(rest, None))
    assert [r if r == ["*"] else len(r) for r in rest.requests] == [1, 2, ["*"], ["*"], ["*"]]
    futures = FuturesInfoRest(["BTCUSD_PERP"])
    info = asyncio.run(publish.read_listing(futures, ["BTCUSD_PERP"], Market.CM))
    assert futures.requests == [None] and info["symbols"] == [{"symbol": "BTCUSD_PERP"}]


@_SEEDED
@given(
    present=st.sets(st.integers(0, 300), max_size=20),
    first=st.integers(0, 300),
    span=st.integers(0, 300),
    market=st.sampled_from([Market.SPOT, Market.UM, Market.CM]),
)
def test_has_klines_sees_any_kline_of_the_range_on_every_market(
    present: set[int], first: int, span: int, market: Market
) -> None:
    """The silent-stream question. On COIN-M a one-bar request asks only the range's first bar
    (its window is bounded to `limit` bars): a halt ending inside the range must not read as
    'no kline'."""
    last = first + span
    rest = CoinMRest(present) if market is Market.CM else ListRest(present)
    got = asyncio.run(publish.has_klines(rest, "AAAUSDC", "1m", T0 + first * MINUTE,
                                         T0 + last * MINUTE, market=market))  # fmt: skip
    assert got == any(first <= i <= last for i in present)
    # the least weight per request: spot one request, futures pages of 99 bars (weight 1)
    assert rest.requests <= (1 if market is Market.SPOT else span // 99 + 1)
