"""The simulator answers like a Binance that refuses the client (issue 13): HTTP 451 (restricted
location, JSON body as Binance sends it) or 403 (the WAF's HTML page) on every REST request and at
the WS handshake, set by `POST /_sim/faults` or `--block-rest/--block-ws`, until set back to 0."""

from __future__ import annotations

import asyncio

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from binance_sim.faults import RESTRICTED_LOCATION_MSG
from binance_sim.testing import run_simulator


def _handshake_status(ws_url: str) -> int:
    async def go() -> int:
        try:
            async with connect(f"{ws_url}/stream?streams=btcusdt@kline_1m", open_timeout=5):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(go())


def test_block_faults_by_admin_and_back() -> None:
    with run_simulator(None, "--synthetic", "BTCUSDT:1m:2024-01-01") as sim:
        assert httpx.get(f"{sim.url}/api/v3/time").status_code == 200
        sim.admin({"rest_block": 451, "ws_block": 403})
        r = httpx.get(f"{sim.url}/api/v3/exchangeInfo")
        assert r.status_code == 451 and r.json() == {"code": 0, "msg": RESTRICTED_LOCATION_MSG}
        assert _handshake_status(sim.ws_url) == 403
        sim.admin({"rest_block": 403, "ws_block": 451})
        r = httpx.get(f"{sim.url}/api/v3/klines?symbol=BTCUSDT&interval=1m")
        assert r.status_code == 403 and "Request blocked" in r.text
        assert _handshake_status(sim.ws_url) == 451
        sim.admin({"rest_block": 0, "ws_block": 0})
        assert httpx.get(f"{sim.url}/api/v3/time").status_code == 200
        assert _handshake_status(sim.ws_url) == 101
        assert sim.state()["counters"]["responses_blocked"] == 2


def test_bad_block_values_are_refused() -> None:
    with run_simulator(None, "--synthetic", "BTCUSDT:1m:2024-01-01") as sim:
        for body in ({"rest_block": 500}, {"ws_block": True}, {"rest_block": -1}):
            r = httpx.post(f"{sim.url}/_sim/faults", json=body)
            assert r.status_code == 400 and not r.json()["ok"], body
        assert sim.state()["faults"]["rest_block"] == 0


def test_block_flags_at_startup() -> None:
    args = ("--synthetic", "BTCUSDT:1m:2024-01-01", "--block-rest", "451", "--block-ws", "451")
    with run_simulator(None, *args) as sim:
        assert httpx.get(f"{sim.url}/api/v3/time").status_code == 451
        assert _handshake_status(sim.ws_url) == 451
