"""WebSocket streams against simulator subprocesses: frames, control methods, limits, faults.

No sleeps: every wait is a receive with a deadline; "nothing arrives" is a receive that times
out, which is the behaviour under test.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from binance import AsyncClient, BinanceSocketManager
from websockets.exceptions import ConnectionClosed, InvalidStatus

from binance_sim.testing import SimProcess, run_simulator
from klinelake.core.binance_ws import ControlReply, KlineEvent, ServerShutdown, parse_ws_frame
from klinelake.core.errors import InvalidData
from klinelake.core.row import parse_lake_line
from tests.recorded import WS_FIXTURE

from .conftest import BUNDLED

FAST = ("--start", "2022-01-15T10:30:00", "--synthetic", "ETHUSDT:1m:2022-01-01")
ETH = "ethusdt@kline_1m"


@pytest.fixture(scope="module")
def fast() -> Iterator[SimProcess]:
    """Speed 600: a 1m kline closes every 0.1 s; forming frames capped at 10/s per stream."""
    with run_simulator(BUNDLED, *FAST, "--speed", "600") as s:
        yield s


async def recv_json(ws: Any, within: float = 5.0) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), within))


async def reply(ws: Any, request: dict[str, Any], within: float = 5.0) -> dict[str, Any]:
    """Send a control frame and return the reply with its id (data frames interleave)."""
    await ws.send(orjson.dumps(request).decode())
    deadline = time.monotonic() + within
    while True:
        msg = await recv_json(ws, deadline - time.monotonic())
        if "id" in msg:
            out: dict[str, Any] = msg
            return out


def _shape(obj: Any) -> Any:
    """Keys in order and JSON types, recursively: what must match the recorded frames."""
    if isinstance(obj, dict):
        return [(k, _shape(v)) for k, v in obj.items()]
    return type(obj).__name__


async def test_python_binance_socket_manager_receives_klines(fast: SimProcess) -> None:
    client = AsyncClient()  # no network in the constructor
    try:
        bm = BinanceSocketManager(client)
        bm.STREAM_URL = fast.ws_url + "/"  # the only change: the base URL
        async with bm.kline_socket("ETHUSDT", AsyncClient.KLINE_INTERVAL_1MINUTE) as stream:
            msgs = [await asyncio.wait_for(stream.recv(), 5) for _ in range(30)]
    finally:
        await client.close_connection()
    assert all(m["e"] == "kline" and m["k"]["i"] == "1m" for m in msgs)
    assert any(m["k"]["x"] for m in msgs)


async def test_frames_have_the_recorded_field_set_order_and_types(fast: SimProcess) -> None:
    recorded = [orjson.loads(line) for line in WS_FIXTURE.read_bytes().splitlines()]
    shapes = {orjson.dumps(_shape(f)) for f in recorded}
    assert len(shapes) == 1  # all 118 recorded frames share one shape
    async with websockets.connect(f"{fast.ws_url}/stream?streams={ETH}") as ws:
        frames = [await recv_json(ws) for _ in range(40)]
    assert {orjson.dumps(_shape(f)) for f in frames} == shapes
    events = [parse_ws_frame(orjson.dumps(f)) for f in frames + recorded]
    assert all(isinstance(e, KlineEvent) for e in events)
    for k in (f["data"]["k"] for f in frames):  # trade ids agree with the count
        assert (k["f"], k["L"]) == (-1, -1) if k["n"] == 0 else k["L"] - k["f"] + 1 == k["n"]
    closed = [f["data"] for f in frames if f["data"]["k"]["x"]]
    assert closed and all(0 < d["E"] - d["k"]["T"] < 10 for d in closed)


async def test_every_closed_kline_once_in_order_and_equal_to_the_truth() -> None:
    # Speed 36000: ten 1m klines close per real second... times 60.
    with run_simulator(BUNDLED, *FAST, "--speed", "36000") as s:
        async with websockets.connect(f"{s.ws_url}/ws/{ETH}") as ws:
            t0 = time.monotonic()
            closed: list[KlineEvent] = []
            forming = 0
            while time.monotonic() - t0 < 1.0:
                ev = parse_ws_frame(await asyncio.wait_for(ws.recv(), 5))
                assert isinstance(ev, KlineEvent)
                if ev.closed:
                    closed.append(ev)
                else:
                    forming += 1
        assert len(closed) > 100
        opens = [e.kline.open_time for e in closed]
        assert all(b - a == 60_000 for a, b in itertools.pairwise(opens))
        assert forming <= 10 * (time.monotonic() - t0) + 2  # --max-update-hz 10
        truth = s.truth("ETHUSDT", "1m", opens[0], opens[-1])
        assert truth == b"".join(e.kline.to_line() for e in closed)
        assert s.state()["counters"]["closed_klines_sent"]["ETHUSDT@1m"] >= len(closed)


async def test_microsecond_mode_and_raw_payloads(fast: SimProcess) -> None:
    async with websockets.connect(f"{fast.ws_url}/ws/{ETH}?timeUnit=microsecond") as ws:
        d = await recv_json(ws)
    assert d["e"] == "kline" and len(str(d["E"])) == len(str(d["k"]["t"])) == 16
    assert d["k"]["T"] == d["k"]["t"] + 60_000_000 - 1
    bad = f"{fast.ws_url}/ws/{ETH}?timeUnit=SECOND"
    with pytest.raises(InvalidStatus) as exc:
        async with websockets.connect(bad):
            pass
    assert exc.value.response.status_code == 400


async def test_control_methods(fast: SimProcess) -> None:
    async with websockets.connect(f"{fast.ws_url}/ws") as ws:
        sub = {"method": "SUBSCRIBE", "params": [ETH, "btcusdt@kline_1h"], "id": 1}
        assert await reply(ws, sub) == {"result": None, "id": 1}
        listing = await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": "abc"})
        assert listing == {"result": [ETH, "btcusdt@kline_1h"], "id": "abc"}
        unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": -7}
        assert await reply(ws, unsub) == {"result": None, "id": -7}
        assert await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": None}) == {
            "result": [ETH], "id": None}  # fmt: skip
    async with websockets.connect(f"{fast.ws_url}/ws/{ETH}") as ws:
        get = {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}
        assert await reply(ws, get) == {"result": False, "id": 2}
        prop = {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}
        assert await reply(ws, prop) == {"result": None, "id": 5}
        msg = await recv_json(ws)
        assert msg["stream"] == ETH and msg["data"]["e"] == "kline"
        assert await reply(ws, get) == {"result": True, "id": 2}


async def test_unknown_streams_are_acked_and_silent(fast: SimProcess) -> None:
    async with websockets.connect(f"{fast.ws_url}/stream") as ws:
        sub = {"method": "SUBSCRIBE", "params": ["nopeusdt@kline_1m", "btcusdt@trade"], "id": 1}
        assert await reply(ws, sub) == {"result": None, "id": 1}
        await reply(ws, {"method": "SUBSCRIBE", "params": [ETH], "id": 2})
        streams = {(await recv_json(ws))["stream"] for _ in range(20)}
    assert streams == {ETH}


_VARIANTS = "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"method":"SUBSCRIBE","params":["btcusdt@kline_2m"],"id":2}',
         {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2}),
        ('{"method":"SUBSCRIBE","params":["no at sign"],"id":3}',
         {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 3}),
        ("{nope", {"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 2"},
                   "id": None}),
        ('{"method":"FOO","params":[],"id":4}',
         {"error": {"code": 2, "msg": f"Invalid request: unknown variant `FOO`, expected one "
                    f"of {_VARIANTS} at line 1 column 15"}, "id": 4}),
        ('{"params":[],"id":5}',
         {"error": {"code": 2, "msg": "Invalid request: missing field `method` at line 1 "
                    "column 20"}, "id": 5}),
        ('{"method":"LIST_SUBSCRIPTIONS","id":1.5}',
         {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned "
                    "integer"}, "id": None}),
        ('{"method":"SET_PROPERTY","params":["nope",true],"id":6}',
         {"error": {"code": 0, "msg": "Unknown property"}, "id": 6}),
        ('{"method":"SET_PROPERTY","params":["combined","yes"],"id":7}',
         {"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": 7}),
        ('{"method":"SET_PROPERTY","params":[1,true],"id":8}',
         {"error": {"code": 2, "msg": "Invalid request: property name must be a string"},
          "id": 8}),
        ('{"method":"GET_PROPERTY","params":["combined",1],"id":9}',
         {"error": {"code": 2, "msg": "Invalid request: too many parameters"}, "id": 9}),
    ],
)  # fmt: skip
async def test_control_error_table(fast: SimProcess, frame: str, expected: Any) -> None:
    async with websockets.connect(f"{fast.ws_url}/ws") as ws:
        await ws.send(frame)
        got = await recv_json(ws)
    assert got == expected
    assert isinstance(parse_ws_frame(orjson.dumps(got)), ControlReply)


async def test_more_than_five_frames_a_second_closes_1008(fast: SimProcess) -> None:
    async with websockets.connect(f"{fast.ws_url}/ws") as ws:
        for i in range(6):
            await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert (ws.close_code, ws.close_reason) == (1008, "Too many requests")
    async with aiohttp.ClientSession() as session:  # ping frames count too
        ws2 = await session.ws_connect(f"{fast.url}/ws", autoping=False)
        for _ in range(6):
            await ws2.ping()
        msg = await asyncio.wait_for(_until_close(ws2), 5)
    assert (msg.data, msg.extra) == (1008, "Too many requests")


async def _until_close(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    while True:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return msg


def test_stream_and_connection_limits() -> None:
    args = ("--max-streams", "3", "--ws-conn-limit", "3", "--ws-conn-window", "300")
    with run_simulator(BUNDLED, *FAST, *args) as s:

        async def scenario() -> None:
            four = "/".join(f"s{i}usdt@kline_1m" for i in range(4))
            with pytest.raises(InvalidStatus) as exc:  # attempt 1: refused, 400
                await websockets.connect(f"{s.ws_url}/stream?streams={four}")
            assert exc.value.response.status_code == 400
            async with websockets.connect(f"{s.ws_url}/ws/a@kline_1m/b@kline_1m") as ws:
                sub = {"method": "SUBSCRIBE", "params": ["c@kline_1m", "d@kline_1m"], "id": 1}
                error = {"code": 2, "msg": "Invalid request: too many streams"}
                assert await reply(ws, sub) == {"error": error, "id": 1}
            async with websockets.connect(f"{s.ws_url}/ws"):  # attempt 3
                pass
            with pytest.raises(InvalidStatus) as exc:  # attempt 4 in 5 min: 429
                await websockets.connect(f"{s.ws_url}/ws")
            assert exc.value.response.status_code == 429

        asyncio.run(scenario())


def test_pings_pong_deadline_and_unsolicited_pongs() -> None:
    args = ("--ping-interval", "0.2", "--pong-timeout", "0.6", "--speed", "600")
    with run_simulator(BUNDLED, *FAST, *args) as s:

        async def scenario() -> None:
            # websockets answers pings: the connection outlives several pong deadlines.
            async with websockets.connect(f"{s.ws_url}/ws/{ETH}") as ws:
                t0 = time.monotonic()
                while time.monotonic() - t0 < 2.0:
                    await asyncio.wait_for(ws.recv(), 5)
            # A client that never answers, only sends unsolicited pongs: closed.
            async with aiohttp.ClientSession() as session:
                ws2 = await session.ws_connect(f"{s.url}/ws", autoping=False)
                t0 = time.monotonic()
                pings = 0
                while True:
                    msg = await asyncio.wait_for(ws2.receive(), 5)
                    if msg.type == aiohttp.WSMsgType.PING:
                        pings += 1
                        await ws2.pong(b"")  # unsolicited: does not echo the payload
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        break
                elapsed = time.monotonic() - t0
            assert pings >= 1 and 0.6 <= elapsed < 3.0

        asyncio.run(scenario())
        counters = s.state()["counters"]
        assert counters["ws_closed_pong_timeout"] == 1 and counters["ws_pongs_received"] >= 5


def test_connections_are_cut_after_24h_of_simulated_time() -> None:
    with run_simulator(BUNDLED, *FAST, "--speed", "86400") as s:  # 24 h in one real second

        async def scenario() -> float:
            t0 = time.monotonic()
            async with websockets.connect(f"{s.ws_url}/ws/{ETH}") as ws:
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1000
            return time.monotonic() - t0

        assert 0.9 <= asyncio.run(scenario()) < 3.0


async def test_fault_drop_aborts_without_close_frame(own_fast: SimProcess) -> None:
    async with websockets.connect(f"{own_fast.ws_url}/ws/{ETH}") as ws:
        await recv_json(ws)
        own_fast.admin({"ws_drop": True})
        with pytest.raises(ConnectionClosed) as exc:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert exc.value.rcvd is None  # no close frame: the TCP connection was aborted


async def test_fault_stall_with_and_without_pongs(own_fast: SimProcess) -> None:
    async with websockets.connect(f"{own_fast.ws_url}/ws/{ETH}") as ws:
        await recv_json(ws)
        own_fast.admin({"ws_stall": True, "answer_pings": True})
        with pytest.raises(TimeoutError):  # drain what was in flight, then silence
            while True:
                await asyncio.wait_for(ws.recv(), 0.5)
        await asyncio.wait_for(await ws.ping(), 2)  # still answers pings
        own_fast.admin({"answer_pings": False})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(await ws.ping(), 0.5)
        own_fast.admin({"ws_stall": False})
        assert (await recv_json(ws))["e"] == "kline"


async def test_fault_malformed_frames_come_in_addition(own_fast: SimProcess) -> None:
    async with websockets.connect(f"{own_fast.ws_url}/stream?streams={ETH}") as ws:
        await recv_json(ws)
        own_fast.admin({"ws_malformed": 4})
        good, bad = 0, []
        while good < 6:
            raw = await asyncio.wait_for(ws.recv(), 5)
            try:
                parse_ws_frame(raw)
                good += 1
            except InvalidData as exc:
                bad.append(str(exc))
    assert len(bad) == 4
    assert any("not JSON" in b for b in bad) and any("'k.c'" in b for b in bad)
    assert any("k.o" in b for b in bad)


async def test_fault_server_shutdown_raw_and_combined(own_fast: SimProcess) -> None:
    async with (
        websockets.connect(f"{own_fast.ws_url}/ws/{ETH}") as raw,
        websockets.connect(f"{own_fast.ws_url}/stream?streams={ETH}") as comb,
    ):
        await recv_json(raw)
        await recv_json(comb)
        own_fast.admin({"ws_shutdown": True, "shutdown_grace": 0.2})
        for ws, wrapped in ((raw, False), (comb, True)):
            seen = None
            with pytest.raises(ConnectionClosed):
                while True:
                    text = await asyncio.wait_for(ws.recv(), 5)
                    if isinstance(parse_ws_frame(text), ServerShutdown):
                        seen = orjson.loads(text)
            assert seen is not None and ("stream" in seen) == wrapped
            assert (seen["data"] if wrapped else seen)["e"] == "serverShutdown"
            assert ws.close_code == 1001


async def test_fault_cut_now(own_fast: SimProcess) -> None:
    async with websockets.connect(f"{own_fast.ws_url}/ws/{ETH}") as ws:
        await recv_json(ws)
        own_fast.admin({"ws_cut": True})
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1000


async def test_fault_halt_skips_klines_on_ws(own_fast: SimProcess) -> None:
    now = own_fast.state()["now"]
    start = now - now % 60_000 + 5 * 60_000
    end = start + 4 * 60_000
    own_fast.admin({"halt": {"symbol": "ETHUSDT", "interval": "1m", "start": start, "end": end}})
    async with websockets.connect(f"{own_fast.ws_url}/ws/{ETH}") as ws:
        opens: list[int] = []
        while not opens or opens[-1] < end + 3 * 60_000:
            ev = parse_ws_frame(await asyncio.wait_for(ws.recv(), 5))
            if isinstance(ev, KlineEvent) and ev.closed:
                opens.append(ev.kline.open_time)
    assert not any(start <= t <= end for t in opens)
    assert opens[opens.index(start - 60_000) + 1] == end + 60_000
    truth = own_fast.truth("ETHUSDT", "1m", start - 60_000, end + 60_000).splitlines()
    assert [parse_lake_line(x).open_time for x in truth] == [start - 60_000, end + 60_000]


@pytest.fixture
def own_fast() -> Iterator[SimProcess]:
    with run_simulator(BUNDLED, *FAST, "--speed", "600") as s:
        yield s


def test_forming_updates_every_2s_and_1s_of_simulated_time() -> None:
    args = ("--speed", "5", "--synthetic", "BTCUSDT:1s:2022-01-15")
    with run_simulator(BUNDLED, *FAST, *args) as s:

        async def forming_event_times(stream: str) -> list[int]:
            async with websockets.connect(f"{s.ws_url}/ws/{stream}") as ws:
                times: list[int] = []
                while len(times) < 5:
                    d = await recv_json(ws)
                    if not d["k"]["x"]:
                        times.append(d["E"])
            return times

        for stream, period in ((ETH, 2000), ("btcusdt@kline_1s", 1000)):
            times = asyncio.run(forming_event_times(stream))
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert all(period <= g < period + 300 for g in gaps), (stream, gaps)


@pytest.mark.parametrize(
    "path",
    [
        "/ws/ethusdt%40kline_1m",  # URL-encoded (CHANGELOG 2025-12-02)
        "/stream?streams=ethusdt%40kline_1m%2Fbtcusdt%40kline_1h",
        "/ws/ETHUSDT@kline_1m",  # the symbol part matches case-insensitively
        "/ws/ethusdt@kline_1m@+08:00",  # same boundaries as UTC for intervals dividing 8 h
    ],
)
async def test_stream_name_forms(fast: SimProcess, path: str) -> None:
    async with websockets.connect(fast.ws_url + path) as ws:
        ev = parse_ws_frame(await asyncio.wait_for(ws.recv(), 5))
    assert isinstance(ev, KlineEvent) and ev.kline.symbol == "ETHUSDT"
