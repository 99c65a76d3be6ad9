"""Parsing of Binance WebSocket market-stream frames (pure: text in, events out)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from klinelake.core.errors import InvalidData, InvalidRow
from klinelake.core.intervals import NOMINAL_MS
from klinelake.core.json_input import load_json
from klinelake.core.markets import Market
from klinelake.core.row import Kline, to_millis

_STREAM = re.compile(r"(?P<symbol>[^@/\s]+)@kline_(?P<interval>[0-9]+[smhdwM])(?:@\+08:00)?")


@dataclass(frozen=True, slots=True)
class KlineEvent:
    """A kline update; `closed` is Binance's `k.x` (only closed klines reach the lake)."""

    stream: str | None
    event_time: int
    kline: Kline
    closed: bool


@dataclass(frozen=True, slots=True)
class ControlReply:
    """Reply to SUBSCRIBE & co.: `{"result":null,"id":1}` or `{"error":{...},"id":2}`."""

    id: Any
    result: Any
    error_code: int | None = None
    error_msg: str | None = None


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """`{"e":"serverShutdown","E":...}`: reconnect at once (added 2026-05-08)."""

    event_time: int


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """A well-formed event of another type (trade, depth...): ignored by the streamer."""

    stream: str | None
    event_type: str


WsMessage = KlineEvent | ControlReply | ServerShutdown | OtherEvent


def stream_name(symbol: str, interval: str) -> str:
    """`btcusdt@kline_1m`: lowercase symbol, case-sensitive interval."""
    return f"{symbol.lower()}@kline_{interval}"


def parse_stream_name(name: str) -> tuple[str, str] | None:
    m = _STREAM.fullmatch(name)
    if not m or m["interval"] not in NOMINAL_MS:
        return None
    return m["symbol"], m["interval"]


def parse_kline_payload(
    data: dict[str, Any], stream: str | None = None, market: Market = Market.SPOT
) -> KlineEvent:
    """The raw kline event (same keys on every market; on COIN-M `v`/`V` are contracts and
    `q`/`Q` base-asset volumes, binance-futures-api.md §2: kept in the same slots, named by
    meaning when serialised):

    {"e":"kline","E":1617566591776,"s":"ETHUSDT","k":{"t":1617566580000,"T":1617566639999,
     "s":"ETHUSDT","i":"1m","f":346711017,"L":346711087,"o":"2063.88000000","c":"2064.73000000",
     "h":"2065.00000000","l":"2063.88000000","v":"70.86425000","n":71,"x":false,
     "q":"146321.71560700","V":"46.98201000","Q":"97009.77617410","B":"0"}}
    """
    k = data.get("k")
    if not isinstance(k, dict):
        raise InvalidRow("k", k, "kline event without a 'k' object", where="ws frame")
    where = f"ws frame {stream or data.get('s')}"
    for key in ("t", "T", "s", "i", "o", "h", "l", "c", "v", "n", "x", "q", "V", "Q"):
        if key not in k:
            raise InvalidRow(f"k.{key}", None, "missing", where=where)
    if data.get("s") is not None and data.get("s") != k["s"]:
        raise InvalidRow("s", data.get("s"), f"differs from k.s {k['s']!r}", where=where)
    if type(k["x"]) is not bool:
        raise InvalidRow("k.x", k["x"], "must be a boolean", where=where)
    event_time = data.get("E")
    if type(event_time) is not int:
        raise InvalidRow("E", event_time, "must be an integer", where=where)
    if not isinstance(k["s"], str) or not isinstance(k["i"], str):
        raise InvalidRow("k.s", k["s"], "symbol and interval must be strings", where=where)
    if stream is not None:
        parsed = parse_stream_name(stream)
        if parsed is None or parsed != (k["s"].lower(), k["i"]):
            raise InvalidRow("stream", stream, f"does not match {k['s']}@{k['i']}", where=where)
    try:
        kline = Kline(
            open_time=to_millis(k["t"], "k.t", where),
            close_time=to_millis(k["T"], "k.T", where),
            symbol=k["s"],
            interval=k["i"],
            open=k["o"],
            high=k["h"],
            low=k["l"],
            close=k["c"],
            volume=k["v"],
            quote_volume=k["q"],
            trades=k["n"],
            taker_buy_base_volume=k["V"],
            taker_buy_quote_volume=k["Q"],
            market=market,
        )
    except InvalidRow as exc:
        names = {"open_time": "k.t", "close_time": "k.T", "trades": "k.n", "open": "k.o"}
        raise InvalidRow(
            names.get(exc.field, exc.field), exc.value, exc.reason, where=where
        ) from None
    return KlineEvent(stream, to_millis(event_time, "E", where), kline, k["x"])


