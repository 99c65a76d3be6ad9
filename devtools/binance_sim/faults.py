"""Fault state and run counters, changed by flags at startup and by `POST /_sim/faults`.

Accepted keys of a faults body (any subset, applied in one go):

    latency_ms: int            added delay before every REST answer
    rest_5xx: int              the next N REST requests answer `rest_5xx_status` (503: -1008,
    rest_5xx_status: 500|503   500: -1000)
    rest_429: int              the next N REST requests answer 429 -1003
    rest_418: int, ban_seconds the next N REST requests ban their IP for `ban_seconds` (418)
    ws_drop: true              abort every live WS connection (TCP reset, no close frame)
    ws_stall: bool             live and new connections send no frames until false;
    answer_pings: bool         ... while stalled, answer client pings or not
    ws_malformed: int          the next N frames on each live connection are garbage (sent
                               before real frames, never instead of them)
    ws_shutdown: true          send serverShutdown, then close after `shutdown_grace` s (1001)
    ws_cut: true               the 24 h cut, now (close 1000)
    halt: {symbol, interval, start, end}   no kline with open_time in [start, end] exists
    rest_block: 0|403|451      every REST request answers this status until set back to 0:
                               451 is Binance's answer to a restricted location (e.g. a US IP),
                               403 its WAF's (binance-spot-api.md §8)
    ws_block: 0|403|451        every WS handshake is refused with this status until 0
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

FAULT_KEYS = frozenset(
    {
        "latency_ms", "rest_5xx", "rest_5xx_status", "rest_429", "rest_418", "ban_seconds",
        "ws_drop", "ws_stall", "answer_pings", "ws_malformed", "ws_shutdown", "ws_cut",
        "shutdown_grace", "halt", "rest_block", "ws_block",
    }
)  # fmt: skip


BLOCK_STATUSES = frozenset({0, 403, 451})
# What Binance sends with them: 451 is JSON from the API (as reported by users on US addresses,
# binance-connector-python #190); 403 comes from the CDN's WAF as an HTML page.
RESTRICTED_LOCATION_MSG = (
    "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you "
    "received this message in error."
)
WAF_BODY = (
    b"<!DOCTYPE HTML PUBLIC><HTML><HEAD><TITLE>ERROR: The request could not be satisfied"
    b"</TITLE></HEAD><BODY><H1>403 ERROR</H1><H2>The request could not be satisfied.</H2>"
    b"Request blocked.</BODY></HTML>"
)


def block_answer(status: int) -> tuple[bytes, str]:
    """(body, content type) of a blocked answer with `status` 451 or 403."""
    if status == 451:
        return orjson.dumps({"code": 0, "msg": RESTRICTED_LOCATION_MSG}), "application/json"
    return WAF_BODY, "text/html"


class FaultError(ValueError):
    """A faults body the simulator cannot apply (unknown key, wrong type)."""


@dataclass
class Faults:
    latency_ms: int = 0
    rest_5xx: int = 0
    rest_5xx_status: int = 503
    rest_429: int = 0
    rest_418: int = 0
    ban_seconds: float = 120.0
    ws_stall: bool = False
    answer_pings: bool = True
    rest_block: int = 0
    ws_block: int = 0

    def update(self, body: dict[str, Any]) -> None:
        """Apply the REST/stall keys of `body`; WS actions and halts are the caller's."""
        unknown = set(body) - FAULT_KEYS
        if unknown:
            raise FaultError(f"unknown fault keys: {sorted(unknown)}")
        for key in ("latency_ms", "rest_5xx", "rest_429", "rest_418"):
            if key in body:
                setattr(self, key, _int(body, key))
        if "rest_5xx_status" in body:
            status = _int(body, "rest_5xx_status")
            if status not in (500, 503):
                raise FaultError("rest_5xx_status must be 500 or 503")
            self.rest_5xx_status = status
        for key in ("ban_seconds", "shutdown_grace"):
            value = body.get(key, 1)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise FaultError(f"{key} must be a positive number")
        if "ban_seconds" in body:
            self.ban_seconds = float(body["ban_seconds"])
        for key in ("ws_stall", "answer_pings"):
            if key in body:
                if not isinstance(body[key], bool):
                    raise FaultError(f"{key} must be a boolean")
                setattr(self, key, body[key])
        for key in ("rest_block", "ws_block"):
            if key in body:
                status = _int(body, key)
                if status not in BLOCK_STATUSES:
                    raise FaultError(f"{key} must be one of {sorted(BLOCK_STATUSES)}")
                setattr(self, key, status)
        if "ws_malformed" in body:
            _int(body, "ws_malformed")

    def take(self, name: str) -> bool:
        """Consume one of a counted REST fault (`rest_5xx`, `rest_429`, `rest_418`)."""
        left: int = getattr(self, name)
        if left > 0:
            setattr(self, name, left - 1)
            return True
        return False


def _int(body: dict[str, Any], key: str) -> int:
    value = body[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FaultError(f"{key} must be a non-negative integer")
    return value


@dataclass
class Stats:
    """What `GET /_sim/state` reports."""

    requests: int = 0
    weight: int = 0
    responses_429: int = 0
    responses_418: int = 0
    requests_while_banned: int = 0
    responses_5xx: int = 0
    responses_gzipped: int = 0
    ws_opened: int = 0
    ws_active: int = 0
    ws_refused: int = 0
    responses_blocked: int = 0
    ws_frames_sent: int = 0
    ws_frames_received: int = 0
    ws_pings_sent: int = 0
    ws_pongs_received: int = 0
    ws_closed_rate: int = 0
    ws_closed_pong_timeout: int = 0
    ws_closed_age: int = 0
    closed_klines_sent: Counter[str] = field(default_factory=Counter)
    rest_requests: Counter[str] = field(default_factory=Counter)  # by path, e.g. /api/v3/klines
    archives_served: Counter[str] = field(default_factory=Counter)  # zips: monthly, daily

    def to_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in self.__dict__.items()}
