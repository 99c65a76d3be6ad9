"""The three Binance kline markets and everything that differs between them, in one table.

A market is part of a stream's identity (DESIGN.md contracts 2 and 3): `spot`, `um` (USDⓈ-M
futures) and `cm` (COIN-M futures). Spot names stay exactly as they were before markets existed:

    market  object name                          ordering key / stream id   message `market`
    spot    raw/binance_btcusdt_1m.jsonl         BTCUSDT@1m                 absent (= spot)
    um      raw/binance-um_btcusdt_1m.jsonl      um:BTCUSDT@1m              "um"
    cm      raw/binance-cm_btcusd_perp_1h.jsonl  cm:BTCUSD_PERP@1h          "cm"

Every fact below cites the fact sheets beside DESIGN.md (`binance-spot-api.md`,
`binance-futures-api.md`, "FS §n"). Pure: no I/O, no imports beyond the standard library.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

from klinelake.core.intervals import NOMINAL_MS

DAY_MS = 86_400_000


class Market(enum.StrEnum):
    SPOT = "spot"
    UM = "um"
    CM = "cm"


# Lake row keys per market, in contract order. Spot and USD-M share contract 1. COIN-M's
# volume columns mean other things (FS §2, §6: REST idx 5 / WS `v` = contracts, idx 7 / `q` =
# base asset, idx 9 / `V` = taker-buy contracts, idx 10 / `Q` = taker-buy base), so its rows
# name them by meaning (DESIGN.md contract 2). The n-th key always holds the n-th value of
# `Kline.values()`, whatever the market.
SPOT_ROW_KEYS: tuple[str, ...] = (
    "open_time", "close_time", "symbol", "interval", "open", "high", "low", "close",
    "volume", "quote_volume", "trades", "taker_buy_base_volume", "taker_buy_quote_volume",
)  # fmt: skip
CM_ROW_KEYS: tuple[str, ...] = (
    "open_time", "close_time", "symbol", "interval", "open", "high", "low", "close",
    "volume", "base_volume", "trades", "taker_buy_volume", "taker_buy_base_volume",
)  # fmt: skip

_SPOT_INTERVALS = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
    "1d", "3d", "1w", "1M",
)  # fmt: skip
# FS §2: no `1s` on futures `@kline_` streams, none in futures archives (§10); treat as unsupported.
_FUTURES_INTERVALS = _SPOT_INTERVALS[1:]


def _spot_kline_weight(limit: int) -> int:
    """Spot `GET /api/v3/klines` costs a flat 2 (binance-spot-api.md §6)."""
    return 2


def _futures_kline_weight(limit: int) -> int:
    """FS §6: weight by `limit`: [1,100) → 1, [100,500) → 2, [500,1000] → 5, > 1000 → 10."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """What a client, a simulator and the lake need to know about one market."""

    market: Market
    object_token: str  # first `_`-token of the object name (DESIGN.md contract 2)
    rest_url: str  # default REST base
    ws_url: str  # default WS base (without the route)
    ws_route: str  # path prefix before /ws and /stream: USD-M klines need "/market" (FS §1)
    api_prefix: str  # "/api/v3", "/fapi/v1", "/dapi/v1"
    max_limit: int  # klines `limit` ceiling (spot 1000, futures 1500: FS §6)
    default_limit: int  # what the server uses without `limit`
    weight_limit_1m: int  # REQUEST_WEIGHT per IP per minute (spot 6000, futures 2400: FS §8)
    exchange_info_weight: int  # spot 20, futures 1 (FS §7)
    time_weight: int
    # COIN-M: endTime − startTime ≤ 200 days and the server returns the NEWEST `limit` bars of
    # the window (FS §6). None: the window is unbounded and pages start at startTime.
    max_window_ms: int | None
    intervals: tuple[str, ...]
    status_key: str  # exchangeInfo symbol key: spot/UM "status", CM "contractStatus" (FS §7)
    update_ms: int  # open-kline push cadence (spot 2000, futures 250: FS §2)
    ping_interval_s: float  # server pings (spot 20 s, futures 3 min: FS §3)
    pong_timeout_s: float  # server drops a client silent this long (spot 60 s, futures 10 min)
    max_incoming_msgs_per_s: int  # client frames per connection per second (spot 5, futures 10)
    max_streams_per_connection: int  # 1024 on all three
    archive_prefix: str  # data.binance.vision path below the host (FS §10)
    archive_has_header: bool  # futures CSVs start with a header row, older ones may not (FS §10)
    row_keys: tuple[str, ...]

    @property
    def klines_path(self) -> str:
        return f"{self.api_prefix}/klines"

    @property
    def exchange_info_path(self) -> str:
        return f"{self.api_prefix}/exchangeInfo"

    @property
    def time_path(self) -> str:
        return f"{self.api_prefix}/time"

    @property
    def is_futures(self) -> bool:
        return self.market is not Market.SPOT

    def weight_for_limit(self, limit: int) -> int:
        """Request weight of one `klines` call with this `limit`."""
        if self.is_futures:
            return _futures_kline_weight(limit)
        return _spot_kline_weight(limit)

    @property
    def cheapest_page_limit(self) -> int:
        """The `limit` that buys the most bars per unit of weight: 1000 on spot (flat 2), 499
        on futures (499 bars for 2, against 1000 for 5 or 1500 for 10: FS §6)."""
        return _cheapest_page_limit(self)


# A search over every limit: read once per request in the backfill, so computed once per market.
@functools.cache
def _cheapest_page_limit(s: MarketSpec) -> int:
    return max(range(1, s.max_limit + 1), key=lambda n: (n / s.weight_for_limit(n), n))


# The market table: one row per fact, one column per market (spot, USD-M, COIN-M).
_TABLE: dict[str, tuple[Any, Any, Any]] = {
    "object_token": ("binance", "binance-um", "binance-cm"),
    "rest_url": ("https://api.binance.com", "https://fapi.binance.com", "https://dapi.binance.com"),
    "ws_url": ("wss://stream.binance.com:9443", "wss://fstream.binance.com",
               "wss://dstream.binance.com"),
    # Since 2026-04-23 an unrouted fstream connection carries no klines; dstream has no
    # routes (FS §1).
    "ws_route": ("", "/market", ""),
    "api_prefix": ("/api/v3", "/fapi/v1", "/dapi/v1"),
    "max_limit": (1000, 1500, 1500),
    "default_limit": (500, 500, 500),
    # COIN-M shares USD-M's 2400 pool since 2026-06-30 (FS §8).
    "weight_limit_1m": (6000, 2400, 2400),
    "exchange_info_weight": (20, 1, 1),
    "time_weight": (1, 1, 1),
    "max_window_ms": (None, None, 200 * DAY_MS),
    "intervals": (_SPOT_INTERVALS, _FUTURES_INTERVALS, _FUTURES_INTERVALS),
    "status_key": ("status", "status", "contractStatus"),
    "update_ms": (2000, 250, 250),
    "ping_interval_s": (20.0, 180.0, 180.0),
    "pong_timeout_s": (60.0, 600.0, 600.0),
    "max_incoming_msgs_per_s": (5, 10, 10),
    "max_streams_per_connection": (1024, 1024, 1024),
    "archive_prefix": ("data/spot", "data/futures/um", "data/futures/cm"),
    "archive_has_header": (False, True, True),
    "row_keys": (SPOT_ROW_KEYS, SPOT_ROW_KEYS, CM_ROW_KEYS),
}  # fmt: skip
SPECS: dict[Market, MarketSpec] = {
    m: MarketSpec(market=m, **{field: column[i] for field, column in _TABLE.items()})
    for i, m in enumerate((Market.SPOT, Market.UM, Market.CM))
}

_BY_TOKEN: dict[str, Market] = {spec.object_token: m for m, spec in SPECS.items()}
_BY_NAME: dict[str, Market] = {m.value: m for m in Market}
# Perpetuals carry this deliveryDate (2100-12-25) in futures exchangeInfo (FS §7).
PERPETUAL_DELIVERY_DATE = 4_133_404_800_000
# Statuses in which a symbol's klines keep coming (spot: binance-spot-api.md; futures: FS §7).
TRADING = "TRADING"


def parse_market(value: object) -> Market:
    """`Market` for "spot" / "um" / "cm"; anything else raises ValueError naming the choices."""
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    raise ValueError(
        f"unknown market {value!r}: expected one of {', '.join(m.value for m in Market)}"
    )


def spec(market: Market | str) -> MarketSpec:
    return SPECS[parse_market(market)]


def market_of_token(token: str) -> Market | None:
    """The market an object name's first token names (`binance-um` → um), None if none."""
    return _BY_TOKEN.get(token)


