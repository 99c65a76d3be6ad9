"""The WebSocket control-frame protocol of the simulator (fact sheet §4), without sockets.

`control_reply` answers one text frame (SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS /
SET_PROPERTY / GET_PROPERTY) from a connection's subscriptions and `combined` flag, and says
what to change (`Reply`); `classify` reads a stream name; `SlidingWindow` is the rate limit both
on messages per second and on connection attempts per IP. `binance_sim.ws` applies the replies
to its sockets.

`WsRules` is what differs between the markets' WS endpoints, from `klinelake.core.markets` (one
table): futures have no `1s` kline streams, no `@+08:00` variant and no `timeUnit` option, and
close the connection after the code-3 reply to invalid JSON (binance-futures-api.md §1-§3). The
numeric limits (5 / 10 client frames per second, pings every 20 s / 3 min, pong deadlines,
1024 streams) are the run's `SimConfig`, which `binance_sim.futures` fills from the same
table (all configurable); USD-M's `/market` route is `binance_sim.futures.ws_paths`.

Undocumented choice: a 1025th stream is refused with `{"error":{"code":2,"msg":"Invalid
request: too many streams"},"id":..}`.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from klinelake.core.intervals import interval_ms
from klinelake.core.markets import Market, spec

_NAME = re.compile(r"[^\s@/\"\\]{1,64}(?:@[A-Za-z0-9_:+.!-]{1,32}){1,2}")
_KLINE = re.compile(r"(?P<sym>[^@]+)@kline_(?P<iv>[^@]+)(?P<tz>@\+08:00)?")
_ID = re.compile(r"[A-Za-z0-9]{1,36}")
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_EIGHT_HOURS = 8 * 3600 * 1000
_COMBINED_PATH = re.compile(r"(?:^|/)stream$")


def is_combined_path(path: str) -> bool:
    """`/stream`, also under a host prefix or route (`/fstream/market/stream`: futures.py)."""
    return _COMBINED_PATH.search(path) is not None


@dataclass(frozen=True, slots=True)
class WsRules:
    """The WS protocol differences of one market."""

    intervals: frozenset[str]  # kline stream intervals (futures: no `1s`, FS §2)
    timezone_variant: bool  # spot's `@+08:00` kline streams (none on futures, FS §2)
    time_unit: bool  # spot's `timeUnit=MICROSECOND` (futures: milliseconds only, FS §1)
    close_on_invalid_json: bool  # futures: the code-3 reply, then a disconnect (FS §3)


def ws_rules(market: Market | str) -> WsRules:
    s = spec(market)
    return WsRules(
        intervals=frozenset(s.intervals),
        timezone_variant=not s.is_futures,
        time_unit=not s.is_futures,
        close_on_invalid_json=s.is_futures,
    )


SPOT_RULES = ws_rules(Market.SPOT)


class ControlError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


@dataclass
class Sub:
    """One subscription; `symbol` None means well-formed but unknown: acked, never data."""

    name: str
    symbol: str | None
    interval: str
    next_close: int = 0
    next_forming_sim: int = 0
    last_forming_real: float = -1e9


def classify(
    served: Callable[[str, str], bool], name: str, rules: WsRules = SPOT_RULES
) -> Sub | None:
    """A `Sub` for a well-formed stream name, None for a malformed one (error code 2);
    `served(symbol, interval)` says whether the market has that series; `rules` which kline
    names the market has at all (futures: no `1s`, no `@+08:00`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return None
    symbol_part, _, rest = name.partition("@")
    key = f"{symbol_part.lower()}@{rest}"
    m = _KLINE.fullmatch(name)
    if m is None:
        return Sub(key, None, "")
    interval = m["iv"]
    if interval not in rules.intervals or (m["tz"] and not rules.timezone_variant):
        return None
    symbol = m["sym"].upper()
    has = served(symbol, interval)
    # @+08:00 boundaries equal UTC ones when the interval divides 8 h; others stay silent.
    if m["tz"] and (interval == "1M" or _EIGHT_HOURS % interval_ms(interval)):
        has = False
    return Sub(key, symbol if has else None, interval)


@dataclass
class Reply:
    """The answer to send, and what it changes on the connection."""

    payload: bytes
    subscribe: list[Sub] = field(default_factory=list)
    unsubscribe: list[str] = field(default_factory=list)
    combined: bool | None = None  # SET_PROPERTY combined
    error_code: int | None = None  # the error reply's code (3: invalid JSON)


@dataclass(frozen=True)
class ConnView:
    """What a control frame may read of its connection."""

    subs: Mapping[str, Sub]
    combined: bool
    classify_name: Callable[[str], Sub | None]
    max_streams: int


def control_reply(text: str, conn: ConnView) -> Reply:
    req_id: Any = None
    try:
        try:
            req = json.loads(text)
        except (ValueError, RecursionError) as exc:
            line, col = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
            msg = f"Invalid JSON: expected value at line {line} column {col}"
            raise ControlError(3, msg) from None
        if not isinstance(req, dict):
            raise ControlError(2, "Invalid request: expected a JSON object")
        req_id = req.get("id")
        if not _valid_id(req_id):
            req_id = None
            raise ControlError(2, "Invalid request: request ID must be an unsigned integer")
        if "method" not in req:
            raise ControlError(
                2, f"Invalid request: missing field `method` at line 1 column {len(text)}"
            )
        method = req["method"]
        if method not in _METHODS:
            shown = method if isinstance(method, str) else json.dumps(method)
            col = text.find(json.dumps(method)) + len(json.dumps(method))
            raise ControlError(
                2,
                f"Invalid request: unknown variant `{shown}`, expected one of `SUBSCRIBE`, "
                "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` "
                f"at line 1 column {max(col, 1)}",
            )
        reply = Reply(b"")
        result = _method(reply, method, req.get("params"), conn)
        reply.payload = orjson.dumps({"result": result, "id": req_id})
        return reply
    except ControlError as exc:
        body = {"error": {"code": exc.code, "msg": exc.msg}, "id": req_id}
        return Reply(orjson.dumps(body), error_code=exc.code)


def _method(reply: Reply, method: str, params: Any, conn: ConnView) -> Any:
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not isinstance(params, list):
            raise ControlError(2, "Invalid request: missing field `params`")
        found = [conn.classify_name(p) if isinstance(p, str) else None for p in params]
        valid = [s for s in found if s is not None]
        if len(valid) != len(found):
            raise ControlError(2, "Invalid request: invalid stream")
        if method == "UNSUBSCRIBE":
            reply.unsubscribe = [s.name for s in valid]
            return None
        new = {s.name for s in valid} - set(conn.subs)
        if len(conn.subs) + len(new) > conn.max_streams:
            raise ControlError(2, "Invalid request: too many streams")
        reply.subscribe = valid
        return None
    if method == "LIST_SUBSCRIPTIONS":
        return list(conn.subs)
    if not isinstance(params, list) or not params:
        raise ControlError(2, "Invalid request: missing field `params`")
    if len(params) > (2 if method == "SET_PROPERTY" else 1):
        raise ControlError(2, "Invalid request: too many parameters")
    if not isinstance(params[0], str):
        raise ControlError(2, "Invalid request: property name must be a string")
    if params[0] != "combined":
        raise ControlError(0, "Unknown property")
    if method == "GET_PROPERTY":
        return conn.combined
    if len(params) < 2 or not isinstance(params[1], bool):
        raise ControlError(1, "Invalid value type: expected Boolean")
    reply.combined = params[1]
    return None


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str) and bool(_ID.fullmatch(value))


@dataclass
class SlidingWindow:
    """At most `limit` events in any `window_s` (times from the caller's clock; the limits are
    read at each event, as the simulator's config may change while it runs)."""

    times: deque[float] = field(default_factory=deque)

    def admit(self, now: float, *, limit: int, window_s: float) -> bool:
        """Record an event at `now`; False (not recorded) when it would exceed the limit."""
        while self.times and now - self.times[0] >= window_s:
            self.times.popleft()
        if len(self.times) >= limit:
            return False
        self.times.append(now)
        return True
