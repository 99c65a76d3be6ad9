"""Typed settings of one simulator run (built by the CLI, passed inward)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from binance_sim.market import SyntheticSpec
from binance_sim.ratelimit import DEFAULT_BAN_SECONDS


@dataclass(frozen=True)
class SimConfig:
    data_dirs: tuple[Path, ...] = ()
    start_ms: int | None = None  # None: the real wall clock at startup
    speed: float = 1.0
    synthetic: tuple[SyntheticSpec, ...] = ()
    seed: int = 0
    latency_ms: int = 0
    # WebSocket lifecycle (fact sheet §3); ping/pong in real seconds, age in simulated seconds.
    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    max_conn_age: float = 24 * 3600.0
    max_update_hz: float = 10.0
    max_streams: int = 1024
    max_msgs_per_s: int = 5
    ws_conn_limit: int = 300
    ws_conn_window: float = 300.0
    # REST limits (fact sheet §6, §8).
    weight_limit: int = 6000
    weight_window: float = 60.0
    ban_after: int = 3
    ban_seconds: tuple[float, ...] = DEFAULT_BAN_SECONDS
    limit_over_max: str = "error"  # "error" (-1130) or "clamp" (Binance's behaviour unconfirmed)
    admin: bool = True
    shutdown_grace: float = 1.0
