"""Typed settings of one streamer run (built by the CLI at the edge, passed inward)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from klinelake.config import (
    DEFAULT_LAKE_URI,
    DEFAULT_REST_URL,
    DEFAULT_WS_URL,
    check_topic,
    split_csv,
)
from klinelake.core.binance_limits import MAX_STREAMS_PER_CONNECTION
from klinelake.core.binance_ws import stream_name
from klinelake.core.intervals import check_interval
from klinelake.core.markets import Market, check_market_interval, spec
from klinelake.core.selector import SymbolSet
from klinelake.core.symbols import stream_id, validate_symbol


@dataclass(frozen=True, slots=True)
class StreamSpec:
    symbol: str  # uppercase exchange symbol
    interval: str
    market: Market = Market.SPOT

    @property
    def sid(self) -> str:
        return stream_id(self.symbol, self.interval, self.market)

    @property
    def ws_name(self) -> str:
        return stream_name(self.symbol, self.interval)


@dataclass(frozen=True)
class Settings:
    """Validated when built: a Settings that exists can run (ValueError names the field)."""

    streams: tuple[StreamSpec, ...]
    topic: str | None = None
    lake_uri: str = DEFAULT_LAKE_URI
    rest_url: str = DEFAULT_REST_URL
    ws_url: str = DEFAULT_WS_URL
    state_dir: Path = Path("state")
    streams_per_connection: int = MAX_STREAMS_PER_CONNECTION
    health_port: int | None = None
    clock_speed: float = 1.0
    drain_timeout_s: float = 10.0
    # Replace a connection this long (server time) after it opened: before Binance's 24 h cut.
    max_conn_age_s: float = 23 * 3600.0
    # A closed kline is due this long (server time) after its close; at accelerated clocks a
    # floor in real seconds keeps scheduling jitter from looking like a stall.
    stall_grace_s: float = 30.0
    stall_grace_real_s: float = 3.0
    health_interval_s: float = 2.0
    # FLUSH_WINDOW_S (server seconds): hold closed klines up to this, then one message
    flush_window_s: float = 0.0
    subscribe_params: int = 200
    subscribe_timeout_s: float = 10.0
    publish_timeout_s: float = 60.0
    # exchangeInfo must answer within this (real) time at startup, else exit EXIT_BLOCKED: with
    # systemd's RestartSec=5 and StartLimitBurst=5 the unit then fails within
    # StartLimitIntervalSec (tests/infra checks the arithmetic).
    exchange_info_deadline_s: float = 60.0
    log_level: str = "INFO"
    market: Market = Market.SPOT  # one market per process (docs/markets.md)
    # A selector (`um:quote=USDT`) resolved from exchangeInfo at start; `streams` then empty.
    symbol_set: SymbolSet | None = None
    intervals: tuple[str, ...] = ()  # with a selector: the intervals of every selected symbol
    exchange_info_interval_s: float = 60.0  # re-read (real s): listings, delistings, BREAK

    @property
    def subscribe_frames_per_s(self) -> float:
        """Under the 5 (spot) / 10 (futures) incoming messages per second (FS §3), with room
        for pongs."""
        return spec(self.market).max_incoming_msgs_per_s * 0.8

    def __post_init__(self) -> None:
        selector = self.symbol_set is not None and self.symbol_set.is_selector
        if not self.streams and not (selector and self.intervals):
            raise ValueError("streams: at least one symbol and one interval are needed")
        if self.topic is not None:
            check_topic(self.topic)
        for name, url, schemes in (
            ("rest_url", self.rest_url, ("http://", "https://")),
            ("ws_url", self.ws_url, ("ws://", "wss://")),
        ):
            if not url.startswith(schemes) or len(url) <= len(url.split("//")[0]) + 2:
                raise ValueError(f"{name} {url!r}: expected {' or '.join(schemes)}HOST[:PORT]")
        if not 1 <= self.streams_per_connection <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"streams_per_connection must be 1..{MAX_STREAMS_PER_CONNECTION}")
        for name in ("clock_speed", "drain_timeout_s", "max_conn_age_s", "subscribe_timeout_s",
                     "publish_timeout_s", "exchange_info_deadline_s"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.flush_window_s <= 86_400:
            raise ValueError(f"flush_window_s must be 0..86400 seconds, got {self.flush_window_s}")
        if self.health_port is not None and not 0 <= self.health_port <= 65535:
            raise ValueError(f"health_port {self.health_port} is not a TCP port")

    @property
    def stall_grace_ms(self) -> int:
        return int(max(self.stall_grace_s, self.stall_grace_real_s * self.clock_speed) * 1000)


def parse_intervals(intervals: str, market: Market = Market.SPOT) -> tuple[str, ...]:
    """`1m,1h` → ("1m", "1h"), each valid on `market` (futures have no `1s`)."""
    return tuple(check_market_interval(market, check_interval(i)) for i in split_csv(intervals))


def parse_streams(
    symbols: str, intervals: str, market: Market = Market.SPOT
) -> tuple[StreamSpec, ...]:
    """`--symbols BTCUSDC,ETHUSDC --intervals 1m,1h` → every (symbol, interval) pair, in order."""
    syms = [validate_symbol(s.upper()) for s in split_csv(symbols)]
    ivs = parse_intervals(intervals, market)
    if not syms or not ivs:
        raise ValueError("at least one symbol and one interval are needed")
    seen: dict[str, StreamSpec] = {}
    for s in syms:
        for i in ivs:
            stream = StreamSpec(s, i, market)
            seen.setdefault(stream.sid, stream)
    return tuple(seen.values())
