"""Bad requests never crash the server: fuzzed query strings and control frames (bounded)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from binance_sim.testing import SimProcess, run_simulator

from .conftest import BUNDLED, NOW_ARGS

KEYS = ["symbol", "interval", "startTime", "endTime", "limit", "timeZone", "symbols", "x"]
VALUES = st.one_of(
    st.sampled_from(["BTCUSDT", "ETHUSDT", "1h", "1m", "0", "1000", "", "-1", "1e3", "8"]),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.text(max_size=30),
)
PATHS = ["/api/v3/klines", "/api/v3/uiKlines", "/api/v3/exchangeInfo", "/api/v3/time"]
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def fuzz_sim() -> Iterator[SimProcess]:
    with run_simulator(BUNDLED, *NOW_ARGS, "--max-msgs-per-s", "100000") as s:
        yield s


@pytest.fixture(scope="module")
def http(fuzz_sim: SimProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_sim.url, timeout=10) as c:
        yield c


@FUZZ
@given(
    st.sampled_from(PATHS),
    st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), VALUES), max_size=6),
    st.text(max_size=40),
)
def test_query_strings_get_json_answers(
    http: httpx.Client, path: str, pairs: list[tuple[str, str]], raw: str
) -> None:
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    for url in (f"{path}?{query}", f"{path}?{quote(raw, safe='=&%')}"):
        r = http.get(url)
        assert r.status_code in (200, 400), (url, r.status_code, r.text)
        body = orjson.loads(r.content)
        if r.status_code == 400:
            assert set(body) == {"code", "msg"} and isinstance(body["code"], int)
        assert "x-mbx-used-weight-1m" in r.headers


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=10,
)
CONTROL = st.fixed_dictionaries(
    {
        "method": st.one_of(
            st.sampled_from(
                ["SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY"]
            ),
            JSON,
        ),
        "params": st.one_of(
            st.lists(
                st.one_of(st.sampled_from(["combined", "nopeusdt@kline_1m", "x@depth"]), JSON),
                max_size=4,
            ),
            JSON,
        ),
        "id": st.one_of(
            st.integers(min_value=-(2**64), max_value=2**64), st.text(max_size=40), JSON
        ),
    }
)


@pytest.fixture(scope="module")
def ws(fuzz_sim: SimProcess) -> Iterator[ClientConnection]:
    with connect(f"{fuzz_sim.ws_url}/ws") as c:
        yield c


def _reply(ws: ClientConnection) -> dict[str, Any]:
    while True:
        msg = orjson.loads(ws.recv(timeout=5))
        if "id" in msg:
            out: dict[str, Any] = msg
            return out


@FUZZ
@given(st.one_of(CONTROL, JSON, st.text(max_size=60)))
def test_control_frames_get_a_reply_and_the_connection_stays(
    ws: ClientConnection, frame: Any
) -> None:
    text = frame if isinstance(frame, str) else json.dumps(frame)
    ws.send(text)
    reply = _reply(ws)
    assert ("result" in reply) != ("error" in reply)
    if "error" in reply:
        assert set(reply["error"]) == {"code", "msg"} and reply["error"]["code"] in (0, 1, 2, 3)


def test_the_server_is_still_up_after_fuzzing(fuzz_sim: SimProcess, http: httpx.Client) -> None:
    assert http.get("/api/v3/ping").content == b"{}"
    assert fuzz_sim.state()["counters"]["ws_active"] >= 0
