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
import sys
import time
from typing import Any

from klinelake.binance_rest import BinanceRest, Blocked, NoAnswer
from klinelake.config import EXIT_BAD_CONFIG, EXIT_BLOCKED
from klinelake.empty_ranges import EmptyRanges
from klinelake.exchange_info import SymbolInfo, parse_exchange_info
from klinelake.intervals import align_down, next_open_time
from klinelake.logs import log_event
from klinelake.publish import UnlistedSymbols, check_listed, has_klines, read_listing
from klinelake.row import Kline
from klinelake.selector import SymbolSet
from klinelake.sink import Sink, make_sink
from streamer.backoff import Backoff, TokenBucket
from streamer.clock import ServerClock
from streamer.config import Settings, StreamSpec
from streamer.connection import ConnCounters, Connection, ConnectionFailed, StreamRef
from streamer.health import HealthState, sd_notify, serve_http, write_atomic
from streamer.listing import Retirement, next_delivery, plan_changes
from streamer.sender import StreamSender
from streamer.shards import shard
from streamer.slot_policy import Act, Replacement, SlotView, decide
from streamer.spool import Spool, SpoolUnavailable
from streamer.stall import RestVerdict

log = logging.getLogger("streamer")

EXIT_STATE_DIR = 2  # the state directory cannot hold the spool (read-only, full, missing)
EXIT_UNSENT = 1  # stopped with klines neither spooled nor published
INGEST_QUEUE = 10_000  # closed klines between the readers and the spool (~10 MB at most)
CHECK_EVERY_S = 0.2
REST_RETRY_S = 5.0  # pause before asking REST again about a silent stream after a failure


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
        self._health_error: int | None = None
        self.rest: Any | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> int:
        s = self.settings
        try:
            s.state_dir.mkdir(parents=True, exist_ok=True)
            self.spool.open()
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
        server = await serve_http(s.health_port, self.snapshot) if s.health_port else None
        self.rest = rest
        await self._sync_clock(rest)
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
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        self._sink_obj, self._rest_obj = sink, rest
        self.started_at = self.clock.now_ms()
        streams = await self._initial_streams(rest)
        refs = [StreamRef(spec.ws_name, spec.sid, spec.interval) for spec in streams]
        self.slots = shard(refs, s.streams_per_connection)
        self.slot_reconnects = [0] * len(self.slots)
        self.slot_conns = [None] * len(self.slots)
        for spec in streams:
            self._new_sender(spec)
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
        _, gone = plan_changes(self._symbol_set(), self.listing, self.active, self.clock.now_ms())
        for retirement in gone if self.listing else []:
            await self._retire(retirement)
        for snd in self.senders.values():
            self._start_sender(snd)
        flusher = asyncio.create_task(self._flush_loop(), name="spool-flush")
        for i in range(len(self.slots)):
            self._start_slot(i)
        sd_notify("READY=1")
        health = asyncio.create_task(self._health_loop(rest), name="health")
        listing = asyncio.create_task(self._listing_loop(rest), name="listing")
        for task in (flusher, health, listing):
            task.add_done_callback(self._task_done)
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
        self._write_health()
        if server is not None:
            server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sink.close(), 5)
        if self._rest is None:
            await rest.close()
        depth = sum(self.spool.depth().values())
        self.spool.close()  # (writes what it holds, if the disk allows it by now)
        self._report_unsent()
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

    # --- the market: listings, delistings, deliveries (streamer/listing.py) -------------------

    def _symbol_set(self) -> SymbolSet:
        s = self.settings
        if s.symbol_set is not None:
            return s.symbol_set
        return SymbolSet(s.market, tuple(dict.fromkeys(spec.symbol for spec in s.streams)))

    async def _read_listing(self, rest: Any) -> dict[str, SymbolInfo] | None:
        """exchangeInfo now (spot: only our symbols unless a selector needs them all; futures
        always lists every symbol at weight 1); None if Binance cannot be asked."""
        symbols = self._symbol_set()
        wanted = None if symbols.is_selector else sorted(set(symbols.symbols) | set(self.active))
        try:
            info = await asyncio.wait_for(read_listing(rest, wanted, self.settings.market), 60)
        except Exception as exc:
            log_event(log, "WARNING", "exchangeInfo unavailable", error=repr(exc)[:300])
            return None
        listing = parse_exchange_info(info, self.settings.market)
        self.listing = listing
        return listing

    async def _initial_streams(self, rest: Any) -> list[StreamSpec]:
        """The configured streams, or the selector's resolved against exchangeInfo (retried
        until Binance answers: a selector cannot be resolved without it)."""
        s = self.settings
        symbols = self._symbol_set()
        backoff = Backoff(1.0, 30.0)
        listing = await self._read_listing(rest)
        while listing is None and symbols.is_selector:
            delay = backoff.next_delay()
            log_event(log, "WARNING", "selector waits for exchangeInfo", retry_in_s=delay)
            await asyncio.sleep(delay)
            listing = await self._read_listing(rest)
        if not symbols.is_selector:
            return list(s.streams)
        chosen = symbols.resolve(self.listing)
        log_event(log, "INFO", "selector resolved", symbols=len(chosen), first=chosen[:20])
        return [StreamSpec(sym, iv, s.market) for sym in chosen for iv in s.intervals]

    def _new_sender(self, spec: StreamSpec) -> StreamSender:
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
        )
        self.senders[spec.sid] = snd
        return snd

    def _start_sender(self, snd: StreamSender) -> None:
        task = asyncio.create_task(snd.run(self.draining), name=f"send-{snd.stream}")
        task.add_done_callback(self._task_done)
        self.sender_tasks.append(task)

    def _start_slot(self, idx: int) -> None:
        task = asyncio.create_task(self._run_slot(idx), name=f"slot-{idx}")
        task.add_done_callback(self._task_done)
        self.slot_tasks.append(task)

    async def _listing_loop(self, rest: Any) -> None:
        """Re-read exchangeInfo every interval (and at the next delivery): add and retire."""
        s = self.settings
        while True:
            now = self.clock.now_ms()
            wait_s = s.exchange_info_interval_s
            due = next_delivery(self.listing, self.active, now)
            if due is not None:  # wake when the contract settles, not a period later
                wait_s = min(wait_s, max(0.05, (due - now) / 1000 / max(s.clock_speed, 1e-9)))
            await asyncio.sleep(wait_s)
            listing = await self._read_listing(rest)
            if listing is None:
                listing = self.listing  # deliveries are known in advance; apply them anyway
            if not listing:
                continue
            add, gone = plan_changes(self._symbol_set(), listing, self.active, self.clock.now_ms())
            for retirement in gone:
                await self._retire(retirement)
            if add:
                await self._add_symbols(add)
            self._log_ended()

    async def _retire(self, r: Retirement) -> None:
        """Unsubscribe the symbol's streams on their live connections (no reconnect), stop
        expecting their klines, repair them up to their end, and record the end."""
        specs = self.active.pop(r.symbol, [])
        sids = {spec.sid for spec in specs}
        for idx, refs in enumerate(self.slots):
            leaving = [ref for ref in refs if ref.sid in sids]
            if not leaving:
                continue
            refs[:] = [ref for ref in refs if ref.sid not in sids]
            conn = self.slot_conns[idx]
            if conn is not None:
                await conn.change("UNSUBSCRIBE", leaving)
        for spec in specs:
            self.senders[spec.sid].retire(r.end_ms)
            last = align_down(r.end_ms - 1, spec.interval)
            self.ended[spec.sid] = {
                "reason": r.reason, "end_ms": r.end_ms, "last_open_time": last, "logged": False,
                "final_repair": False,
            }  # fmt: skip
            log_event(
                log, "INFO", "stream retired", stream=spec.sid, reason=r.reason,
                end_ms=r.end_ms, last_open_time=last,
            )  # fmt: skip

    def _log_ended(self) -> None:
        """Once a retired stream's last kline has closed, repair it once more (a delisting
        mid-kline: that kline still closes), and once that is published log the real end."""
        now = self.clock.now_ms()
        for sid, end in self.ended.items():
            snd = self.senders[sid]
            if end["logged"] or now < next_open_time(end["last_open_time"], snd.interval):
                continue
            if not end.get("final_repair"):
                end["final_repair"] = True
                snd.request_repair()
                continue
            if not snd.idle.is_set() or snd.repair_target is not None:
                continue
            end["logged"] = True
            # What this streamer published last; if it published nothing (a backfill covered
            # the stream) the exchange's bound stands.
            published = self.spool.last_published(sid)
            end["published_upto"] = published
            if published is not None:
                end["last_open_time"] = published
            log_event(log, "INFO", "stream ended", stream=sid, reason=end["reason"],
                      last_open_time=end["last_open_time"])  # fmt: skip

    async def _add_symbols(self, symbols: list[str]) -> None:
        """New listings: subscribe on connections with room (no reconnect), else a new one."""
        s = self.settings
        for symbol in symbols:
            specs = [StreamSpec(symbol, iv, s.market) for iv in s.intervals or self._intervals()]
            self.active[symbol] = specs
            log_event(log, "INFO", "symbol listed: streaming", symbol=symbol, streams=len(specs))
            info = self.listing.get(symbol)
            onboard = info.onboard_ms if info is not None else None
            for spec in specs:
                self.ended.pop(spec.sid, None)
                snd = self.senders.get(spec.sid)
                if snd is None:
                    snd = self._new_sender(spec)
                    self._start_sender(snd)
                else:  # back from BREAK: the same stream continues
                    snd.end_ms = None
                if onboard is not None and onboard >= self.started_at:
                    snd.history_from = align_down(onboard, spec.interval)  # a new listing
                    snd.request_repair()
                ref = StreamRef(spec.ws_name, spec.sid, spec.interval)
                idx = next(
                    (i for i, r in enumerate(self.slots) if len(r) < s.streams_per_connection),
                    None,
                )
                if idx is None:
                    self.slots.append([ref])
                    self.slot_reconnects.append(0)
                    self.slot_conns.append(None)
                    self._start_slot(len(self.slots) - 1)
                    continue
                self.slots[idx].append(ref)
                conn = self.slot_conns[idx]
                if conn is not None:
                    await conn.change("SUBSCRIBE", [ref])

    def _intervals(self) -> list[str]:
        return list(dict.fromkeys(spec.interval for spec in self.settings.streams))

    def fatal(self, line: str, exit_code: int) -> None:
        """A configuration error (Binance refuses us, or a symbol it does not list): one log
        line, `blocked` in the health, stop and exit non-zero; restarting cannot help."""
        if self.reason is not None:
            return
        self.state, self.reason, self.exit_code = "blocked", line, exit_code
        log_event(log, "CRITICAL", line, exit_code=exit_code)
        self._write_health()
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
                self._write_health()
                delay = backoff.next_delay()
                if time.monotonic() + delay >= deadline:
                    within = f"{self.settings.exchange_info_deadline_s:g} s"
                    line = str(NoAnswer(self.settings.rest_url, within, last))
                    return self.fatal(line, EXIT_BLOCKED)
                log_event(log, "WARNING", "exchangeInfo unavailable, retrying",
                          error=last, retry_in_s=round(delay, 2))  # fmt: skip
                await asyncio.sleep(delay)
        self.state = "starting"

    async def _sync_clock(self, rest: Any, timeout_s: float = 10.0) -> None:
        try:
            self.clock.sync(await asyncio.wait_for(rest.server_time(), timeout_s))
        except Exception as exc:  # the clock then follows event times
            log_event(log, "WARNING", "server time unavailable", error=repr(exc)[:300])

    # --- ingest -----------------------------------------------------------------------------

    async def on_closed(self, sid: str, kline: Kline) -> None:
        await self.queue.put((sid, kline))

    async def _flush_loop(self) -> None:
        # (the spool never raises for its disk: what it cannot write, it holds and serves)
        while True:
            self._flush([await self.queue.get()])

    async def _flush_pending(self) -> None:
        self._flush([])

    def _flush(self, items: list[tuple[str, Kline]]) -> None:
        while len(items) < INGEST_QUEUE:
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
            except Blocked as exc:
                self.fatal(str(exc), EXIT_BLOCKED)
                return None
            except ConnectionFailed as exc:
                log_event(log, "WARNING", "connection failed", conn=conn.conn_id, error=str(exc))
                if backoff is None:
                    return None
                await asyncio.sleep(backoff.next_delay())
                continue
            log_event(log, "INFO", "connected", conn=conn.conn_id, streams=len(self.slots[idx]))
            await conn.sync()
            return conn
        return None

    async def _after_connect(self, idx: int) -> None:
        # Re-anchor the clock before repairing: REST repair publishes what the clock says is
        # closed, and a clock run ahead of the exchange's would take the forming kline for one.
        if self.rest is not None:
            await self._sync_clock(self.rest, timeout_s=3.0)  # (REST down: go on, unsynced)
        for ref in self.slots[idx]:
            self.senders[ref.sid].request_repair()

    async def _run_slot(self, idx: int) -> None:
        """Keep one live connection for slot `idx`: describe it to `slot_policy.decide` at
        every check and do what it says (the policy and its reasons are there)."""
        s = self.settings
        backoff = Backoff(0.5, 30.0)
        conn: Connection | None = None
        replacing: asyncio.Task[Connection | None] | None = None
        retry_replacement_at = 0.0
        asking: dict[str, asyncio.Task[RestVerdict]] = {}  # REST checks of silent streams
        lost: set[str] = set()
        unknown: set[str] = set()
        loop = asyncio.get_running_loop()
        try:
            while not self.stopping.is_set():
                if conn is None:
                    conn = await self._open(idx, backoff)
                    self.slot_conns[idx] = conn
                    if conn is None:
                        return
                    await self._after_connect(idx)
                    continue
                if backoff.attempts and conn.counters.closed_klines:
                    backoff.reset()
                for sid, task in list(asking.items()):
                    if task.done():
                        del asking[sid]
                        answer = None if task.cancelled() else task.result()
                        if answer is RestVerdict.LOST:
                            lost.add(sid)
                        elif answer is RestVerdict.UNKNOWN:
                            unknown.add(sid)
                        else:
                            unknown.discard(sid)
                now = self.clock.now_ms()
                tracker = conn.tracker
                assert tracker is not None and conn.read_task is not None
                tracker.on_frames(conn.frames_received, now)
                for sid in tracker.resumed:
                    log_event(log, "INFO", "stream resumed", conn=conn.conn_id, stream=sid)
                tracker.resumed.clear()
                verdict = tracker.verdict(now)
                decision = decide(
                    SlotView(
                        alive=conn.alive,
                        dead=verdict.dead,
                        lost=tuple(sorted(lost)),
                        unknown=tuple(sorted(unknown)),
                        silent=verdict.silent,
                        asking_rest=frozenset(asking),
                        shutdown_notice=conn.shutdown_notice,
                        age_ms=conn.age_ms(),
                        max_age_ms=int(s.max_conn_age_s * 1000),
                        replacement=_replacement_state(replacing),
                        replacement_retry_due=loop.time() >= retry_replacement_at,
                    )
                )
                for sid in decision.ask_rest:
                    asking[sid] = asyncio.create_task(self._ask_rest(conn, sid))
                act = decision.act
                if act in (Act.RECONNECT, Act.SWITCH):
                    for task in asking.values():
                        task.cancel()
                    asking.clear()
                    lost.clear()
                    unknown.clear()
                if act is Act.RECONNECT:
                    if conn.alive:
                        message = (
                            "connection stalled: every stream silent, reconnecting"
                            if verdict.dead
                            else "reconnecting"
                        )
                        log_event(log, "WARNING", message, conn=conn.conn_id,
                                  reason=decision.reason, silent=verdict.silent[:5])  # fmt: skip
                    await conn.close()
                    self.slot_reconnects[idx] += 1
                    new: Connection | None = None
                    if replacing is not None:  # a replacement is on its way: take it
                        new = await replacing
                        replacing = None
                    if new is None:
                        await asyncio.sleep(backoff.next_delay())
                        new = await self._open(idx, backoff)
                    conn = new
                    self.slot_conns[idx] = conn
                    if conn is None:
                        return
                    await self._after_connect(idx)
                    continue
                if act is Act.SWITCH:
                    assert replacing is not None
                    new = replacing.result()
                    replacing = None
                    assert new is not None
                    old, conn = conn, new
                    self.slot_conns[idx] = conn
                    await old.close()  # after the new one is subscribed: no gap
                    self.slot_reconnects[idx] += 1
                    await self._after_connect(idx)
                    continue
                if act is Act.RETRY_LATER:
                    replacing = None
                    retry_replacement_at = loop.time() + backoff.next_delay()
                elif act is Act.REPLACE:
                    log_event(log, "INFO", "replacing connection", conn=conn.conn_id,
                              reason=decision.reason)  # fmt: skip
                    replacing = asyncio.create_task(self._open(idx, None))
                assert conn.read_task is not None
                waits: set[asyncio.Future[Any]] = {conn.read_task}
                if replacing is not None:
                    waits.add(replacing)
                await asyncio.wait(waits, timeout=CHECK_EVERY_S)
        finally:
            for task in asking.values():
                task.cancel()
            if replacing is not None:
                replacing.cancel()
                with contextlib.suppress(BaseException):
                    extra = await replacing
                    if extra is not None:
                        await extra.close()
            if conn is not None:
                await conn.close()

    async def _ask_rest(self, conn: Connection, sid: str) -> RestVerdict:
        """One stream is silent while the connection delivers: do its klines exist on REST?"""
        tracker, snd = conn.tracker, self.senders[sid]
        assert tracker is not None and self.rest is not None
        if not tracker.watches(sid):  # retired meanwhile (a delivery, a delisting)
            return RestVerdict.MOOT
        window = tracker.rest_window(sid, self.clock.now_ms())
        try:
            rest_has = await asyncio.wait_for(
                has_klines(self.rest, snd.symbol, snd.interval, *window, market=snd.market), 10
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # still silent: asked again after a pause
            log_event(log, "WARNING", "cannot ask REST about a silent stream", stream=sid,
                      error=repr(exc)[:300])  # fmt: skip
            await asyncio.sleep(REST_RETRY_S)
            return RestVerdict.UNKNOWN
        verdict = tracker.on_rest(sid, window, rest_has, self.clock.now_ms())
        if verdict is RestVerdict.HALTED:
            log_event(
                log, "WARNING", "stream halted: no closed klines on WS or REST, not reconnecting",
                conn=conn.conn_id, stream=sid, since_open_time=window[0],
            )  # fmt: skip
        elif verdict is RestVerdict.LOST:
            log_event(log, "WARNING", "stream silent on WS but REST has its klines",
                      conn=conn.conn_id, stream=sid, first_open_time=window[0])  # fmt: skip
        return verdict

    # --- health -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        depth = self.spool.depth()
        streams: dict[str, Any] = {}
        for idx, refs in enumerate(self.slots):
            for ref in refs:
                snd = self.senders[ref.sid]
                conn = self.slot_conns[idx] if idx < len(self.slot_conns) else None
                tracker = conn.tracker if conn is not None else None
                streams[ref.sid] = {
                    # live | silent (REST asked why) | halted (REST has none either)
                    "ws_state": tracker.state(ref.sid).value
                    if tracker and tracker.watches(ref.sid)
                    else "connecting",
                    "last_closed_open_time": self.spool.last_published(ref.sid),
                    "lag_ms": snd.lag_ms(),
                    "reconnects": self.slot_reconnects[idx],
                    "spool_depth": depth.get(ref.sid, 0),
                    "published_rows": snd.stats.published_rows,
                    "repaired_rows": snd.stats.repaired_rows,
                    "send_failures": snd.stats.send_failures,
                }
        for sid, end in self.ended.items():  # retired streams: their end, for operators
            snd = self.senders[sid]
            streams[sid] = {
                "last_closed_open_time": self.spool.last_published(sid),
                "ended": {
                    k: end.get(k) for k in ("reason", "end_ms", "last_open_time", "published_upto")
                },
                "spool_depth": depth.get(sid, 0),
                "published_rows": snd.stats.published_rows,
                "repaired_rows": snd.stats.repaired_rows,
                "send_failures": snd.stats.send_failures,
            }
        return {
            "state": self.state,
            "reason": self.reason,
            "time": int(time.time() * 1000),
            "server_time": self.clock.now_ms(),
            "connections": sum(1 for c in self.slot_conns if c is not None and c.alive),
            "reconnects": sum(self.slot_reconnects),
            "malformed_frames": self.counters.malformed,
            "closed_klines_received": self.counters.closed_klines,
            "spool_depth": sum(depth.values()),
            "spool": self.spool.state,  # "ok" or "degraded: disk full at PATH" (and the like)
            "spool_held_in_memory": sum(n for n, _, _ in self.spool.held().values()),
            "streams": streams,
        }

    def _write_health(self) -> None:
        path = self.settings.state_dir / "health.json"
        try:
            write_atomic(path, _dumps(self.snapshot()))
        except OSError as exc:
            if self._health_error != exc.errno:  # once per episode, not every few seconds
                log_event(log, "ERROR", "cannot write health file (the HTTP endpoint still "
                          "serves it)", path=str(path), error=repr(exc))  # fmt: skip
            self._health_error = exc.errno
            return
        self._health_error = None

    async def _health_loop(self, rest: Any) -> None:
        last_sync = time.monotonic()
        while True:
            self._write_health()
            sd_notify("WATCHDOG=1")
            if time.monotonic() - last_sync > 300:
                last_sync = time.monotonic()
                await self._sync_clock(rest)
            await asyncio.sleep(self.settings.health_interval_s)


def _replacement_state(task: asyncio.Task[Connection | None] | None) -> Replacement:
    if task is None:
        return Replacement.NONE
    if not task.done():
        return Replacement.PENDING
    return Replacement.READY if task.result() is not None else Replacement.FAILED


def _dumps(obj: Any) -> bytes:
    import orjson

    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)