def row_keys(market: Market | str) -> tuple[str, ...]:
    return spec(market).row_keys


def stream_key(market: Market | str, symbol: str, interval: str) -> str:
    """`BTCUSDT@1m` (spot, as ever) or `um:BTCUSDT@1m`: ordering key, state and log name."""
    m = parse_market(market)
    base = f"{symbol}@{interval}"
    return base if m is Market.SPOT else f"{m.value}:{base}"


def split_stream_key(key: str) -> tuple[Market, str, str]:
    """Inverse of `stream_key`: (market, symbol, interval); ValueError if it is not one."""
    market: Market = Market.SPOT
    head, colon, rest = key.partition(":")
    if colon:
        market, key = parse_market(head), rest
    symbol, at, interval = key.rpartition("@")
    if not at or not symbol or not interval:
        raise ValueError(f"not a stream key: {key!r} (expected [market:]SYMBOL@interval)")
    return market, symbol, interval


def window_for_page(
    market: Market | str, start_ms: int, end_ms: int, interval: str, limit: int
) -> int:
    """The `endTime` to send for a page of at most `limit` bars that must start at `start_ms`.

    Spot and USD-M page forward from `startTime`, so `end_ms` is sent as is. COIN-M returns the
    NEWEST `limit` bars of [startTime, endTime] (FS §6), so the window is bounded to `limit`
    bars from its start (as ccxt does: ccxt#8454) and to 200 days. Months count as 28 days
    here, so a window never holds more than `limit` bars.
    """
    s = spec(market)
    if s.max_window_ms is None:
        return end_ms
    bar_ms = 28 * DAY_MS if interval == "1M" else NOMINAL_MS[interval]
    return min(end_ms, start_ms + limit * bar_ms - 1, start_ms + s.max_window_ms)


