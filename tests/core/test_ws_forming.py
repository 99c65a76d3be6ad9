"""Forming frames recognised without parsing: never a closed kline, never garbage.

`forming_event_time` lets the streamer skip the full parse of forming-kline frames. Whatever
the frame, a non-None answer must mean a JSON forming-kline event (`x` false) with every kline
field of the right type and that event time; closed klines, other events and every kind of
damage must answer None, so that `parse_ws_frame` sees them (and counts what is malformed).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from binance_sim.ws import _garbage
from klinelake.core.binance_ws import KlineEvent, forming_event_time, parse_ws_frame, stream_name
from klinelake.core.intervals import align_down, next_open_time

T0 = 1_617_566_580_000
KEYS = ("t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B")
DECIMAL = re.compile(r"[0-9]+\.[0-9]+")
decimals = st.builds("{}.{:08d}".format, st.integers(0, 10**12), st.integers(0, 10**8 - 1))


@st.composite
def kline_frames(draw: Any) -> dict[str, Any]:
    symbol = draw(st.sampled_from(["BTCUSDT", "1INCHUSDT", "ETHBTC", "币安币USDT"]))
    interval = draw(st.sampled_from(["1s", "1m", "15m", "1h", "1d", "1w", "1M"]))
    t = align_down(T0, interval)
    first = draw(st.sampled_from([-1, 0, 10**9]))  # -1: no trades yet
    k = {
        "t": t, "T": next_open_time(t, interval) - 1, "s": symbol, "i": interval,
        "f": first, "L": -1 if first == -1 else first + draw(st.integers(0, 10**6)),
        "o": draw(decimals), "c": draw(decimals),
        "h": draw(decimals), "l": draw(decimals), "v": draw(decimals),
        "n": draw(st.integers(0, 10**6)), "x": draw(st.booleans()), "q": draw(decimals),
        "V": draw(decimals), "Q": draw(decimals), "B": "0",
    }  # fmt: skip
    data = {"e": "kline", "E": T0 + draw(st.integers(0, 60_000)), "s": symbol, "k": k}
    return {"stream": stream_name(symbol, interval), "data": data}


damage = st.one_of(
    st.tuples(st.just("truncate"), st.integers(1, 400)),
    st.tuples(st.just("byte"), st.integers(0, 400), st.sampled_from(list(b'-.e",:{} x1aA'))),
    st.tuples(st.just("insert"), st.integers(0, 400), st.sampled_from([b" ", b"-", b"\xd9\xa3"])),
    st.tuples(st.just("garbage"), st.integers(0, 3)),
    st.tuples(st.just("key"), st.sampled_from(KEYS), st.sampled_from([None, "1.", 1.5, -1, True])),
    st.tuples(st.just("drop"), st.sampled_from(KEYS)),
    st.tuples(st.just("event"), st.sampled_from(["trade", "kline", None])),
    st.tuples(st.just("raw"), st.just(0)),
    st.tuples(st.just("micros"), st.just(0)),
)  # fmt: skip


def apply(frame: dict[str, Any], how: tuple[Any, ...]) -> bytes:
    text = orjson.dumps(frame)
    kind = how[0]
    if kind == "truncate":
        return text[: how[1] % len(text)]
    if kind == "byte":
        i = how[1] % len(text)
        return text[:i] + bytes([how[2]]) + text[i + 1 :]
    if kind == "insert":
        i = how[1] % len(text)
        return text[:i] + how[2] + text[i:]
    if kind == "garbage":  # what the simulator's ws_malformed fault sends
        return _garbage(frame, int(how[1]))
    k = frame["data"]["k"]
    if kind == "key":
        k[how[1]] = how[2]
    elif kind == "drop":
        del k[how[1]]
    elif kind == "event":
        frame["data"]["e"] = how[1]
    elif kind == "raw":
        frame = frame["data"]
    elif kind == "micros":
        frame["data"]["E"] *= 1000
    return orjson.dumps(frame)


def assert_forming_event(frame: bytes, event_time: int) -> None:
    obj = orjson.loads(frame)
    data = obj["data"]
    k = data["k"]
    assert data["e"] == "kline" and k["x"] is False and list(k) == list(KEYS)
    assert obj["stream"] == stream_name(k["s"], k["i"]) and data["s"] == k["s"]
    for key in ("t", "T", "n"):
        assert type(k[key]) is int and k[key] >= 0
    assert type(k["f"]) is int and type(k["L"]) is int
    assert (k["f"] >= 0 and k["L"] >= 0) or k["f"] == k["L"] == -1
    for key in ("o", "c", "h", "l", "v", "q", "V", "Q"):
        assert isinstance(k[key], str) and DECIMAL.fullmatch(k[key])
    assert event_time == (data["E"] // 1000 if data["E"] >= 10**14 else data["E"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(kline_frames(), st.lists(damage, max_size=2))
def test_only_well_formed_forming_frames_skip_the_parser(
    frame: dict[str, Any], damages: list[tuple[Any, ...]]
) -> None:
    closed = frame["data"]["k"]["x"]
    text = orjson.dumps(frame)
    for how in damages:
        try:
            text = apply(orjson.loads(text), how)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            text = apply(frame, ("truncate", len(text) // 2))
    got = forming_event_time(text)
    if got is not None:
        assert_forming_event(text, got)
    if not damages:  # an undamaged frame: closed ones are parsed, forming ones are not
        assert (got is None) == closed
        if not closed:
            parsed = parse_ws_frame(text)
            assert isinstance(parsed, KlineEvent) and parsed.event_time == got


def test_every_kind_of_simulated_garbage_goes_to_the_parser() -> None:
    frame = {
        "stream": "btcusdt@kline_1m",
        "data": {"e": "kline", "E": T0 + 30_000, "s": "BTCUSDT", "k": {
            "t": T0, "T": T0 + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2,
            "o": "1.0", "c": "1.0", "h": "1.0", "l": "1.0", "v": "1.0", "n": 2, "x": False,
            "q": "1.0", "V": "1.0", "Q": "1.0", "B": "0"}},
    }  # fmt: skip
    assert forming_event_time(orjson.dumps(frame)) == T0 + 30_000
    for kind in range(4):
        assert forming_event_time(_garbage(frame, kind)) is None


# The degenerate-number check as first written (a regex), kept here as the oracle of the
# substring searches that replaced it for speed (issue 15).
DEGENERATE_NUMBER = re.compile(rb'"\.|\."|:-?,|:-?0[0-9]')
_NUMBERISH = st.lists(
    st.sampled_from([b'"', b".", b":", b"-", b",", b"0", b"7", b"x"]), max_size=40
)


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(_NUMBERISH, kline_frames(), st.integers(min_value=0, max_value=400))
def test_degenerate_number_check_equals_its_regex(
    pieces: list[bytes], frame: dict[str, Any], at: int
) -> None:
    from klinelake.core.binance_ws import _degenerate_number

    noise = b"".join(pieces)
    text = orjson.dumps(frame)
    at %= len(text) + 1
    for candidate in (noise, text, text[:at] + noise + text[at:]):
        assert _degenerate_number(candidate) == (DEGENERATE_NUMBER.search(candidate) is not None)
