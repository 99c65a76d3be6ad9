"""The simulator's WS control-frame protocol (binance_sim.ws_control), without sockets: the
replies and the changes they make, the stream limit, and the rate windows."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binance_sim.ws_control import (
    ConnView,
    SlidingWindow,
    Sub,
    classify,
    control_reply,
    ws_rules,
)
from klinelake.core.markets import Market


def _served(symbol: str, interval: str) -> bool:
    return symbol == "BTCUSDT"


def reply(text: str, subs: dict[str, Sub] | None = None, *, combined: bool = False,
          max_streams: int = 1024) -> tuple[Any, Any]:  # fmt: skip
    view = ConnView(subs or {}, combined, lambda n: classify(_served, n), max_streams)
    r = control_reply(text, view)
    return orjson.loads(r.payload), r


def test_subscribe_names_the_new_subscriptions_and_acks() -> None:
    body, r = reply(
        '{"method":"SUBSCRIBE","params":["BTCUSDT@kline_1m","ethusdt@kline_1h"],"id":1}'
    )
    assert body == {"result": None, "id": 1}
    assert [(s.name, s.symbol, s.interval) for s in r.subscribe] == [
        ("btcusdt@kline_1m", "BTCUSDT", "1m"),
        ("ethusdt@kline_1h", None, "1h"),  # well-formed but not served: acked, silent
    ]
    assert r.unsubscribe == [] and r.combined is None


def test_unsubscribe_list_and_properties() -> None:
    subs = {"btcusdt@kline_1m": Sub("btcusdt@kline_1m", "BTCUSDT", "1m")}
    body, r = reply('{"method":"UNSUBSCRIBE","params":["BTCUSDT@kline_1m"],"id":"a1"}', subs)
    assert body == {"result": None, "id": "a1"} and r.unsubscribe == ["btcusdt@kline_1m"]
    body, _ = reply('{"method":"LIST_SUBSCRIPTIONS","id":2}', subs)
    assert body == {"result": ["btcusdt@kline_1m"], "id": 2}
    body, r = reply('{"method":"SET_PROPERTY","params":["combined",true],"id":3}')
    assert body == {"result": None, "id": 3} and r.combined is True
    body, _ = reply('{"method":"GET_PROPERTY","params":["combined"],"id":4}', combined=True)
    assert body == {"result": True, "id": 4}


def test_the_stream_limit_counts_only_new_names() -> None:
    subs = {f"s{i}@kline_1m": Sub(f"s{i}@kline_1m", None, "1m") for i in range(3)}
    body, r = reply('{"method":"SUBSCRIBE","params":["s0@kline_1m","s9@kline_1m"],"id":1}',
                    subs, max_streams=4)  # fmt: skip
    assert body == {"result": None, "id": 1} and len(r.subscribe) == 2
    body, r = reply('{"method":"SUBSCRIBE","params":["s8@kline_1m","s9@kline_1m"],"id":2}',
                    subs, max_streams=4)  # fmt: skip
    assert body == {"error": {"code": 2, "msg": "Invalid request: too many streams"}, "id": 2}
    assert r.subscribe == []  # an error changes nothing


def test_an_invalid_stream_fails_the_whole_request() -> None:
    body, r = reply('{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","x@kline_2m"],"id":1}')
    assert body["error"]["code"] == 2 and r.subscribe == []


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r'\{"method":"[A-Z_]{0,20}","id":[0-9]{1,3}\}'))
def test_any_text_gets_exactly_one_result_or_error_reply(text: str) -> None:
    body, r = reply(text)
    assert set(body) in ({"result", "id"}, {"error", "id"})
    if "error" in body:
        assert r.subscribe == [] and r.unsubscribe == [] and r.combined is None


def test_sliding_window_admits_limit_per_window_and_forgets_old_events() -> None:
    w = SlidingWindow()
    assert [w.admit(t, limit=3, window_s=1.0) for t in (0.0, 0.1, 0.2, 0.3)] == [
        True, True, True, False,
    ]  # fmt: skip
    assert w.admit(1.0, limit=3, window_s=1.0)  # the event at 0.0 left the window
    assert not w.admit(1.05, limit=3, window_s=1.0)
    assert w.admit(1.05, limit=4, window_s=1.0)  # the limit is read at each event


@pytest.mark.parametrize("name", ["btcusdt@kline_1h@+08:00", "btcusdt@kline_1M@+08:00"])
def test_utc_plus_8_streams(name: str) -> None:
    sub = classify(_served, name)
    assert sub is not None
    assert (sub.symbol is not None) == name.endswith("1h@+08:00")  # 1M boundaries differ


@pytest.mark.parametrize("market", [Market.UM, Market.CM])
def test_futures_rules_have_no_1s_and_no_utc_plus_8_and_close_on_invalid_json(
    market: Market,
) -> None:
    """binance-futures-api.md §1-§3: no `1s` kline streams, no `@+08:00` variant, no timeUnit;
    invalid JSON is answered with code 3 and then the connection is closed."""
    futures, spot = ws_rules(market), ws_rules(Market.SPOT)
    for name in ("btcusdt@kline_1s", "btcusdt@kline_1h@+08:00"):
        assert classify(_served, name, futures) is None  # error code 2, as any bad name
        assert classify(_served, name, spot) is not None
    for iv in ("1m", "3m", "1h", "1d", "1w", "1M"):
        sub = classify(_served, f"btcusdt@kline_{iv}", futures)
        assert sub is not None and sub.symbol == "BTCUSDT"
    assert (futures.time_unit, futures.timezone_variant) == (False, False)
    assert (spot.time_unit, spot.timezone_variant) == (True, True)
    assert futures.close_on_invalid_json and not spot.close_on_invalid_json
    view = ConnView({}, False, lambda n: classify(_served, n, futures), 1024)
    bad = control_reply("{not json", view)
    assert bad.error_code == 3 and orjson.loads(bad.payload)["error"]["code"] == 3
    assert control_reply('{"method":"LIST_SUBSCRIPTIONS","id":1}', view).error_code is None