def page_bars(market: Market | str, interval: str, limit: int) -> int:
    """Bars per backfill page: `limit`, or fewer on COIN-M where 200 days must hold them."""
    s = spec(market)
    if s.max_window_ms is None:
        return limit
    bar_ms = 31 * DAY_MS if interval == "1M" else NOMINAL_MS[interval]
    return max(1, min(limit, s.max_window_ms // bar_ms))


def archive_path(market: Market | str, period: str, symbol: str, interval: str, date: str) -> str:
    """`data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip` (FS §10).

    `period` is "monthly" or "daily", `date` "YYYY-MM" or "YYYY-MM-DD". `1M` is `1mo` there.
    """
    name = "1mo" if interval == "1M" else interval
    s = spec(market)
    return f"{s.archive_prefix}/{period}/klines/{symbol}/{name}/{symbol}-{name}-{date}.zip"


def check_market_interval(market: Market | str, interval: str) -> str:
    """`interval` if the market has it (futures have no `1s`: FS §2), else InvalidInterval."""
    from klinelake.core.errors import InvalidInterval  # errors is pure; imported late to stay leaf

    s = spec(market)
    if interval not in s.intervals:
        raise InvalidInterval(
            f"invalid interval {interval!r} for market {s.market.value}: expected one of "
            f"{' '.join(s.intervals)} (case-sensitive: 1m is a minute, 1M a month)"
        )
    return interval
