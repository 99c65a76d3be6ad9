"""One combined-stream WebSocket connection carrying a fixed group of streams.

It connects to `{ws_url}/stream`, subscribes in frames paced within the 5 messages/s limit
(binance-spot-api.md §3, §4), parses every frame with the shared model, and hands closed klines
(`x:true`) to `on_closed`. Pings are answered by the client (`streamer.ws_client`: the server
pings every 20 s and drops us after 60 s without a pong). Malformed frames are logged and counted,
never fatal. The client's errors stop here: callers see `ConnectionFailed` or a finished
`read_task`.

Forming frames (most of them) are handled in the client's frame callback: only their event time
matters. Everything else (closed klines, control replies, other events) goes through a queue to
`read_task`, in order, where it can await the sink; while that queue is long, the socket is not
read (backpressure, as websockets' `max_queue` did).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from klinelake.core.binance_ws import (
    ControlReply,
    KlineEvent,
    ServerShutdown,
    forming_event_time,
    parse_ws_frame,
)
from klinelake.core.errors import InvalidData
from klinelake.core.markets import Market, spec, stream_key
from klinelake.core.row import Kline
from klinelake.logs import log_event
from streamer.clock import ServerClock
from streamer.shards import send_offsets, subscribe_frames
from streamer.stall import StallTracker
from streamer.ws_client import CloseInfo, WsClient, WsClosed, WsOpenFailed

log = logging.getLogger("streamer.connection")
MAX_QUEUED = 64  # frames waiting for `read_task` before the socket stops being read


class ConnectionFailed(Exception):
    """The connection could not be opened or subscribed (retry with backoff)."""


@dataclass(frozen=True, slots=True)
class StreamRef:
    name: str  # btcusdc@kline_1h (the Binance stream name)
    sid: str  # BTCUSDC@1h (stream id: spool, logs, ordering key)
    interval: str


@dataclass
class ConnCounters:
    frames: int = 0
    closed_klines: int = 0
    malformed: int = 0


class Connection:
    def __init__(
        self,
        conn_id: str,
        ws_url: str,
        streams: list[StreamRef],
        on_closed: Callable[[str, Kline], Awaitable[None]],
        clock: ServerClock,
        *,
        stall_grace_ms: int,
        max_params: int = 200,
        frames_per_s: float = 4.0,
        open_timeout_s: float = 10.0,
        counters: ConnCounters | None = None,
        market: Market = Market.SPOT,
        keep_leftovers: Callable[[list[tuple[str, Kline]]], None] | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.market = market
        # USD-M klines live on the `/market` route (binance-futures-api.md §1)
        self.url = ws_url.rstrip("/") + spec(market).ws_route + "/stream"
        self.streams = streams
        self._by_sid = {s.sid: s for s in streams}
        self.on_closed = on_closed
        # closed klines read but not handed to `on_closed` when the connection is closed
        self.keep_leftovers = keep_leftovers
        self._handing: tuple[str, Kline] | None = None  # inside `on_closed` right now
        self.clock = clock
        self.stall_grace_ms = stall_grace_ms
        self.max_params = max_params
        self.frames_per_s = frames_per_s
        self.open_timeout_s = open_timeout_s
        self.counters = counters if counters is not None else ConnCounters()
        self.ws: WsClient | None = None
        self._slow: asyncio.Queue[bytes | CloseInfo] = asyncio.Queue()
        self.read_task: asyncio.Task[None] | None = None
        self.opened_at = 0  # server ms
        self.shutdown_notice = False
        self.tracker: StallTracker | None = None
        self.frames_received = 0
        self._pending: dict[int, asyncio.Future[ControlReply]] = {}
        self._closing = False
        self._next_id = 0
        self._last_frame_at = 0.0  # loop time of the last control frame sent (pacing)
        self._control = asyncio.Lock()

    async def open(self, first_id: int = 1) -> None:
        """Connect, start reading, subscribe every stream and wait for the acks."""
        self.ws = WsClient(
            self._on_frame, self._slow.put_nowait, can_read=lambda: self._slow.qsize() < MAX_QUEUED
        )
        try:
            await self.ws.connect(self.url, self.open_timeout_s)  # Blocked: not retried
        except WsOpenFailed as exc:
            raise ConnectionFailed(str(exc)) from exc
        now = self.clock.now_ms()
        self.opened_at = now
        self.tracker = StallTracker(
            ((s.sid, s.interval) for s in self.streams), now, self.stall_grace_ms
        )
        self.read_task = asyncio.create_task(self._read(), name=f"ws-read-{self.conn_id}")
        self._by_sid = {s.sid: s for s in self.streams}  # what this connection subscribes
        frames = subscribe_frames([s.name for s in self.streams], first_id, self.max_params)
        self._next_id = first_id + len(frames)
        loop = asyncio.get_running_loop()
        start = loop.time()
        self._last_frame_at = start + len(frames) / self.frames_per_s
        try:
            for (frame_id, frame), offset in zip(
                frames, send_offsets(len(frames), self.frames_per_s), strict=True
            ):
                await asyncio.sleep(max(0.0, start + offset - loop.time()))
                fut: asyncio.Future[ControlReply] = loop.create_future()
                self._pending[frame_id] = fut
                await self.ws.send(frame.decode())
            for frame_id, _ in frames:
                reply = await asyncio.wait_for(
                    asyncio.shield(self._pending[frame_id]), self.open_timeout_s
                )
                if reply.error_code is not None:
                    raise ConnectionFailed(
                        f"SUBSCRIBE {frame_id} refused: {reply.error_code} {reply.error_msg}"
                    )
        except (WsClosed, TimeoutError, OSError, asyncio.CancelledError) as exc:
            await self.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ConnectionFailed(f"subscribe on {self.url}: {exc!r}") from exc
        except ConnectionFailed:
            await self.close()
            raise
        finally:
            self._pending.clear()

    def _on_frame(self, frame: bytes) -> None:
        """Every frame, synchronously from the client's read: the hot path."""
        self.counters.frames += 1
        self.frames_received += 1  # this connection's: stall.py's sign of life
        try:  # a forming kline is recognised without parsing: only its event time matters
            forming_at = forming_event_time(frame)
        except InvalidData:
            forming_at = None  # the parser says what is wrong with it
        if forming_at is not None:
            self.clock.observe(forming_at)
        else:
            self._slow.put_nowait(frame)

    async def _read(self) -> None:
        """The frames that are not forming klines, in order, until the connection ends."""
        try:
            while not isinstance(item := await self._slow.get(), CloseInfo):
                await self._handle(item)
            if not self._closing and not item.by_us and item.code not in (1000, 1001):
                log_event(log, "WARNING", "ws connection closed by peer", conn=self.conn_id,
                          code=item.code, reason=item.reason)  # fmt: skip
        except Exception:
            log.exception("bug: ws reader failed", extra={"fields": {"conn": self.conn_id}})
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(WsClosed("connection closed"))
                    fut.exception()  # mark retrieved

    async def _handle(self, frame: bytes) -> None:
        closed = self._take(frame)
        if closed is not None:
            self._handing = closed  # (if the close cancels us in there, it was not taken)
            await self.on_closed(*closed)
            self._handing = None

    def _take(self, frame: bytes) -> tuple[str, Kline] | None:
        """What a frame does to this connection (clock, stall tracker, control replies); the
        closed kline it carries for one of our streams, if any."""
        try:
            msg = parse_ws_frame(frame, self.market)
        except InvalidData as exc:
            self.counters.malformed += 1
            log_event(log, "WARNING", "malformed ws frame", conn=self.conn_id, error=str(exc)[:300])
            return None
        if isinstance(msg, KlineEvent):
            self.clock.observe(msg.event_time)
            if not msg.closed:
                return None
            k = msg.kline
            sid = stream_key(self.market, k.symbol, k.interval)
            if sid not in self._by_sid:
                return None
            self.counters.closed_klines += 1
            if self.tracker is not None:
                self.tracker.on_closed(sid, k.open_time, self.clock.now_ms())
            return sid, k
        elif isinstance(msg, ControlReply):
            fut = self._pending.get(msg.id) if isinstance(msg.id, int) else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, ServerShutdown):
            self.shutdown_notice = True
            log_event(log, "WARNING", "serverShutdown received", conn=self.conn_id)
        return None

    async def sync(self) -> None:
        """Subscribe what the slot gained, unsubscribe what it lost, while this connection was
        opening (a listing or a retirement racing a reconnect)."""
        current = {r.sid: r for r in self.streams}
        gained = [r for sid, r in current.items() if sid not in self._by_sid]
        lost = [r for sid, r in self._by_sid.items() if sid not in current]
        if gained:
            await self.change("SUBSCRIBE", gained)
        if lost:
            await self.change("UNSUBSCRIBE", lost)

    async def change(self, method: str, refs: list[StreamRef]) -> bool:
        """SUBSCRIBE or UNSUBSCRIBE `refs` on this live connection (a listing, a retirement):
        no reconnect; frames paced under the market's messages-per-second limit. The stall
        tracker learns at once. False if the server did not confirm (the caller's slot list
        is already updated, so a later reconnect subscribes the right set)."""
        now = self.clock.now_ms()
        for ref in refs:
            if method == "SUBSCRIBE":
                self._by_sid[ref.sid] = ref
                if self.tracker is not None:
                    self.tracker.add(ref.sid, ref.interval, now)
            else:
                self._by_sid.pop(ref.sid, None)
                if self.tracker is not None:
                    self.tracker.remove(ref.sid)
        if self.ws is None or not self.alive:
            return False
        loop = asyncio.get_running_loop()
        async with self._control:
            frames = subscribe_frames(
                [r.name for r in refs], self._next_id, self.max_params, method
            )
            self._next_id += len(frames)
            waits = []
            try:
                for frame_id, frame in frames:
                    self._last_frame_at = max(
                        loop.time(), self._last_frame_at + 1 / self.frames_per_s
                    )
                    await asyncio.sleep(max(0.0, self._last_frame_at - loop.time()))
                    fut: asyncio.Future[ControlReply] = loop.create_future()
                    self._pending[frame_id] = fut
                    waits.append(fut)
                    await self.ws.send(frame.decode())
                replies = [
                    await asyncio.wait_for(asyncio.shield(f), self.open_timeout_s) for f in waits
                ]
            except (WsClosed, TimeoutError, OSError) as exc:
                log_event(log, "WARNING", f"{method} not confirmed", conn=self.conn_id,
                          error=repr(exc)[:200])  # fmt: skip
                return False
            finally:
                for frame_id, _ in frames:
                    self._pending.pop(frame_id, None)
        refused = [r for r in replies if r.error_code is not None]
        for r in refused:
            log_event(log, "WARNING", f"{method} refused", conn=self.conn_id, code=r.error_code,
                      msg=r.error_msg)  # fmt: skip
        return not refused

    @property
    def alive(self) -> bool:
        return self.read_task is not None and not self.read_task.done()

    def age_ms(self) -> int:
        return self.clock.now_ms() - self.opened_at

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            if self.ws is not None:
                await self.ws.close(timeout_s=2)
        finally:  # also when a shutdown cancels us while the peer is slow to echo the close
            if self.read_task is not None:
                self.read_task.cancel()
                # Cancelled, the reader can no longer take a frame or hand a kline over.
                self._keep_leftovers()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.read_task

    def _keep_leftovers(self) -> None:
        """The closed klines this connection read but did not hand over (its reader waited
        behind a slow ingest when the close cancelled it): to `keep_leftovers` at once, so that
        a rotation, a reconnect or a shutdown leaves no hole for REST repair to fill."""
        if self.keep_leftovers is None:
            return
        items = [self._handing] if self._handing is not None else []
        self._handing = None
        while not self._slow.empty():
            item = self._slow.get_nowait()
            if isinstance(item, bytes) and (closed := self._take(item)) is not None:
                items.append(closed)
        if items:
            log_event(log, "INFO", "closed klines kept from a closing connection",
                      conn=self.conn_id, klines=len(items))  # fmt: skip
            self.keep_leftovers(items)
