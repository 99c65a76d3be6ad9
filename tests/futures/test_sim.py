"""The simulator's USD-M and COIN-M futures markets (binance-futures-api.md, "FS §n").

Real clients against simulator subprocesses; no sleeps: waits are receives or polls with
deadlines.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from binance import Client

from binance_sim.testing import SimProcess, run_simulator
from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.core.intervals import MINUTE
from klinelake.core.markets import Market
from klinelake.core.row import parse_rest_row
from localcloud import wait_for
from tests.futures.helpers import backfill, lake_object, truth

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC, simulated now at startup
DELIVERY = START + 5 * MINUTE
CONTRACTS = (
    "--futures", "um:BTCUSDT:onboard=2025-06-01",
    "--futures", f"um:BTCUSDT_260101:onboard=2025-10-01,delivery={DELIVERY}",
    "--futures", "cm:BTCUSD_PERP:onboard=2025-01-01",
)  # fmt: skip


@pytest.fixture(scope="module")
def fsim() -> Iterator[SimProcess]:
    """Speed 60: a simulated minute per real second."""
    with run_simulator(None, "--start", str(START), "--speed", "60", *CONTRACTS) as s:
        yield s


def client(sim: SimProcess) -> Client:
    """python-binance, unmodified but for its base URLs (no spot ping at construction)."""
    c = Client(ping=False)
    c.FUTURES_URL = f"{sim.url}/fapi"
    c.FUTURES_COIN_URL = f"{sim.url}/dapi"
    return c


def as_lines(rows: list[list[Any]], symbol: str, interval: str, market: Market) -> bytes:
    return b"".join(parse_rest_row(r, symbol, interval, "", market).to_line() for r in rows)


def test_python_binance_reads_usdm_and_coinm_klines(fsim: SimProcess) -> None:
    c = client(fsim)
    first, last = START - 3000 * MINUTE, START - MINUTE  # 2 pages of 1000 and one of 1000
    rows = c.futures_historical_klines("BTCUSDT", "1m", first, last)
    assert len(rows) == 3000
    want = truth(fsim, "um:BTCUSDT@1m", first, last)
    assert as_lines(rows, "BTCUSDT", "1m", Market.UM) == want
    # COIN-M: python-binance pages by startTime only, which the 200-day window answers with
    # the NEWEST bars; bounded pages (as our backfill sends) return exactly the range.
    cm = c.futures_coin_klines(
        symbol="BTCUSD_PERP", interval="1h", startTime=START - 1500 * 3_600_000,
        endTime=START - 1, limit=1500,
    )  # fmt: skip
    want_cm = truth(fsim, "cm:BTCUSD_PERP@1h", START - 1500 * 3_600_000, START - 3_600_000)
    assert as_lines(cm, "BTCUSD_PERP", "1h", Market.CM) == want_cm
    assert b'"base_volume"' in want_cm and b'"quote_volume"' not in want_cm


def test_coinm_window_returns_the_newest_bars(fsim: SimProcess) -> None:
    day = 86_400_000
    start = START - 300 * day
    r = httpx.get(f"{fsim.url}/dapi/v1/klines", params={
        "symbol": "BTCUSD_PERP", "interval": "1h", "startTime": start, "limit": 10})  # fmt: skip
    rows = r.json()
    assert len(rows) == 10
    assert rows[-1][0] == start + 200 * day  # the window's last bar, not its first
    r = httpx.get(f"{fsim.url}/dapi/v1/klines", params={
        "symbol": "BTCUSD_PERP", "interval": "1h", "startTime": start,
        "endTime": start + 201 * day})  # fmt: skip
    assert r.status_code == 400 and r.json()["code"] == -4088
    um_start = START - 100 * day
    r = httpx.get(f"{fsim.url}/fapi/v1/klines", params={
        "symbol": "BTCUSDT", "interval": "1h", "startTime": um_start, "limit": 10})  # fmt: skip
    assert r.json()[0][0] == um_start  # USD-M pages forward from startTime (FS §6 [obs])


def test_weights_limits_and_intervals(fsim: SimProcess) -> None:
    def used(path: str, **params: Any) -> tuple[int, int]:
        r = httpx.get(f"{fsim.url}{path}", params=params)
        return r.status_code, int(r.headers["X-MBX-USED-WEIGHT-1M"])

    base = {"symbol": "BTCUSDT", "interval": "1m"}
    # the window may roll between calls: retry the whole measurement until it does not
    deadline = time.monotonic() + 30
    while True:
        steps = [used("/fapi/v1/klines", **base, limit=n) for n in (1, 100, 500, 1500)]
        steps.append(used("/fapi/v1/klines", **base))  # default 500
        steps.append(used("/dapi/v1/klines", symbol="BTCUSD_PERP", interval="1m", limit=1500))
        steps.append(used("/fapi/v1/exchangeInfo"))
        deltas = [b[1] - a[1] for a, b in itertools.pairwise(steps)]
        if deltas == [2, 5, 10, 5, 10, 1] or time.monotonic() > deadline:
            break
    assert deltas == [2, 5, 10, 5, 10, 1]  # one pool for fapi and dapi
    assert all(status == 200 for status, _ in steps)
    r = httpx.get(f"{fsim.url}/fapi/v1/klines", params={**base, "limit": 1501})
    assert r.status_code == 400 and r.json()["code"] == -1130
    r = httpx.get(f"{fsim.url}/fapi/v1/klines", params={**base, "interval": "1s"})
    assert r.json()["code"] == -1120
    r = httpx.get(f"{fsim.url}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1s"})
    assert r.status_code in (200, 400)  # spot is another pool
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) <= 2


def test_exchange_info_and_delivery(fsim: SimProcess) -> None:
    um = httpx.get(f"{fsim.url}/fapi/v1/exchangeInfo").json()
    cm = httpx.get(f"{fsim.url}/dapi/v1/exchangeInfo").json()
    assert um["rateLimits"][0]["limit"] == 2400
    by = {s["symbol"]: s for s in um["symbols"]}
    assert by["BTCUSDT"]["deliveryDate"] == 4_133_404_800_000
    assert by["BTCUSDT"]["contractType"] == "PERPETUAL" and by["BTCUSDT"]["status"] == "TRADING"
    assert by["BTCUSDT_260101"]["deliveryDate"] == DELIVERY
    (coin,) = cm["symbols"]
    assert coin["contractStatus"] == "TRADING" and "status" not in coin
    assert coin["quoteAsset"] == "USD" and coin["marginAsset"] == "BTC"

    def delivered() -> bool:
        info = httpx.get(f"{fsim.url}/fapi/v1/exchangeInfo").json()
        return {s["symbol"]: s for s in info["symbols"]}["BTCUSDT_260101"]["status"] == "DELIVERED"

    wait_for(delivered, timeout=30)
    rows = httpx.get(f"{fsim.url}/fapi/v1/klines", params={
        "symbol": "BTCUSDT_260101", "interval": "1m", "startTime": DELIVERY - 3 * MINUTE,
        "limit": 100}).json()  # fmt: skip
    assert [r[0] for r in rows] == [DELIVERY - 3 * MINUTE, DELIVERY - 2 * MINUTE, DELIVERY - MINUTE]


async def _frames(url: str, n: int, within: float) -> list[dict[str, Any]]:
    out = []
    async with websockets.connect(url) as ws:
        deadline = time.monotonic() + within
        while len(out) < n:
            try:
                out.append(
                    orjson.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                )
            except TimeoutError:
                break
    return out


def test_ws_routes(fsim: SimProcess) -> None:
    base = fsim.ws_url
    routed = asyncio.run(_frames(f"{base}/fstream/market/stream?streams=btcusdt@kline_1m", 3, 10))
    assert len(routed) == 3 and routed[0]["stream"] == "btcusdt@kline_1m"
    assert routed[0]["data"]["k"]["s"] == "BTCUSDT"
    # FS §1: after 2026-04-23 an unrouted fstream connection gets no kline pushes
    assert asyncio.run(_frames(f"{base}/fstream/ws/btcusdt@kline_1m", 1, 2)) == []
    cm = asyncio.run(_frames(f"{base}/dstream/ws/btcusd_perp@kline_1m", 2, 10))
    assert len(cm) == 2 and cm[0]["k"]["s"] == "BTCUSD_PERP"


async def _control_session(url: str) -> tuple[dict[int, Any], list[dict[str, Any]]]:
    """Ten control frames at once (futures allow 10 a second, spot 5), then read until every
    reply and one kline push have arrived (deadline 15 s)."""
    frames = [
        {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1},
        {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1s"], "id": 2},
        {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h@+08:00"], "id": 3},
        *({"method": "LIST_SUBSCRIPTIONS", "id": i} for i in range(4, 11)),
    ]
    replies: dict[int, Any] = {}
    pushes: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        for f in frames:
            await ws.send(orjson.dumps(f).decode())
        deadline = time.monotonic() + 15
        while len(replies) < len(frames) or not pushes:
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            if "id" in msg:
                replies[msg["id"]] = msg
            elif msg.get("e") == "kline":
                pushes.append(msg)
    return replies, pushes


async def _invalid_json_closes(url: str) -> tuple[dict[str, Any], bool]:
    async with websockets.connect(url) as ws:
        await ws.send("{not json")
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            return reply, True
    return reply, False


def test_futures_ws_rules(fsim: SimProcess) -> None:
    """FS §1-§3 on both futures hosts: 10 control frames a second are allowed; no `1s` and no
    `@+08:00` kline streams (code 2); `timeUnit` is ignored (milliseconds only); invalid JSON
    gets the code-3 reply and then the connection is closed."""
    for path in ("/fstream/market/ws", "/dstream/ws"):
        url = f"{fsim.ws_url}{path}?timeUnit=MICROSECOND"
        if path == "/dstream/ws":
            url = url.replace("?", "/btcusd_perp@kline_1m?")
        replies, pushes = asyncio.run(_control_session(url))
        assert replies[1] == {"result": None, "id": 1}
        assert replies[2]["error"]["code"] == 2 and replies[3]["error"]["code"] == 2
        assert all("result" in replies[i] for i in range(4, 11))  # not closed at frame 6
        k = pushes[0]["k"]
        assert len(str(k["t"])) == 13 and len(str(pushes[0]["E"])) == 13  # ms, not µs
        reply, closed = asyncio.run(_invalid_json_closes(f"{fsim.ws_url}{path}"))
        assert reply["error"]["code"] == 3 and closed


def test_list_and_delist(fsim: SimProcess) -> None:
    r = httpx.post(f"{fsim.url}/_sim/futures/list", json={"market": "um", "symbol": "XRPUSDT"})
    assert r.json()["ok"], r.text
    r = httpx.post(f"{fsim.url}/_sim/futures/list", json={"market": "um", "symbol": "XRPUSDT"})
    assert r.status_code == 400 and "already listed" in r.text
    params = {"symbol": "XRPUSDT", "interval": "1m", "startTime": START}
    wait_for(lambda: len(httpx.get(f"{fsim.url}/fapi/v1/klines", params=params).json()) >= 2, 20)
    r = httpx.post(f"{fsim.url}/_sim/futures/delist", json={"market": "um", "symbol": "XRPUSDT"})
    assert r.json()["symbol"]["status"] == "CLOSE"
    gone = r.json()["symbol"]
    assert gone["symbol"] == "XRPUSDT"


def test_backfill_from_futures_archives(fsim: SimProcess, tmp_path: Path) -> None:
    """`--source vision` reads data/futures/um|cm monthly zips (header line, CHECKSUM): whole
    months from the archive, the edges over REST, byte-identical to the truth."""
    first, last = 1_759_276_800_000, 1_764_547_200_000 - 1  # 2025-10-01 .. 2025-11-30
    zip_url = f"{fsim.url}/data/futures/cm/monthly/klines/BTCUSD_PERP/1h/BTCUSD_PERP-1h-2025-10.zip"
    body = httpx.get(zip_url).content
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.read(zf.namelist()[0]).startswith(b"open_time,open,high,low,close,volume,")
    for stream, market, symbol in (("um:BTCUSDT@1h", "um", "BTCUSDT"),
                                   ("cm:BTCUSD_PERP@1h", "cm", "BTCUSD_PERP")):  # fmt: skip
        lake = tmp_path / f"lake-{market}"
        done = backfill(fsim, market, symbol, first - 5 * 3_600_000, last, "--intervals", "1h",
                        "--source", "vision", "--vision-url", fsim.url, "--lake", str(lake),
                        "--state-dir", str(tmp_path / f"st-{market}"))  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert lake_object(lake, stream) == truth(fsim, stream, first - 5 * 3_600_000, last)


def test_futures_429_and_418_wording() -> None:
    """FS §8: the futures -1003 texts; the pool is shared by /fapi and /dapi, not with spot."""
    args = (
        "--start",
        str(START),
        "--futures-weight-limit",
        "20",
        "--ban-after",
        "1",
        "--weight-window",
        "3600",
        *CONTRACTS,
    )  # fmt: skip  (no window rolls mid-test)
    with run_simulator(None, *args) as sim:
        kl = {"symbol": "BTCUSDT", "interval": "1m", "limit": 1500}  # weight 10
        codes = [httpx.get(f"{sim.url}/fapi/v1/klines", params=kl).status_code for _ in range(2)]
        r = httpx.get(f"{sim.url}/dapi/v1/klines", params={**kl, "symbol": "BTCUSD_PERP"})
        assert codes == [200, 200] and r.status_code == 429
        assert r.json()["msg"].startswith("Too many requests; current limit is 20 requests per")
        assert httpx.get(f"{sim.url}/api/v3/ping").status_code == 200  # spot: its own pool
        r = httpx.get(f"{sim.url}/fapi/v1/klines", params=kl)
        assert r.status_code == 418
        assert r.json()["msg"].startswith("Way too many requests; IP banned until ")


def test_futures_halt_is_confirmed_empty_under_the_futures_stream(tmp_path: Path) -> None:
    """Gap repair and halts as on spot: a complete page without the halted open times records
    them as confirmed empty, keyed by the futures stream id (not the spot one)."""
    first, last = START - 120 * MINUTE, START - MINUTE
    with run_simulator(None, "--start", str(START), *CONTRACTS) as sim:
        halt = {"market": "cm", "symbol": "BTCUSD_PERP", "interval": "1m",
                "start": START - 60 * MINUTE, "end": START - 51 * MINUTE}  # fmt: skip
        assert httpx.post(f"{sim.url}/_sim/futures/halt", json=halt).json()["ok"]
        lake, state = tmp_path / "lake", tmp_path / "state"
        done = backfill(sim, "cm", "BTCUSD_PERP", first, last, "--lake", str(lake),
                        "--state-dir", str(state))  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert lake_object(lake, "cm:BTCUSD_PERP@1m") == truth(
            sim, "cm:BTCUSD_PERP@1m", first, last
        )
        ranges = EmptyRanges(state).all()
    assert ranges == {"cm:BTCUSD_PERP@1m": [(START - 60 * MINUTE, START - 51 * MINUTE)]}


def _check(fsim: SimProcess, ws_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "streamer", "--check", "--check-timeout", "20",
           "--rest-url", fsim.url, "--ws-url", f"{fsim.ws_url}{ws_path}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_streamer_check_per_market(fsim: SimProcess) -> None:
    """`streamer --check` on futures: exchangeInfo through the per-market check (parameterless
    on futures), a selector resolved from it, one frame per stream on the market's route."""
    um = _check(fsim, "/fstream", "--market", "um", "--symbols", "BTCUSDT", "--intervals",
                "1m,1h")  # fmt: skip
    assert um.returncode == 0, um.stderr
    assert "streamer --check: ok:" in um.stdout and "each of 2 stream(s)" in um.stdout
    cm = _check(fsim, "/dstream", "--symbols", "cm:BTCUSD_PERP", "--intervals", "1m")
    assert cm.returncode == 0 and "each of 1 stream(s)" in cm.stdout, cm.stderr
    selector = _check(fsim, "/fstream", "--symbols", "um:quote=USDT", "--intervals", "1m")
    assert selector.returncode == 0 and "stream(s)" in selector.stdout, selector.stderr
    bad = _check(fsim, "/fstream", "--market", "um", "--symbols", "BTCUSDT,NOPEUSDT",
                 "--intervals", "1m")  # fmt: skip
    assert bad.returncode == 2
    assert "does not list these symbols: NOPEUSDT" in bad.stderr
