"""Typed settings of one simulator run (built by the CLI, passed inward)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from binance_sim.market import SyntheticSpec
from binance_sim.ratelimit import DEFAULT_BAN_SECONDS
from klinelake import binance_limits as limits


@dataclass(frozen=True)
class SimConfig:
    data_dirs: tuple[Path, ...] = ()
    start_ms: int | None = None  # None: the real wall clock at startup
    speed: float = 1.0
    synthetic: tuple[SyntheticSpec, ...] = ()
    seed: int = 0
    latency_ms: int = 0
    # WebSocket lifecycle (fact sheet §3); ping/pong in real seconds, age in simulated seconds.
    ping_interval: float = limits.PING_INTERVAL_S
    pong_timeout: float = limits.PONG_TIMEOUT_S
    max_conn_age: float = limits.MAX_CONNECTION_AGE_S
    max_update_hz: float = 10.0
    max_streams: int = limits.MAX_STREAMS_PER_CONNECTION
    max_msgs_per_s: int = limits.MAX_INCOMING_MSGS_PER_S
    ws_conn_limit: int = limits.WS_CONNECTIONS_PER_WINDOW
    ws_conn_window: float = limits.WS_CONNECTION_WINDOW_S
    # REST limits (fact sheet §6, §8).
    weight_limit: int = limits.WEIGHT_LIMIT_1M
    weight_window: float = limits.WEIGHT_WINDOW_S
    ban_after: int = 3
    ban_seconds: tuple[float, ...] = DEFAULT_BAN_SECONDS
    limit_over_max: str = "error"  # "error" (-1130) or "clamp" (Binance's behaviour unconfirmed)
    admin: bool = True
    shutdown_grace: float = 1.0
