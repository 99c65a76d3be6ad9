"""The supervisor: connections per shard, one ordered sender per stream, the spool, health.

    WS connections ──closed klines──> ingest queue (bounded) ──one transaction per drain──> spool
    spool ──> StreamSender per stream (gap repair over REST, then the sink, in order) ──> ack

SIGTERM/SIGINT: stop reading, spool what was received, let the senders drain within
`drain_timeout_s`, exit 0; whatever was not sent stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
import time
from typing import Any

from klinelake.binance_rest import BinanceRest, UnknownSymbol
from klinelake.empty_ranges import EmptyRanges
from klinelake.logs import log_event
from klinelake.markets import Market
from klinelake.row import Kline
from klinelake.sink import Sink, make_sink
from streamer.backoff import Backoff, TokenBucket
from streamer.clock import ServerClock
from streamer.config import Settings
from streamer.connection import ConnCounters, Connection, ConnectionFailed, StreamRef
from streamer.health import sd_notify, serve_http, write_atomic
from streamer.sender import StreamSender
from streamer.shards import shard
from streamer.spool import Spool

log = logging.getLogger("streamer")

INGEST_QUEUE = 10_000  # closed klines between the readers and the spool (~10 MB at most)
CHECK_EVERY_S = 0.2


class Service:
    def __init__(
        self, settings: Settings, *, sink: Sink | None = None, rest: Any | None = None
    ) -> None:
        self.settings = settings
        self._sink = sink
        self._rest = rest
        self.clock = ServerClock(settings.clock_speed)
        self.spool = Spool(settings.state_dir / "spool.sqlite3")
        self.empty = EmptyRanges(settings.state_dir)
        self.stopping = asyncio.Event()
        self.draining = asyncio.Event()
        self.queue: asyncio.Queue[tuple[str, Kline]] = asyncio.Queue(INGEST_QUEUE)
        self.bucket = TokenBucket(300, 300.0)
        self.senders: dict[str, StreamSender] = {}
        self.slots: list[list[StreamRef]] = []
        self.slot_reconnects: list[int] = []
        self.slot_conns: list[Connection | None] = []
        self.counters = ConnCounters()
        self._conn_seq = 0
        self.exit_code = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> int:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self.spool.open()
        sink = self._sink if self._sink is not None else self._make_sink()
        rest = self._rest if self._rest is not None else BinanceRest(s.rest_url, market=s.market)
        await self._sync_clock(rest)
        refused = await self._check_symbols(rest)
        if refused is not None:
            log_event(log, "CRITICAL", refused)
            print(f"streamer: {refused}", file=sys.stderr, flush=True)
            if self._rest is None:
                await rest.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sink.close(), 5)
            self.spool.close()
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        refs = [StreamRef(spec.ws_name, spec.sid, spec.interval) for spec in s.streams]
        self.slots = shard(refs, s.streams_per_connection)
        self.slot_reconnects = [0] * len(self.slots)
        self.slot_conns = [None] * len(self.slots)
        for spec in s.streams:
            self.senders[spec.sid] = StreamSender(
                symbol=spec.symbol,
                interval=spec.interval,
                spool=self.spool,
                sink=sink,
                rest=rest,
                server_now=self.clock.now_ms,
                empty=self.empty,
                market=spec.market,
            )
        log_event(
            log,
            "INFO",
            "streamer starting",
            streams=len(s.streams),
            connections=len(self.slots),
            sink=sink.description,
            state_dir=str(s.state_dir),
            clock_speed=s.clock_speed,
        )
        # The spool is re-sent first, in order; then everything closed since is repaired.
        for sender in self.senders.values():
            sender.request_repair()
        sender_tasks = [
            asyncio.create_task(snd.run(self.draining), name=f"send-{sid}")
            for sid, snd in self.senders.items()
        ]
        flusher = asyncio.create_task(self._flush_loop(), name="spool-flush")
        slot_tasks = [
            asyncio.create_task(self._run_slot(i), name=f"slot-{i}") for i in range(len(self.slots))
        ]
        server = await serve_http(s.health_port, self.snapshot) if s.health_port else None
        sd_notify("READY=1")
        health = asyncio.create_task(self._health_loop(rest), name="health")
        for task in (*sender_tasks, flusher, *slot_tasks, health):
            task.add_done_callback(self._task_done)
        await self.stopping.wait()

        # --- drain ---
        sd_notify("STOPPING=1")
        t0 = time.monotonic()
        log_event(log, "INFO", "stopping: closing connections, draining sends")
        for t in slot_tasks:
            t.cancel()
        await asyncio.gather(*slot_tasks, return_exceptions=True)
        await self._flush_pending()
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        self.draining.set()
        for snd in self.senders.values():
            snd.wake.set()
        _, pending = (
            await asyncio.wait(sender_tasks, timeout=s.drain_timeout_s)
            if sender_tasks
            else (set(), set())
        )
        for t in pending:
            t.cancel()
        await asyncio.gather(*sender_tasks, return_exceptions=True)
        health.cancel()
        await asyncio.gather(health, return_exceptions=True)
        self._write_health()
        if server is not None:
            server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sink.close(), 5)
        if self._rest is None:
            await rest.close()
        depth = sum(self.spool.depth().values())
        self.spool.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        log_event(
            log,
            "INFO",
            "streamer stopped",
            drain_s=round(time.monotonic() - t0, 3),
            left_in_spool=depth,
            unsent_streams=len(pending),
            exit_code=self.exit_code,
        )
        return self.exit_code

    def _make_sink(self) -> Sink:
        s = self.settings
        if s.topic:
            from klinelake.pubsub_sink import PubsubSink  # the cloud client only when asked for

            return PubsubSink(s.topic, publish_timeout_s=s.publish_timeout_s)
        return make_sink(None, s.lake_uri)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A supervised task ended on its own: a bug. Never run on silently half-dead: log it,
        stop (draining what can be drained) and exit non-zero so systemd restarts us."""
        if task.cancelled() or self.stopping.is_set() or self.draining.is_set():
            return
        exc = task.exception()
        log_event(
            log, "CRITICAL", "a streamer task ended unexpectedly; stopping", task=task.get_name(),
            error=repr(exc)[:500] if exc else None,
        )  # fmt: skip
        self.exit_code = 1
        self.request_stop()

    def request_stop(self) -> None:
        self.stopping.set()

    async def _check_symbols(self, rest: Any) -> str | None:
        """Refuse symbols Binance does not list: their streams would be silent forever, which
        looks like a quiet symbol, not an error. Binance unreachable: start anyway (the streams
        and gap repair retry on their own)."""
        symbols = sorted({spec.symbol for spec in self.settings.streams})
        for i in range(0, len(symbols), 100):  # keep the `symbols=[...]` query short
            chunk = symbols[i : i + 100]
            try:
                info = await asyncio.wait_for(rest.exchange_info(chunk), 30)
                # futures exchangeInfo takes no `symbols` filter: it lists every symbol
                listed = {e.get("symbol") for e in info.get("symbols", []) if isinstance(e, dict)}
                if self.settings.market is not Market.SPOT and not listed.issuperset(chunk):
                    raise UnknownSymbol(400, -1121, "Invalid symbol.")
            except UnknownSymbol:
                return f"Binance does not list one of these symbols (-1121): {', '.join(chunk)}"
            except Exception as exc:
                log_event(log, "WARNING", "exchangeInfo unavailable: symbols not checked",
                          error=repr(exc)[:300])  # fmt: skip
                return None
        return None

    async def _sync_clock(self, rest: Any) -> None:
        try:
            self.clock.sync(await asyncio.wait_for(rest.server_time(), 10))
        except Exception as exc:  # the clock then follows event times
            log_event(log, "WARNING", "server time unavailable", error=repr(exc)[:300])

    # --- ingest -----------------------------------------------------------------------------

    async def on_closed(self, sid: str, kline: Kline) -> None:
        await self.queue.put((sid, kline))

    async def _flush_loop(self) -> None:
        backoff = Backoff(0.2, 10.0)
        while True:
            items = [await self.queue.get()]
            while True:
                try:
                    self._flush(items)
                    backoff.reset()
                    break
                except sqlite3.Error as exc:  # keep the items (bounded) and retry
                    delay = backoff.next_delay()
                    log_event(
                        log, "ERROR", "cannot write the spool, retrying", error=repr(exc)[:300],
                        pending=len(items), retry_in_s=round(delay, 2),
                    )  # fmt: skip
                    await asyncio.sleep(delay)

    async def _flush_pending(self) -> None:
        self._flush([])

    def _flush(self, items: list[tuple[str, Kline]]) -> None:
        while len(items) < INGEST_QUEUE:  # (on a retry, `items` already holds them)
            try:
                items.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        if not items:
            return
        for sid in self.spool.add(items):
            snd = self.senders.get(sid)
            if snd is not None:
                snd.wake.set()

    # --- connections ------------------------------------------------------------------------

    async def _open(self, idx: int, backoff: Backoff | None) -> Connection | None:
        """Open and subscribe a connection for slot `idx`; with `backoff`, retry until it works
        (or we stop); without, try once (a replacement: the old connection still serves)."""
        s = self.settings
        while not self.stopping.is_set():
            wait = self.bucket.wait_time()
            if wait > 0:
                log_event(log, "WARNING", "connection attempts throttled", wait_s=round(wait, 2))
                await asyncio.sleep(wait)
                continue
            self.bucket.try_take()
            self._conn_seq += 1
            conn = Connection(
                f"{idx}.{self._conn_seq}",
                s.ws_url,
                self.slots[idx],
                self.on_closed,
                self.clock,
                stall_grace_ms=s.stall_grace_ms,
                max_params=s.subscribe_params,
                open_timeout_s=s.subscribe_timeout_s,
                counters=self.counters,
                market=s.market,
                frames_per_s=s.subscribe_frames_per_s,
            )
            try:
                await conn.open(first_id=self._conn_seq * 10_000)
            except ConnectionFailed as exc:
                log_event(log, "WARNING", "connection failed", conn=conn.conn_id, error=str(exc))
                if backoff is None:
                    return None
                await asyncio.sleep(backoff.next_delay())
                continue
            log_event(log, "INFO", "connected", conn=conn.conn_id, streams=len(self.slots[idx]))
            return conn
        return None

    def _after_connect(self, idx: int) -> None:
        for ref in self.slots[idx]:
            self.senders[ref.sid].request_repair()

    async def _run_slot(self, idx: int) -> None:
        """Keep one live connection for slot `idx`: reconnect with backoff when it ends or
        stalls; replace it (new one first, then close the old) on serverShutdown or with age."""
        s = self.settings
        backoff = Backoff(0.5, 30.0)
        conn: Connection | None = None
        replacing: asyncio.Task[Connection | None] | None = None
        retry_replacement_at = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not self.stopping.is_set():
                if conn is None or not conn.alive:
                    if conn is not None:
                        await conn.close()
                        self.slot_reconnects[idx] += 1
                    new: Connection | None = None
                    if replacing is not None:  # a replacement is on its way: take it
                        new = await replacing
                        replacing = None
                    if new is None:
                        if conn is not None:
                            await asyncio.sleep(backoff.next_delay())
                        new = await self._open(idx, backoff)
                    conn = new
                    self.slot_conns[idx] = conn
                    if conn is None:
                        return
                    self._after_connect(idx)
                    continue
                if backoff.attempts and conn.counters.closed_klines:
                    backoff.reset()
                now = self.clock.now_ms()
                tracker = conn.tracker
                if tracker is not None and tracker.stalled(now):
                    log_event(
                        log, "WARNING", "connection stalled: closed klines overdue, reconnecting",
                        conn=conn.conn_id, overdue=tracker.overdue(now)[:5],
                    )  # fmt: skip
                    await conn.close()
                    continue
                if tracker is not None:
                    for sid in tracker.overdue(now):
                        log_event(log, "WARNING", "stream quiet", conn=conn.conn_id, stream=sid)
                        tracker.excuse(sid, now)
                rollover = conn.shutdown_notice or conn.age_ms() >= s.max_conn_age_s * 1000
                if rollover and replacing is None and loop.time() >= retry_replacement_at:
                    reason = "serverShutdown" if conn.shutdown_notice else "connection age"
                    log_event(log, "INFO", "replacing connection", conn=conn.conn_id, reason=reason)
                    replacing = asyncio.create_task(self._open(idx, None))
                if replacing is not None and replacing.done():
                    new = replacing.result()
                    replacing = None
                    if new is None:
                        retry_replacement_at = loop.time() + backoff.next_delay()
                    else:
                        old, conn = conn, new
                        self.slot_conns[idx] = conn
                        await old.close()  # after the new one is subscribed: no gap
                        self.slot_reconnects[idx] += 1
                        self._after_connect(idx)
                        continue
                assert conn.read_task is not None
                waits: set[asyncio.Future[Any]] = {conn.read_task}
                if replacing is not None:
                    waits.add(replacing)
                await asyncio.wait(waits, timeout=CHECK_EVERY_S)
        finally:
            if replacing is not None:
                replacing.cancel()
                with contextlib.suppress(BaseException):
                    extra = await replacing
                    if extra is not None:
                        await extra.close()
            if conn is not None:
                await conn.close()

    # --- health -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        depth = self.spool.depth() if self.spool._db is not None else {}
        streams: dict[str, Any] = {}
        for idx, refs in enumerate(self.slots):
            for ref in refs:
                snd = self.senders[ref.sid]
                streams[ref.sid] = {
                    "last_closed_open_time": self.spool.last_published(ref.sid),
                    "lag_ms": snd.lag_ms(),
                    "reconnects": self.slot_reconnects[idx],
                    "spool_depth": depth.get(ref.sid, 0),
                    "published_rows": snd.stats.published_rows,
                    "repaired_rows": snd.stats.repaired_rows,
                    "send_failures": snd.stats.send_failures,
                }
        return {
            "time": int(time.time() * 1000),
            "server_time": self.clock.now_ms(),
            "connections": sum(1 for c in self.slot_conns if c is not None and c.alive),
            "reconnects": sum(self.slot_reconnects),
            "malformed_frames": self.counters.malformed,
            "closed_klines_received": self.counters.closed_klines,
            "spool_depth": sum(depth.values()),
            "streams": streams,
        }

    def _write_health(self) -> None:
        try:
            write_atomic(self.settings.state_dir / "health.json", _dumps(self.snapshot()))
        except OSError as exc:
            log_event(log, "ERROR", "cannot write health file", error=repr(exc))

    async def _health_loop(self, rest: Any) -> None:
        last_sync = time.monotonic()
        while True:
            self._write_health()
            sd_notify("WATCHDOG=1")
            if time.monotonic() - last_sync > 300:
                last_sync = time.monotonic()
                await self._sync_clock(rest)
            await asyncio.sleep(self.settings.health_interval_s)


def _dumps(obj: Any) -> bytes:
    import orjson

    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)