def parse_ws_frame(frame: str | bytes, market: Market = Market.SPOT) -> WsMessage:
    """Any text frame of a raw (`/ws`) or combined (`/stream`) market-stream connection of
    `market` (a connection serves one market)."""
    obj = load_json(frame, "ws frame", dict)
    if "id" in obj and ("result" in obj or "error" in obj):
        err = obj.get("error")
        if isinstance(err, dict):
            return ControlReply(obj["id"], None, err.get("code"), err.get("msg"))
        return ControlReply(obj["id"], obj.get("result"))
    stream: str | None = None
    data: Any = obj
    if "stream" in obj and "data" in obj:
        stream, data = obj["stream"], obj["data"]
        if not isinstance(stream, str) or not isinstance(data, dict):
            raise InvalidData(f"malformed combined-stream frame: {str(obj)[:80]}")
    event_type = data.get("e")
    if event_type == "kline":
        return parse_kline_payload(data, stream, market)
    if event_type == "serverShutdown":
        return ServerShutdown(int(data.get("E") or 0))
    if isinstance(event_type, str):
        return OtherEvent(stream, event_type)
    raise InvalidData(f"ws frame has no event type: {str(obj)[:80]}")


# --- forming frames without parsing (the streamer's hot path) ------------------------------
#
# At Binance's cadence most frames are forming klines (`"x":false`, every 2 s per stream), which
# the streamer only needs for their event time. A combined-stream forming frame exactly as
# Binance lays it out (compact, keys in the documented order) is recognised by its bytes with
# the ASCII digits deleted; anything else (closed klines, other events, garbage, a layout we
# do not expect) returns None and goes through `parse_ws_frame`, which counts what is malformed.

_COMBINED_PREFIX = b'{"stream":"'
_ASCII_DIGITS = b"0123456789"
_EVENT_TIME_AT = len(b'","data":{"e":"kline","E":')
# Removing digits hides where a digit run is empty ("1.", ".5", "E":,) or starts with a zero
# that JSON forbids ("t":007): such spellings must go to the full parser. (Substring searches,
# not the regex `"\.|\."|:-?,|:-?0[0-9]` they equal: that was half of this function's CPU.)
_ZERO_AFTER_COLON = (b":0", b":-0")


def _degenerate_number(frame: bytes) -> bool:
    """An empty digit run or a number with a leading zero (`:0` then a digit) in `frame`."""
    if b'".' in frame or b'."' in frame or b":," in frame or b":-," in frame:  # empty runs
        return True
    for zero in _ZERO_AFTER_COLON:
        at = frame.find(zero)
        while at != -1:
            after = at + len(zero)
            if after < len(frame) and 48 <= frame[after] <= 57:  # an ASCII digit
                return True
            at = frame.find(zero, after)
    return False


@functools.lru_cache(maxsize=65_536)  # one entry per subscribed stream
def forming_frame_shapes(stream: bytes) -> frozenset[bytes]:
    """The digit-free bytes of a well-formed forming frame of `stream`, with trades and
    without (`"f":-1,"L":-1`); empty if the name is not a kline stream:

    {"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1617566591776,"s":"BTCUSDT","k":{
     "t":1617566580000,"T":1617566639999,"s":"BTCUSDT","i":"1m","f":346711017,"L":346711087,
     "o":"2063.88000000","c":"2064.73000000","h":"2065.00000000","l":"2063.88000000",
     "v":"70.86425000","n":71,"x":false,"q":"146321.71560700","V":"46.98201000",
     "Q":"97009.77617410","B":"0"}}}
    """
    try:
        name = stream.decode()
    except UnicodeDecodeError:
        return frozenset()
    parsed = parse_stream_name(name)
    if parsed is None:
        return frozenset()
    symbol, interval = parsed[0].upper(), parsed[1]
    if stream_name(symbol, interval) != name.removesuffix("@+08:00"):
        return frozenset()  # a symbol whose case does not round-trip: leave it to the parser
    return frozenset(
        (
            f'{{"stream":"{name}","data":{{"e":"kline","E":0,"s":"{symbol}","k":{{"t":0,"T":0,'
            f'"s":"{symbol}","i":"{interval}","f":{first},"L":{first},"o":"0.0","c":"0.0",'
            f'"h":"0.0","l":"0.0","v":"0.0","n":0,"x":false,"q":"0.0","V":"0.0","Q":"0.0",'
            f'"B":"0"}}}}}}'
        )
        .encode()
        .translate(None, _ASCII_DIGITS)
        for first in (0, -1)
    )


def forming_event_time(frame: bytes) -> int | None:
    """The event time (ms) of a well-formed forming-kline frame, else None (parse it).

    "Well-formed" here is the frame's layout: one JSON object in Binance's key order with
    `"x":false`, non-negative integers (`f` and `L` may be -1: no trades yet), decimals with
    one dot and nothing but ASCII digits around it. The values of a forming kline are not
    checked further: they never reach the lake (the closed kline is parsed in full)."""
    if not frame.startswith(_COMBINED_PREFIX):
        return None
    end = frame.find(b'"', len(_COMBINED_PREFIX))
    if frame.translate(None, _ASCII_DIGITS) not in forming_frame_shapes(
        frame[len(_COMBINED_PREFIX) : end]
    ):
        return None
    if _degenerate_number(frame):
        return None
    start = end + _EVENT_TIME_AT
    return to_millis(int(frame[start : frame.index(b",", start)]), "E")
