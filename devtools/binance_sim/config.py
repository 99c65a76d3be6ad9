"""Typed settings of one simulator run (built by the CLI, passed inward)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from binance_sim.contracts import Contract
from binance_sim.market import SyntheticSpec
from binance_sim.ratelimit import DEFAULT_BAN_SECONDS
from klinelake.core import binance_limits as limits
from klinelake.core.markets import Market, spec

_SPOT, _FUTURES = spec(Market.SPOT), spec(Market.UM)  # (USD-M and COIN-M share these)


@dataclass(frozen=True)
class SimConfig:
    data_dirs: tuple[Path, ...] = ()
    start_ms: int | None = None  # None: the real wall clock at startup
    speed: float = 1.0
    synthetic: tuple[SyntheticSpec, ...] = ()
    seed: int = 0
    latency_ms: int = 0
    # WebSocket lifecycle (fact sheet §3); ping/pong in real seconds, age in simulated seconds.
    ping_interval: float = _SPOT.ping_interval_s
    pong_timeout: float = _SPOT.pong_timeout_s
    max_conn_age: float = limits.MAX_CONNECTION_AGE_S
    max_update_hz: float = 10.0
    max_streams: int = _SPOT.max_streams_per_connection
    max_msgs_per_s: int = _SPOT.max_incoming_msgs_per_s
    ws_conn_limit: int = limits.WS_CONNECTIONS_PER_WINDOW
    ws_conn_window: float = limits.WS_CONNECTION_WINDOW_S
    # REST limits (fact sheet §6, §8).
    weight_limit: int = _SPOT.weight_limit_1m
    weight_window: float = limits.WEIGHT_WINDOW_S
    ban_after: int = 3
    ban_seconds: tuple[float, ...] = DEFAULT_BAN_SECONDS
    limit_over_max: str = "error"  # "error" (-1130) or "clamp" (Binance's behaviour unconfirmed)
    # REST bodies gzipped: "off"; "accepted", when the request's Accept-Encoding names gzip (as
    # HTTP servers do, Binance's included); "always", whatever was asked (client libraries
    # report Binance endpoints that compress unasked: docs/architecture.md).
    gzip: str = "off"
    admin: bool = True
    shutdown_grace: float = 1.0
    forming_update_ms: int = _SPOT.update_ms  # open-kline push cadence in simulated ms (spot 2 s)
    # Which market's WS protocol rules a Sim applies (binance_sim.ws_control.ws_rules): the
    # run is spot; the futures venues are um / cm (binance_sim.futures.make_venues).
    venue_market: Market = Market.SPOT
    # Futures (binance-futures-api.md): the contracts listed, and each market's limits.
    futures: tuple[Contract, ...] = ()
    futures_weight_limit: int = _FUTURES.weight_limit_1m  # one pool for /fapi and /dapi per IP (§8)
    futures_ping_interval: float = _FUTURES.ping_interval_s  # real seconds (§3)
    futures_pong_timeout: float = _FUTURES.pong_timeout_s
    futures_update_ms: int = _FUTURES.update_ms  # §2
