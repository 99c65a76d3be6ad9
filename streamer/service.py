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
import sys
import time
from functools import partial
from typing import Any

from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.backends.sink import Sink, make_sink
from klinelake.binance.rest import BinanceRest, Blocked, NoAnswer
from klinelake.config import EXIT_BAD_CONFIG, EXIT_BLOCKED
from klinelake.core.exchange_info import SymbolInfo
from klinelake.core.publish import UnlistedSymbols, check_listed
from klinelake.core.row import Kline
from klinelake.logs import log_event
from streamer.backoff import Backoff, TokenBucket
from streamer.clock import ServerClock
from streamer.config import Settings, StreamSpec
from streamer.connection import ConnCounters, Connection, StreamRef
from streamer.flush_window import FlushWindow
from streamer.health import HealthState, sd_notify, serve_http
from streamer.health_report import StreamsSection, health_loop, snapshot, write_health
from streamer.listing import plan_changes
from streamer.listing_watch import initial_streams, listing_loop, retire, symbol_set
from streamer.sender import StreamSender
from streamer.shards import shard
from streamer.slots import start_slot
from streamer.spool import Spool, SpoolUnavailable
from streamer.stop_signals import stop_on_signals

log = logging.getLogger("streamer")

EXIT_STATE_DIR = 2  # the state directory cannot hold the spool (read-only, full, missing)
EXIT_UNSENT = 1  # stopped with klines neither spooled nor published
INGEST_QUEUE = 10_000  # closed klines between the readers and the spool (~10 MB at most)


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
        self.conn_seq = 0
        self.exit_code = 0
        self.active: dict[str, list[StreamSpec]] = {}  # symbol -> its streams, while streamed
        self.ended: dict[str, dict[str, Any]] = {}  # sid -> how and when it ended (health)
        self.listing: dict[str, SymbolInfo] = {}
        self.sender_tasks: list[asyncio.Task[None]] = []
        self.slot_tasks: list[asyncio.Task[None]] = []
        self._sink_obj: Sink | None = None
        self.started_at = 0  # server ms at start: listings after it are new (history repaired)
        self._rest_obj: Any = None
        self.state: HealthState = "starting"
        self.reason: str | None = None
        self.health_error: int | None = None
        self.health_streams = StreamsSection()  # the file's per-stream part, rebuilt less often
        self.rest: Any | None = None
        self._stop_signals = contextlib.ExitStack()

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> int:
        with self._stop_signals:  # the stop handlers `_run` installs go, however it ends
            return await self._run()

    async def _run(self) -> int:
        s = self.settings
        try:
            s.state_dir.mkdir(parents=True, exist_ok=True)
            self.spool.open()
            self.spool.defer_acks(asyncio.get_running_loop().call_soon)
        except (SpoolUnavailable, OSError) as exc:
            # Refuse to start rather than run without a durable spool: nothing is received
            # yet, so nothing is lost, and systemd's restarts make the line hard to miss.
            line = f"state directory {s.state_dir} unusable: {exc}"
            log_event(log, "CRITICAL", line, state_dir=str(s.state_dir))
            print(f"streamer: {line}", file=sys.stderr, flush=True)
            return EXIT_STATE_DIR
        sink = self._sink
        if sink is None:
            sink = make_sink(s.topic, s.lake_uri, publish_timeout_s=s.publish_timeout_s)
        rest = self._rest if self._rest is not None else BinanceRest(s.rest_url, market=s.market)
        # The endpoint answers from the start, so a streamer that cannot start says why; the
        # file is first written when the checks fail (`blocked`) or pass (the health loop).
        server = await serve_http(s.health_port, partial(snapshot, self)) if s.health_port else None
        self.rest = rest
        await self.sync_clock(rest)
        await self._check_symbols(rest)
        if self.stopping.is_set():  # refused: configuration, not luck (exit code and one line)
            if server is not None:
                server.close()
            if self._rest is None:
                await rest.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sink.close(), 5)
            self.spool.close()
            return self.exit_code
        self.state = "running"
        loop = asyncio.get_running_loop()
        # (not loop.add_signal_handler: under load it loses the signal, see stop_signals)
        self._stop_signals.enter_context(stop_on_signals(loop, self.request_stop))
        self._sink_obj, self._rest_obj = sink, rest
        self.started_at = self.clock.now_ms()
        streams = await initial_streams(self, rest)
        refs = [StreamRef(spec.ws_name, spec.sid, spec.interval) for spec in streams]
        self.slots = shard(refs, s.streams_per_connection)
        self.slot_reconnects = [0] * len(self.slots)
        self.slot_conns = [None] * len(self.slots)
        for spec in streams:
            self.new_sender(spec)
            self.active.setdefault(spec.symbol, []).append(spec)
        log_event(
            log,
            "INFO",
            "streamer starting",
            streams=len(streams),
            connections=len(self.slots),
            sink=sink.description,
            state_dir=str(s.state_dir),
            clock_speed=s.clock_speed,
        )
        # The spool is re-sent first, in order; then everything closed since is repaired.
        for sender in self.senders.values():
            sender.request_repair()
        # Streams that ended while we were down (a delivery): repaired to their end, retired.
        _, gone = plan_changes(symbol_set(self), self.listing, self.active, self.clock.now_ms())
        for retirement in gone if self.listing else []:
            await retire(self, retirement)
        for snd in self.senders.values():
            self.start_sender(snd)
        flusher = asyncio.create_task(self._flush_loop(), name="spool-flush")
        for i in range(len(self.slots)):
            start_slot(self, i)
        sd_notify("READY=1")
        health = asyncio.create_task(health_loop(self, rest), name="health")
        listing = asyncio.create_task(listing_loop(self, rest), name="listing")
        for task in (flusher, health, listing):
            task.add_done_callback(self.task_done)
        await self.stopping.wait()
        sender_tasks, slot_tasks = self.sender_tasks, self.slot_tasks
        listing.cancel()
        await asyncio.gather(listing, return_exceptions=True)

        # --- drain ---
        sd_notify("STOPPING=1")
        if self.reason is None:  # a blocked state stays visible to the end
            self.state = "stopping"
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
        write_health(self)
        if server is not None:
            server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sink.close(), 5)
        if self._rest is None:
            await rest.close()
        depth = sum(self.spool.depth().values())
        self.spool.close()  # (writes what it holds, if the disk allows it by now)
        self._report_unsent()
        self._stop_signals.close()
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

    def _report_unsent(self) -> None:
        """Klines the disk refused and the sink did not take before the drain ended are
        lost with this process: say which, and exit non-zero."""
        unsent = self.spool.held()
        if not unsent:
            return
        total = sum(n for n, _, _ in unsent.values())
        ranges = {sid: [first, last] for sid, (_, first, last) in sorted(unsent.items())}
        line = (
            f"stopped with {total} closed klines neither spooled nor published "
            f"({self.spool.state}): backfill these open_time ranges: {ranges}"
        )
        log_event(log, "CRITICAL", line, unsent=total, ranges=ranges)
        print(f"streamer: {line}", file=sys.stderr, flush=True)
        self.exit_code = EXIT_UNSENT

    def task_done(self, task: asyncio.Task[Any]) -> None:
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

    def new_sender(self, spec: StreamSpec) -> StreamSender:
        assert self._sink_obj is not None
        snd = StreamSender(
            symbol=spec.symbol,
            interval=spec.interval,
            spool=self.spool,
            sink=self._sink_obj,
            rest=self._rest_obj,
            server_now=self.clock.now_ms,
            empty=self.empty,
            market=spec.market,
            window=FlushWindow.of_seconds(self.settings.flush_window_s),
            real_seconds=self.clock.real_seconds,
        )
        self.senders[spec.sid] = snd
        return snd

    def start_sender(self, snd: StreamSender) -> None:
        task = asyncio.create_task(snd.run(self.draining), name=f"send-{snd.stream}")
        task.add_done_callback(self.task_done)
        self.sender_tasks.append(task)

    def fatal(self, line: str, exit_code: int) -> None:
        """A configuration error (Binance refuses us, or a symbol it does not list): one log
        line, `blocked` in the health, stop and exit non-zero; restarting cannot help."""
        if self.reason is not None:
            return
        self.state, self.reason, self.exit_code = "blocked", line, exit_code
        log_event(log, "CRITICAL", line, exit_code=exit_code)
        write_health(self)
        self.request_stop()

    async def _check_symbols(self, rest: Any) -> None:
        """Refuse symbols Binance does not list: their streams would be silent forever, which
        looks like a quiet symbol, not an error. An exchangeInfo that keeps failing, or a 451/403,
        means nothing can be collected: a configuration error, not something to wait out."""
        symbols = sorted({spec.symbol for spec in self.settings.streams})
        deadline = time.monotonic() + self.settings.exchange_info_deadline_s
        backoff = Backoff(0.5, 10.0)
        while True:
            left = deadline - time.monotonic()
            try:
                await asyncio.wait_for(
                    check_listed(rest, symbols, self.settings.market), max(0.1, min(10, left))
                )
                break
            except UnlistedSymbols as exc:
                return self.fatal(
                    f"Binance does not list these symbols (-1121): {exc}", EXIT_BAD_CONFIG
                )
            except Blocked as exc:
                return self.fatal(str(exc), EXIT_BLOCKED)
            except Exception as exc:
                self.state, last = "blocked", repr(exc)[:200]
                write_health(self)
                delay = backoff.next_delay()
                if time.monotonic() + delay >= deadline:
                    within = f"{self.settings.exchange_info_deadline_s:g} s"
                    line = str(NoAnswer(self.settings.rest_url, within, last))
                    return self.fatal(line, EXIT_BLOCKED)
                log_event(log, "WARNING", "exchangeInfo unavailable, retrying",
                          error=last, retry_in_s=round(delay, 2))  # fmt: skip
                await asyncio.sleep(delay)
        self.state = "starting"

    async def sync_clock(self, rest: Any, timeout_s: float = 10.0) -> None:
        try:
            self.clock.sync(await asyncio.wait_for(rest.server_time(), timeout_s))
        except Exception as exc:  # the clock then follows event times
            log_event(log, "WARNING", "server time unavailable", error=repr(exc)[:300])

    # --- ingest -----------------------------------------------------------------------------

    async def on_closed(self, sid: str, kline: Kline) -> None:
        await self.queue.put((sid, kline))

    def keep_closed(self, items: list[tuple[str, Kline]]) -> None:
        """Closed klines a closing connection read but could not queue: into the spool now
        (past the bounded queue: a close must not wait on it, nor lose them)."""
        self._flush(list(items), limit=None)  # and all that is queued: no hole behind them

    async def _flush_loop(self) -> None:
        # (the spool never raises for its disk: what it cannot write, it holds and serves)
        while True:
            self._flush([await self.queue.get()])

    async def _flush_pending(self) -> None:
        self._flush([])

    def _flush(self, items: list[tuple[str, Kline]], limit: int | None = INGEST_QUEUE) -> None:
        while limit is None or len(items) < limit:
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
