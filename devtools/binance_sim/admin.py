"""Admin routes under `/_sim/` (only with `--admin`): faults, state, truth, clock.

POST /_sim/faults  {"rest_5xx":3} ...      -> {"ok":true,"faults":{...}}  (keys: faults.py)
GET  /_sim/state                           -> clock, faults, counters
GET  /_sim/truth?symbol=&interval=&start=&end=  -> lake JSONL lines (Kline.to_line()) of the
     closed klines that exist with open_time in [start, end] (ms), halts excluded
POST /_sim/clock   {"speed":X}             -> {"now":ms,"speed":X}
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from binance_sim.faults import FaultError
from binance_sim.market import Halt
from klinelake.core.intervals import INTERVALS

if TYPE_CHECKING:
    from binance_sim.server import Sim


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise FaultError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FaultError("body must be a JSON object")
    return body


def _halt(value: Any) -> Halt:
    if not isinstance(value, dict):
        raise FaultError("halt must be an object {symbol, interval, start, end}")
    try:
        halt = Halt(str(value["symbol"]).upper(), value["interval"], int(value["start"]),
                    int(value["end"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise FaultError(f"halt: {exc!r}") from None
    if halt.interval not in INTERVALS or halt.end < halt.start:
        raise FaultError("halt: bad interval or end < start")
    return halt


def routes(sim: Sim) -> list[web.RouteDef]:
    background: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    async def faults(request: web.Request) -> web.Response:
        try:
            body = await _body(request)
            halt = _halt(body["halt"]) if "halt" in body else None
            sim.faults.update(body)
        except FaultError as exc:
            return _json({"ok": False, "error": str(exc)}, 400)
        if halt is not None:
            sim.market.add_halt(halt)
        hub = sim.hub
        if body.get("ws_malformed"):
            hub.malformed_all(int(body["ws_malformed"]))
        if body.get("ws_drop"):
            hub.drop_all()
        if body.get("ws_cut"):
            spawn(hub.close_all(1000, b"Connection age limit (24h) reached"))
        if body.get("ws_shutdown"):
            grace = body.get("shutdown_grace", sim.config.shutdown_grace)
            spawn(hub.shutdown_all(float(grace)))
        if "ws_stall" in body:
            hub.wake_all()
        return _json({"ok": True, "faults": sim.faults.__dict__})

    async def state(request: web.Request) -> web.Response:
        return _json(
            {
                "now": sim.clock.now_ms(),
                "speed": sim.clock.speed,
                "faults": sim.faults.__dict__,
                "halts": [
                    {"symbol": h.symbol, "interval": h.interval, "start": h.start, "end": h.end}
                    for h in sim.market.halts
                ],
                "streams": [f"{s}@{i}" for s, i in sorted(sim.market.series)],
                "counters": sim.stats.to_dict(),
            }
        )

    async def truth(request: web.Request) -> web.Response:
        q = request.query
        try:
            symbol, interval = q["symbol"].upper(), q["interval"]
            start, end = int(q.get("start", "0")), int(q.get("end", str(2**62)))
        except (KeyError, ValueError) as exc:
            return _json({"ok": False, "error": f"bad query: {exc!r}"}, 400)
        now = sim.clock.now_ms()
        body = b"".join(k.to_line() for k in sim.market.closed(symbol, interval, now, start, end))
        return web.Response(body=body, content_type="application/x-ndjson")

    async def clock(request: web.Request) -> web.Response:
        try:
            body = await _body(request)
            speed = float(body["speed"])
            sim.clock.set_speed(speed)
        except (FaultError, KeyError, TypeError, ValueError) as exc:
            return _json({"ok": False, "error": str(exc)}, 400)
        sim.hub.wake_all()
        return _json({"now": sim.clock.now_ms(), "speed": sim.clock.speed})

    return [
        web.post("/_sim/faults", faults),
        web.get("/_sim/state", state),
        web.get("/_sim/truth", truth),
        web.post("/_sim/clock", clock),
    ]
