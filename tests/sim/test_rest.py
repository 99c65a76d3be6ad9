"""REST against a simulator subprocess: a real client, the documented errors, limits and faults."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from binance.client import Client

from binance_sim.testing import SimProcess, run_simulator
from klinelake.core.row import parse_csv, parse_lake_line, parse_rest_page

from .conftest import BUNDLED, FEB_START, JAN_2022, JAN_START, NOW_ARGS

HOUR = 3_600_000
JSON = "application/json;charset=UTF-8"
KL = "/api/v3/klines"


def _rows(path: Any) -> list[list[Any]]:
    """The CSV as REST rows: ints for times and counts, the exact strings otherwise."""
    out = []
    for line in path.read_text().splitlines()[1:]:
        f = line.split(",")
        out.append([int(f[0]), *f[1:6], int(f[6]), f[7], int(f[8]), f[9], f[10], f[11]])
    return out


def test_python_binance_get_historical_klines_returns_the_fixture_rows(sim: SimProcess) -> None:
    client = Client(api_key=None, api_secret=None, ping=False)
    client.API_URL = sim.url + "/api"  # the only change: the base URL
    # Jan 2022 and May 2023 (1488 rows, a gap between): two pages of at most 1000.
    got = client.get_historical_klines("BTCUSDT", "1h", JAN_START, 1_685_577_600_000)
    may = BUNDLED / "BTCUSDT-1h-2023-05.csv"
    assert got == _rows(JAN_2022) + _rows(may)
    assert sim.state()["counters"]["requests"] >= 3  # earliest-timestamp probe + 2 pages


def _get(sim: SimProcess, path: str, **headers: str) -> httpx.Response:
    return httpx.get(sim.url + path, headers=headers, timeout=10)


def test_klines_rows_headers_and_weight(sim: SimProcess) -> None:
    r1 = _get(sim, f"{KL}?symbol=BTCUSDT&interval=1h&startTime={JAN_START}&limit=3")
    r2 = _get(sim, f"/api/v3/uiKlines?symbol=BTCUSDT&interval=1h&startTime={JAN_START}&limit=3")
    assert r1.status_code == 200 and r1.headers["content-type"] == JSON
    assert r1.content == r2.content
    assert orjson.loads(r1.content) == _rows(JAN_2022)[:3]
    assert int(r2.headers["x-mbx-used-weight-1m"]) == int(r1.headers["x-mbx-used-weight"]) + 2
    assert (
        parse_rest_page(r1.content, "BTCUSDT", "1h")
        == parse_csv(JAN_2022.read_bytes(), "BTCUSDT", "1h")[:3]
    )


def test_limit_default_and_max(sim: SimProcess) -> None:
    base = f"{KL}?symbol=ETHUSDT&interval=1m"
    assert len(orjson.loads(_get(sim, base).content)) == 500
    rows = orjson.loads(_get(sim, base + "&limit=1000").content)
    assert len(rows) == 1000
    now = orjson.loads(_get(sim, "/api/v3/time").content)["serverTime"]
    assert rows[-1][0] <= now < rows[-1][6]  # the forming kline is last; nothing after now


def test_microseconds_in_and_out(sim: SimProcess) -> None:
    q = f"{KL}?symbol=BTCUSDT&interval=1h&startTime={JAN_START * 1000}&limit=1"
    ms = orjson.loads(_get(sim, q).content)
    us = orjson.loads(_get(sim, q, **{"X-MBX-TIME-UNIT": "MICROSECOND"}).content)
    assert ms[0][0] == JAN_START and ms[0][6] == JAN_START + HOUR - 1
    assert us[0][0] == JAN_START * 1000 and us[0][6] == (JAN_START + HOUR) * 1000 - 1
    assert us[0][1:6] == ms[0][1:6]
    t = orjson.loads(_get(sim, "/api/v3/time", **{"X-MBX-TIME-UNIT": "microsecond"}).content)
    assert len(str(t["serverTime"])) == 16


def test_out_of_range_times_are_clamped(sim: SimProcess) -> None:
    r = _get(sim, f"{KL}?symbol=BTCUSDT&interval=1h&startTime=0&endTime=99999999999999999999")
    assert r.status_code == 200 and orjson.loads(r.content)[0][0] == JAN_START


_MANDATORY = "Mandatory parameter '{}' was not sent, was empty/null, or malformed."
_ILLEGAL = "Illegal characters found in parameter '{}'; legal range is '{}'."


@pytest.mark.parametrize(
    ("query", "headers", "code", "msg"),
    [
        ("interval=1h", {}, -1102, _MANDATORY.format("symbol")),
        ("symbol=BTCUSDT", {}, -1102, _MANDATORY.format("interval")),
        ("symbol=&interval=1h", {}, -1105, "Parameter 'symbol' was empty."),
        ("symbol=NOPEUSDT&interval=1h", {}, -1121, "Invalid symbol."),
        ("symbol=btcusdt&interval=1h", {}, -1100,
         _ILLEGAL.format("symbol", "^[A-Z0-9-_.]{1,20}$")),
        ("symbol=BTCUSDT&interval=1H", {}, -1120, "Invalid interval."),
        ("symbol=BTCUSDT&interval=2m", {}, -1120, "Invalid interval."),
        ("symbol=BTCUSDT&interval=1h&startTime=2022-01-01", {}, -1100,
         _ILLEGAL.format("startTime", "^[0-9]{1,20}$")),
        ("symbol=BTCUSDT&interval=1h&start_time=1", {}, -1104,
         "Not all sent parameters were read; read '2' parameter(s) but was sent '3'."),
        ("symbol=BTCUSDT&interval=1h&interval=1h", {}, -1101,
         "Duplicate values for a parameter detected."),
        ("symbol=BTCUSDT&interval=1h&limit=1001", {}, -1130,
         "Data sent for parameter 'limit' is not valid."),
        ("symbol=BTCUSDT&interval=1h&timeZone=8", {}, -1130,
         "Data sent for parameter 'timeZone' is not valid."),
        ("symbol=BTCUSDT&interval=1h&startTime=2&endTime=1", {}, -1023,
         "Start time is greater than end time."),
        ("symbol=BTCUSDT&interval=1h", {"X-MBX-TIME-UNIT": "SECOND"}, -1194,
         "Invalid value for time unit; expected either MICROSECOND or MILLISECOND."),
    ],
)  # fmt: skip
def test_documented_errors(
    sim: SimProcess, query: str, headers: dict[str, str], code: int, msg: str
) -> None:
    before = sim.state()["counters"]["weight"]
    r = _get(sim, f"{KL}?{query}", **headers)
    assert r.status_code == 400
    assert r.content == orjson.dumps({"code": code, "msg": msg})
    assert r.headers["content-type"] == JSON
    assert int(r.headers["x-mbx-used-weight-1m"]) == int(r.headers["x-mbx-used-weight"]) > 0
    assert sim.state()["counters"]["weight"] == before + 2  # errors are charged too


def test_timezone_utc_is_accepted(sim: SimProcess) -> None:
    r = _get(sim, f"{KL}?symbol=BTCUSDT&interval=1h&timeZone=0&startTime={JAN_START}&limit=1")
    assert r.status_code == 200 and orjson.loads(r.content)[0][0] == JAN_START


def test_ping_time_exchange_info(sim: SimProcess) -> None:
    assert _get(sim, "/api/v3/ping").content == b"{}"
    before = int(_get(sim, "/api/v3/ping").headers["x-mbx-used-weight"])
    info = _get(sim, "/api/v3/exchangeInfo")
    assert int(info.headers["x-mbx-used-weight"]) == before + 20
    body = orjson.loads(info.content)
    assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert body["rateLimits"] == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
    ]
    one = orjson.loads(_get(sim, "/api/v3/exchangeInfo?symbol=ETHUSDT").content)
    assert [(s["baseAsset"], s["quoteAsset"]) for s in one["symbols"]] == [("ETH", "USDT")]
    two = _get(sim, '/api/v3/exchangeInfo?symbols=["ETHUSDT","BTCUSDT"]')
    assert len(orjson.loads(two.content)["symbols"]) == 2
    bad = _get(sim, "/api/v3/exchangeInfo?symbol=NOPE")
    assert (bad.status_code, orjson.loads(bad.content)["code"]) == (400, -1121)


def test_unknown_path_is_404_without_html(sim: SimProcess) -> None:
    r = _get(sim, "/api/v1/klines?symbol=BTCUSDT&interval=1h")
    assert r.status_code == 404 and "html" not in r.text and "x-mbx-used-weight" in r.headers
    html = _get(sim, "/nope", Accept="text/html")
    assert html.status_code == 404 and "<html>" in html.text


def test_weight_limit_429_then_418_ban() -> None:
    args = ("--weight-limit", "10", "--ban-after", "1", "--ban-seconds", "30,60")
    with run_simulator(BUNDLED, *NOW_ARGS, *args) as s:
        q = f"{KL}?symbol=BTCUSDT&interval=1h&limit=1"
        assert [_get(s, q).status_code for _ in range(5)] == [200] * 5
        r = _get(s, q)
        assert r.status_code == 429 and r.headers["x-mbx-used-weight-1m"] == "12"
        msg = (
            "Too much request weight used; current limit is 10 request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API."
        )
        assert r.content == orjson.dumps({"code": -1003, "msg": msg})
        assert 1 <= int(r.headers["retry-after"]) <= 60
        t0 = time.time()
        r = _get(s, q)
        assert r.status_code == 418 and r.headers["retry-after"] == "30"
        msg = orjson.loads(r.content)["msg"]
        until = int(msg.split("IP banned until ")[1].split(".")[0])
        assert abs(until - (t0 + 30) * 1000) < 2000
        assert msg == (
            f"Way too much request weight used; IP banned until {until}. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
        assert _get(s, "/api/v3/ping").status_code == 418  # every request while banned
        counters = s.state()["counters"]
        assert counters["responses_429"] == 1 and counters["responses_418"] == 2
        assert counters["requests_while_banned"] == 1


def test_rest_faults(own_sim: SimProcess) -> None:
    q = f"{KL}?symbol=BTCUSDT&interval=1h&limit=1"
    own_sim.admin({"rest_5xx": 2})
    r = _get(own_sim, q)
    assert r.status_code == 503 and orjson.loads(r.content)["code"] == -1008
    assert _get(own_sim, q).status_code == 503 and _get(own_sim, q).status_code == 200
    own_sim.admin({"rest_5xx": 1, "rest_5xx_status": 500})
    r = _get(own_sim, q)
    assert r.content == orjson.dumps(
        {"code": -1000, "msg": "An unknown error occurred while processing the request."}
    )
    own_sim.admin({"rest_429": 1})
    r = _get(own_sim, q)
    assert (
        r.status_code == 429
        and orjson.loads(r.content)["code"] == -1003
        and "retry-after" in r.headers
    )
    own_sim.admin({"latency_ms": 300})
    t0 = time.monotonic()
    assert _get(own_sim, q).status_code == 200 and time.monotonic() - t0 >= 0.3
    own_sim.admin({"latency_ms": 0, "rest_418": 1, "ban_seconds": 5})
    r = _get(own_sim, q)
    assert r.status_code == 418 and r.headers["retry-after"] == "5"
    assert _get(own_sim, q).status_code == 418  # still banned
    bad = httpx.post(own_sim.url + "/_sim/faults", json={"nope": 1})
    assert bad.status_code == 400


def test_halt_removes_klines_from_rest_and_truth(own_sim: SimProcess) -> None:
    own_sim.admin({"halt": {"symbol": "BTCUSDT", "interval": "1h",
                            "start": JAN_START + HOUR, "end": JAN_START + 3 * HOUR}})  # fmt: skip
    r = _get(own_sim, f"{KL}?symbol=BTCUSDT&interval=1h&startTime={JAN_START}&limit=3")
    assert [row[0] for row in orjson.loads(r.content)] == [JAN_START + HOUR * i for i in (0, 4, 5)]
    truth = own_sim.truth("BTCUSDT", "1h", JAN_START, JAN_START + 5 * HOUR).splitlines()
    assert [parse_lake_line(x).open_time for x in truth] == [
        JAN_START + HOUR * i for i in (0, 4, 5)
    ]


def test_truth_is_the_closed_rest_rows_as_lake_lines(sim: SimProcess) -> None:
    r = _get(
        sim, f"{KL}?symbol=BTCUSDT&interval=1h&startTime={JAN_START}&endTime={FEB_START}&limit=1000"
    )
    rest = parse_rest_page(r.content, "BTCUSDT", "1h")
    truth = sim.truth("BTCUSDT", "1h", JAN_START, FEB_START)
    assert truth == b"".join(k.to_line() for k in rest)
    assert truth.count(b"\n") == 744
