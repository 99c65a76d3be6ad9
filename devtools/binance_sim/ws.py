"""WebSocket market streams: `/ws/<name>`, `/ws`, `/stream?streams=a/b` (fact sheet §1-§4).

Per connection: a reader (control frames, client ping/pong, the 5 frames/s limit), a pinger
(server pings every `ping_interval` real s, close when no echoing pong within `pong_timeout`),
and a pusher that, per subscribed kline stream, sends one `x:true` frame for every kline that
closes (in order, none skipped at any speed; E = T + 3 ms) and the forming kline every 2 s of
simulated time (1 s for `1s`; due on a 250 ms grid, E = the due time), at most `max_update_hz`
forming frames per stream per real second.

The control-frame protocol (replies, errors, rate windows) and each market's WS rules
(`ws_control.ws_rules`: futures have no `1s`/`@+08:00` streams and no timeUnit, and close after
the reply to invalid JSON) are `binance_sim.ws_control`, pure; here: the sockets. A futures
venue's hub (binance_sim.futures) runs with its market's config: 10 client frames a second,
pings every 180 s, a 600 s pong deadline, the open kline every 250 ms.

Undocumented choices: a URL with more than 1024 streams gets HTTP 400; the 301st connection
attempt in 5 min from one IP gets HTTP 429 on the upgrade; the pong deadline
and the 24 h cut close with 1000, serverShutdown and process shutdown with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from binance_sim.faults import block_answer
from binance_sim.rest import JSON_TYPE, error_body
from binance_sim.ws_control import (
    ConnView,
    Reply,
    SlidingWindow,
    Sub,
    classify,
    control_reply,
    is_combined_path,
    ws_rules,
)
from klinelake.core.intervals import align_down, next_open_time
from klinelake.core.row import Kline

if TYPE_CHECKING:
    from binance_sim.server import Sim

log = logging.getLogger("binance_sim.ws")
_CLOSE_BURST = 2000  # closed frames per stream per pusher pass, so other streams get a turn


# Forming frames are due on a grid of simulated time, every 2 s per stream (1 s for 1s), as
# Binance sends them; with each stream's phase on a 250 ms grid, a connection's pusher makes at
# most 4 passes per simulated second over its streams (not one per frame), which keeps the
# simulator cheap at tens of thousands of streams. A frame is stamped with its due time.
_TICK_MS = 250


def next_forming_due(sent_at: int, interval: str, period_ms: int = 2000) -> int:
    """When the stream's next forming frame is due, the last one having been stamped `sent_at`
    (every `period_ms`: 2 s on spot, 250 ms on futures)."""
    period = 1000 if interval == "1s" else period_ms
    return -(-(sent_at + period) // _TICK_MS) * _TICK_MS


@dataclass(eq=False)
class Conn:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    combined: bool
    micros: bool
    opened_sim: int
    subs: dict[str, Sub] = field(default_factory=dict)
    recv_times: SlidingWindow = field(default_factory=SlidingWindow)
    pings: dict[bytes, float] = field(default_factory=dict)
    malformed_left: int = 0
    malformed_seq: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False


def kline_event(k: Kline, closed: bool, event_ms: int, micros: bool) -> dict[str, Any]:
    """The raw kline payload, fields in the documented order (fact sheet §2)."""
    if k.trades:
        first = k.open_time * 1000  # synthetic trade ids: increasing, n == L - f + 1
        last = first + k.trades - 1
    else:
        first = last = -1
    m = 1000 if micros else 1
    close = k.close_time * 1000 + 999 if micros else k.close_time
    return {
        "e": "kline", "E": event_ms * m, "s": k.symbol,
        "k": {"t": k.open_time * m, "T": close, "s": k.symbol, "i": k.interval, "f": first,
              "L": last, "o": k.open, "c": k.close, "h": k.high, "l": k.low, "v": k.volume,
              "n": k.trades, "x": closed, "q": k.quote_volume, "V": k.taker_buy_base_volume,
              "Q": k.taker_buy_quote_volume, "B": "0"},
    }  # fmt: skip


def _garbage(payload: dict[str, Any], seq: int) -> bytes:
    """Four kinds of bad frame, in turn: not JSON, truncated, non-numeric price, missing field."""
    kind = seq % 4
    if kind == 0:
        return b"\x7f<html>not json"
    text = orjson.dumps(payload)
    if kind == 1:
        return text[: len(text) // 2]
    bad = json.loads(text)
    k = bad.get("data", bad)["k"]
    if kind == 2:
        k["o"] = "NaN.x"
    else:
        del k["c"]
    return orjson.dumps(bad)


class Hub:
    """All live connections, the per-IP connection throttle, and the WS faults."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.conns: set[Conn] = set()
        self.attempts: dict[str, SlidingWindow] = {}
        self.rules = ws_rules(sim.config.venue_market)

    # --- faults ---------------------------------------------------------------------------

    def drop_all(self) -> int:
        n = 0
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.abort()
                n += 1
        return n

    def malformed_all(self, count: int) -> None:
        for c in self.conns:
            c.malformed_left += count

    async def close_all(self, code: int, message: bytes) -> None:
        await asyncio.gather(
            *(self._close(c, code, message) for c in list(self.conns)), return_exceptions=True
        )

    async def shutdown_all(self, grace: float) -> None:
        now = self.sim.clock.now_ms()
        for c in list(self.conns):
            event = {"e": "serverShutdown", "E": now * 1000 if c.micros else now}
            frame = {"stream": "!serverShutdown", "data": event} if c.combined else event
            with contextlib.suppress(ConnectionError, RuntimeError):
                await c.ws.send_str(orjson.dumps(frame).decode())
        await asyncio.sleep(grace)
        await self.close_all(1001, b"Server shutdown")

    def wake_all(self) -> None:
        for c in self.conns:
            c.wake.set()

    async def _close(self, c: Conn, code: int, message: bytes) -> None:
        c.closing = True
        c.wake.set()
        await c.ws.close(code=code, message=message)

    # --- connection -----------------------------------------------------------------------

    def _throttled(self, ip: str) -> bool:
        cfg = self.sim.config
        window = self.attempts.setdefault(ip, SlidingWindow())
        return not window.admit(
            time.monotonic(), limit=cfg.ws_conn_limit, window_s=cfg.ws_conn_window
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim

        def refuse(status: int, code: int, msg: str) -> web.Response:
            sim.stats.ws_refused += 1
            return web.Response(status=status, body=error_body(code, msg),
                                headers={"Content-Type": JSON_TYPE})  # fmt: skip

        if sim.faults.ws_block:  # refused at the handshake, as Binance does (HTTP, no upgrade)
            sim.stats.ws_refused += 1
            body, content_type = block_answer(sim.faults.ws_block)
            return web.Response(status=sim.faults.ws_block, body=body, content_type=content_type)
        if self._throttled(request.remote or "unknown"):
            cfg = sim.config
            msg = f"Too many connection attempts; at most {cfg.ws_conn_limit} per "
            return refuse(429, -1003, msg + f"{int(cfg.ws_conn_window)} s.")
        # futures have no timeUnit option (milliseconds only): the parameter is ignored there
        unit = request.query.get("timeUnit") if self.rules.time_unit else None
        if unit is not None and unit.upper() not in ("MICROSECOND", "MILLISECOND"):
            return refuse(400, -1194, "Invalid value for time unit; expected either "
                          "MICROSECOND or MILLISECOND.")  # fmt: skip
        # `/stream`, and under a host prefix or route (`/fstream/market/stream`, futures.py)
        combined = is_combined_path(request.path)
        raw = request.query.get("streams", "") if combined else request.match_info.get("names", "")
        names = [n for n in raw.split("/") if n]
        if len(names) > sim.config.max_streams:
            return refuse(400, -1130, f"Too many streams: at most {sim.config.max_streams}.")
        # autoping off: the simulator counts client pings/pongs and sends its own pings.
        ws = web.WebSocketResponse(
            autoping=False, max_msg_size=1 << 20, compress=False, timeout=2.0
        )
        transport = request.transport
        assert transport is None or isinstance(transport, asyncio.Transport)
        await ws.prepare(request)
        conn = Conn(ws, transport, combined, bool(unit and unit.upper() == "MICROSECOND"),
                    sim.clock.now_ms())  # fmt: skip
        for n in names:
            sub = classify(self._served, n, self.rules)
            if sub is not None:
                self._add(conn, sub)
        self.conns.add(conn)
        sim.stats.ws_opened += 1
        sim.stats.ws_active += 1
        tasks = [asyncio.create_task(self._push(conn)), asyncio.create_task(self._ping(conn))]
        for t in tasks:
            t.add_done_callback(_log_crash)
        try:
            await self._read(conn)
        finally:
            conn.closing = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.conns.discard(conn)
            sim.stats.ws_active -= 1
        return ws

    def _add(self, conn: Conn, sub: Sub) -> None:
        if sub.name in conn.subs:
            return
        if sub.symbol is not None:
            sub.next_close = align_down(self.sim.clock.now_ms(), sub.interval)
        conn.subs[sub.name] = sub
        conn.wake.set()

    # --- reader ---------------------------------------------------------------------------

    async def _read(self, conn: Conn) -> None:
        sim, ws = self.sim, conn.ws
        while not ws.closed:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            sim.stats.ws_frames_received += 1
            if not conn.recv_times.admit(
                time.monotonic(), limit=sim.config.max_msgs_per_s, window_s=1.0
            ):
                sim.stats.ws_closed_rate += 1
                await self._close(conn, 1008, b"Too many requests")
                return
            stalled = sim.faults.ws_stall
            if msg.type == WSMsgType.PING:
                if not stalled or sim.faults.answer_pings:
                    await ws.pong(bytes(msg.data))
            elif msg.type == WSMsgType.PONG:
                self._pong(conn, bytes(msg.data))
            elif msg.type == WSMsgType.TEXT and not stalled:
                reply = self.control(conn, msg.data)
                await ws.send_str(reply.payload.decode())
                if reply.error_code == 3 and self.rules.close_on_invalid_json:
                    # futures: invalid JSON is answered, then the connection is closed (FS §3;
                    # the close code is undocumented: 1008 as for the rate limit)
                    await self._close(conn, 1008, b"Invalid JSON")
                    return

    def _pong(self, conn: Conn, payload: bytes) -> None:
        """Only a pong echoing an outstanding ping counts; it settles that ping and older ones."""
        sent = conn.pings.get(payload)
        if sent is None:
            return  # unsolicited: allowed, but not a liveness reply
        self.sim.stats.ws_pongs_received += 1
        for p, t in list(conn.pings.items()):
            if t <= sent:
                del conn.pings[p]

    # --- control frames (fact sheet §4) -----------------------------------------------------

    def _served(self, symbol: str, interval: str) -> bool:
        return (symbol, interval) in self.sim.market.series

    def control(self, conn: Conn, text: str) -> Reply:
        """Answer one control frame (`ws_control.control_reply`) and apply what it changes."""
        view = ConnView(
            conn.subs, conn.combined, lambda name: classify(self._served, name, self.rules),
            self.sim.config.max_streams,
        )  # fmt: skip
        reply = control_reply(text, view)
        for name in reply.unsubscribe:
            conn.subs.pop(name, None)
        for sub in reply.subscribe:
            self._add(conn, sub)
        if reply.combined is not None:
            conn.combined = reply.combined
        return reply

    # --- pinger -----------------------------------------------------------------------------

    async def _ping(self, conn: Conn) -> None:
        sim, cfg = self.sim, self.sim.config
        next_ping = time.monotonic() + cfg.ping_interval
        seq = 0
        while not conn.ws.closed and not conn.closing:
            now = time.monotonic()
            if sim.faults.ws_stall:  # silent; the pong deadline is suspended meanwhile
                conn.pings.clear()
                next_ping = now + cfg.ping_interval
            if conn.pings and now - min(conn.pings.values()) >= cfg.pong_timeout:
                sim.stats.ws_closed_pong_timeout += 1
                await self._close(conn, 1000, b"Pong timeout")
                return
            if now >= next_ping:
                seq += 1
                payload = str(sim.clock.now_ms() * 1000 + seq % 1000).encode()
                conn.pings[payload] = now
                sim.stats.ws_pings_sent += 1
                await conn.ws.ping(payload)
                next_ping = now + cfg.ping_interval
            deadline = next_ping
            if conn.pings:
                deadline = min(deadline, min(conn.pings.values()) + cfg.pong_timeout)
            await asyncio.sleep(max(0.001, deadline - time.monotonic()))

    # --- pusher -----------------------------------------------------------------------------

    async def _send(self, conn: Conn, sub: Sub, k: Kline, closed: bool, event_ms: int) -> None:
        payload: dict[str, Any] = kline_event(k, closed, event_ms, conn.micros)
        if conn.combined:
            payload = {"stream": sub.name, "data": payload}
        if conn.malformed_left > 0:
            conn.malformed_left -= 1
            conn.malformed_seq += 1
            await conn.ws.send_str(_garbage(payload, conn.malformed_seq - 1).decode("latin-1"))
            self.sim.stats.ws_frames_sent += 1
        await conn.ws.send_str(orjson.dumps(payload).decode())
        self.sim.stats.ws_frames_sent += 1
        if closed:
            self.sim.stats.closed_klines_sent[f"{k.symbol}@{k.interval}"] += 1

    async def _push(self, conn: Conn) -> None:
        sim, cfg, market = self.sim, self.sim.config, self.sim.market
        age_ms = int(cfg.max_conn_age * 1000)
        min_gap = 1.0 / cfg.max_update_hz
        while not conn.ws.closed and not conn.closing:
            if sim.faults.ws_stall:
                conn.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.wake.wait(), 0.1)
                continue
            now = sim.clock.now_ms()
            if now - conn.opened_sim >= age_ms:
                sim.stats.ws_closed_age += 1
                await self._close(conn, 1000, b"Connection age limit (24h) reached")
                return
            clock = sim.clock
            delay = min(0.25, clock.real_seconds_until(conn.opened_sim + age_ms))
            busy = False
            for sub in list(conn.subs.values()):
                if sub.symbol is None or conn.subs.get(sub.name) is not sub:
                    continue
                symbol, interval = sub.symbol, sub.interval
                current = align_down(now, interval)
                if sub.next_close < current:
                    todo = market.closed(symbol, interval, now, sub.next_close, current - 1)
                    for sent, k in enumerate(todo, start=1):
                        await self._send(conn, sub, k, True, k.close_time + 3)
                        sub.next_close = next_open_time(k.open_time, interval)
                        if sent >= _CLOSE_BURST:
                            busy = True
                            break
                    else:
                        sub.next_close = current
                real = time.monotonic()
                if now >= sub.next_forming_sim and real - sub.last_forming_real >= min_gap:
                    due = sub.next_forming_sim
                    if now - due >= _TICK_MS or due < current:  # late, or of a closed kline
                        due = now
                    k_now = market.forming(symbol, interval, due)
                    if k_now is not None:
                        await self._send(conn, sub, k_now, False, due)
                    sub.next_forming_sim = next_forming_due(due, interval, cfg.forming_update_ms)
                    sub.last_forming_real = real
                forming_due = max(
                    clock.real_seconds_until(sub.next_forming_sim),
                    sub.last_forming_real + min_gap - real,
                )
                close_due = clock.real_seconds_until(next_open_time(current, interval))
                delay = min(delay, forming_due, close_due)
            if busy:
                await asyncio.sleep(0)
                continue
            conn.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.wake.wait(), max(0.001, delay))


def _log_crash(task: asyncio.Task[None]) -> None:
    """A pusher or pinger that died of anything but a closed socket is a simulator bug."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, ConnectionError | RuntimeError):
        log.error("ws task crashed", exc_info=exc)
