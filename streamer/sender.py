"""One ordered sender per stream: spool → (gap repair) → sink, in open_time order, once each.

The sender is the only code that publishes a stream. Each step it reads the oldest spooled rows
(up to 5,000, one contract batch), first repairs any gap between the last published kline and
what it is about to send (or the repair target set on start and after a reconnect), then sends
the batch and acknowledges it in the spool. While backlogged (a Pub/Sub outage) the batches are
naturally large. Sending, REST paging and halt inference are the core's one publish path
(`klinelake.core.publish`); here: the spool, the repair target and the logging. Failures are retried
with capped jittered backoff forever: the spool holds the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.backends.sink import Sink
from klinelake.core.contract import MAX_ROWS, KlineBatch, check_source
from klinelake.core.errors import BinanceError, TransientError
from klinelake.core.halts import subtract
from klinelake.core.intervals import (
    Gap,
    align_down,
    last_closed_open_time,
    next_open_time,
    prev_open_time,
)
from klinelake.core.markets import Market
from klinelake.core.publish import (
    KlineSource,
    Patience,
    confirmed_empty,
    fetch_range,
    retry_until_done,
    send_until_durable,
)
from klinelake.core.row import Kline, lake_lines, open_times
from klinelake.core.symbols import stream_id
from klinelake.logs import log_event
from streamer.flush_window import FlushWindow
from streamer.repair import history_head, plan_gaps
from streamer.spool import Spool

log = logging.getLogger("streamer.sender")


@dataclass
class StreamStats:
    reconnects: int = 0
    published_rows: int = 0
    repaired_rows: int = 0
    send_failures: int = 0
    repair_failures: int = 0


@dataclass(eq=False, kw_only=True)
class StreamSender:
    symbol: str
    interval: str
    spool: Spool
    sink: Sink
    rest: KlineSource | None
    server_now: Callable[[], int]
    batch_rows: int = MAX_ROWS
    backoff_cap_s: float = 30.0
    empty: EmptyRanges | None = None
    market: Market = Market.SPOT
    # hold closed klines up to a window (docs/cost.md); the default sends each one at once
    window: FlushWindow = field(default_factory=FlushWindow)
    # how long `ms` of server time lasts in real seconds (the clock may run accelerated)
    real_seconds: Callable[[float], float] = lambda ms: ms / 1000
    wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    repair_target: int | None = field(init=False, default=None)
    # retired: no kline opens at or after this
    end_ms: int | None = field(init=False, default=None)
    # A listing seen while running: its history starts at its onboard bar, not at the first
    # live kline (which may close before the SUBSCRIBE is acked).
    history_from: int | None = field(init=False, default=None)
    stats: StreamStats = field(init=False, default_factory=StreamStats)
    # set when nothing is spooled and nothing is in flight
    idle: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    # Confirmed empty, not yet in the lake: rides on the next batch (contract 4). Lost in a
    # crash only together with the cache entry, so repair confirms it again.
    pending_empty: list[Gap] = field(init=False, default_factory=list)
    # server ms at which the klines held in the spool are due (None: nothing held)
    due_at: int | None = field(init=False, default=None)
    _draining: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    @functools.cached_property  # read per stream at every health write and check
    def stream(self) -> str:
        return stream_id(self.symbol, self.interval, self.market)

    def request_repair(self) -> None:
        """On start and after a reconnect: make sure everything closed by now is published."""
        target = last_closed_open_time(self.server_now(), self.interval)
        if self.end_ms is not None:  # a retired stream is complete at its end, not at "now"
            target = min(target, align_down(self.end_ms - 1, self.interval))
        self.repair_target = max(self.repair_target or target, target)
        self.wake.set()

    def retire(self, end_ms: int) -> None:
        """The stream ended at `end_ms` (delivery, delisting): repair up to its last kline."""
        self.end_ms = end_ms
        self.repair_target = None
        self.request_repair()

    async def run(self, draining: asyncio.Event) -> None:
        self._draining = draining
        while True:
            if not self.wake.is_set():
                if self.due_at is None:
                    self.idle.set()
                    if draining.is_set():
                        return
                    await self.wake.wait()
                else:  # holding klines: until they are due, or an early wake (drain, repair)
                    delay = self.real_seconds(max(0, self.due_at - self.server_now()))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), delay)
            self.idle.clear()
            self.wake.clear()
            # the spool's disk (full, read-only, I/O error) is retried step by step, forever
            spool_patience = Patience(
                first_s=0.5,
                cap_s=self.backoff_cap_s,
                permanent=lambda e: not isinstance(e, sqlite3.Error),
            )
            while await retry_until_done(
                self.step, patience=spool_patience, on_retry=self._spool_retry
            ):
                pass

    def _spool_retry(self, exc: BaseException, delay: float) -> None:
        log_event(
            log, "ERROR", "spool error, retrying", stream=self.stream,
            error=repr(exc)[:300], retry_in_s=round(delay, 2),
        )  # fmt: skip

    async def step(self) -> bool:
        """Send one batch (repairing first if needed). False when there is nothing to send
        now (nothing spooled, or the spooled klines are held until `due_at`)."""
        flush_now = self._draining.is_set() or self.end_ms is not None
        if (
            self.due_at is not None
            and self.repair_target is None
            and not flush_now
            and self.server_now() < self.due_at
        ):  # a new kline joined the held ones: nothing is due yet (and no spool read)
            return False
        self.due_at = None
        rows, source = self.spool.peek(self.stream, self.batch_rows)
        requested = self.repair_target
        target = requested
        if rows:
            target = max(target or rows[-1].open_time, rows[-1].open_time)
        if (
            target is not None
            and self.rest is not None
            and not self._rows_close_every_gap(target, rows)
            and await self._repair(target, rows)
        ):
            rows, source = self.spool.peek(self.stream, self.batch_rows)
            # live rows that arrived meanwhile may lie past a new gap: not in this batch
            rows = [k for k in rows if k.open_time <= target]
        if self.repair_target == requested:
            self.repair_target = None
        if not rows and not self.pending_empty:
            return False
        if rows:
            now = self.server_now()
            wait = self.window.wait_ms(
                now_ms=now, first_open_time=rows[0].open_time,
                first_close_time=rows[0].close_time, interval=self.interval, held=len(rows),
                draining=flush_now,
            )  # fmt: skip
            if wait:
                self.due_at = now + wait
                return False
        batch = KlineBatch(
            self.symbol, self.interval, tuple(rows), tuple(self.pending_empty), market=self.market
        )
        await self._send(batch, source)
        return True

    def _history_tail(self) -> int | None:
        """The open time the published history ends at (the last published kline, or the bar
        before a listing's onboard bar), or None."""
        last = self.spool.last_published(self.stream)
        if last is None and self.history_from is not None:
            last = prev_open_time(self.history_from, self.interval)
        return last

    def _rows_close_every_gap(self, target: int, rows: list[Kline]) -> bool:
        """The peeked rows alone run without a hole from the published history to `target`:
        the common step (the next live kline), decided without reading the spool again. The
        spool holds at least these rows, so it has no gap either and `_repair` would find
        none (its gaps are a subset of these)."""
        if not rows:
            return False
        gaps = plan_gaps(
            last_published=self._history_tail(),
            spooled=[k.open_time for k in rows],
            first_spooled=rows[0].open_time,
            target=target,
            interval=self.interval,
        )
        return not gaps

    async def _repair(self, target: int, rows: list[Kline]) -> bool:
        """Fill the gaps up to `target`; True if rows were added. Retries until REST answers."""
        first_spooled = rows[0].open_time if rows else None

        async def attempt() -> tuple[list[Gap], int]:
            last = self._history_tail()
            gaps = plan_gaps(
                last_published=last,
                spooled=self.spool.open_times(self.stream, target),
                first_spooled=first_spooled,
                target=target,
                interval=self.interval,
            )
            if gaps:
                known = (
                    self.empty.get(self.symbol, self.interval, self.market) if self.empty else []
                )
                gaps = subtract(gaps, [*known, *self.pending_empty], self.interval)
            if not gaps:
                return gaps, 0
            closed = last_closed_open_time(self.server_now(), self.interval)
            added = 0
            assert self.rest is not None
            for first, last_open in gaps:
                async for page in fetch_range(
                    self.rest, self.symbol, self.interval, first, min(last_open, closed),
                    market=self.market,
                ):  # fmt: skip
                    if page:
                        self._store_rest(page)
                        added += len(page)
            self._record_empty(last, first_spooled, min(target, closed))
            return gaps, added

        def on_retry(exc: BaseException, delay: float) -> None:
            self.stats.repair_failures += 1
            log_event(
                log, "WARNING", "gap repair failed, retrying", stream=self.stream,
                error=repr(exc)[:300], retry_in_s=round(delay, 2),
            )  # fmt: skip

        gaps, added = await retry_until_done(
            attempt,
            patience=Patience(
                first_s=0.5,
                cap_s=self.backoff_cap_s,
                permanent=lambda e: not isinstance(e, (BinanceError, TransientError, OSError)),
            ),
            on_retry=on_retry,
        )
        if not gaps:
            return False
        self.stats.repaired_rows += added
        log_event(
            log, "INFO", "gaps repaired over REST", stream=self.stream, gaps=len(gaps),
            first=gaps[0][0], last=gaps[-1][1], rows=added,
        )  # fmt: skip
        return added > 0

    def _record_empty(self, last: int | None, first_spooled: int | None, upto: int) -> None:
        """What REST did not return, before a kline that exists, does not exist (a halt or an
        exchange outage): publish it with the next batch (the lake's meta object), then cache it
        so repair never fetches it again. The tail after the newest existing kline is not
        recorded: REST may just not have it yet."""
        newest = self.spool.last_spooled_upto(self.stream, upto)
        head = history_head(last, first_spooled, self.interval)
        if newest is None or head is None or newest < head:
            return
        holes = confirmed_empty(self.spool.open_times(self.stream, newest), head, newest,
                                self.interval)  # fmt: skip
        if holes:
            self.pending_empty.extend(holes)
            log_event(
                log, "INFO", "confirmed empty (no klines on REST)", stream=self.stream,
                ranges=holes[:10],
            )  # fmt: skip

    def _store_rest(self, rows: Sequence[Kline]) -> None:
        lines = zip(repeat(self.stream), open_times(rows), lake_lines(rows), strict=False)
        self.spool.add_lines(lines, source="rest")

    async def _send(self, batch: KlineBatch, source: str) -> None:
        def on_retry(exc: BaseException, delay: float) -> None:
            self.stats.send_failures += 1
            severity = "WARNING" if isinstance(exc, TransientError) else "ERROR"
            log_event(
                log, severity, "publish failed, retrying", stream=self.stream,
                rows=len(batch.rows), first=batch.first_open_time, error=repr(exc)[:300],
                retry_in_s=round(delay, 2),
            )  # fmt: skip

        # a sink outage must not lose anything: retry forever (the spool holds the rows)
        await send_until_durable(
            self.sink, batch, check_source(source), patience=Patience(cap_s=self.backoff_cap_s),
            on_retry=on_retry,
        )  # fmt: skip
        if batch.empty:  # durable in the lake now; cached so repair never asks REST again
            del self.pending_empty[: len(batch.empty)]
            if self.empty is not None:
                try:
                    self.empty.add(self.symbol, self.interval, batch.empty, self.market)
                except OSError as exc:  # only an optimisation: repair would fetch them again
                    log_event(
                        log, "WARNING", "cannot record confirmed-empty ranges",
                        stream=self.stream, path=str(self.empty.path), error=repr(exc),
                    )  # fmt: skip
        if not batch.rows:
            return
        self.spool.ack(self.stream, batch.last_open_time)
        self.stats.published_rows += len(batch.rows)
        log_event(
            log, "DEBUG", "published", stream=self.stream, rows=len(batch.rows),
            first=batch.first_open_time, last=batch.last_open_time, source=source,
        )  # fmt: skip

    def lag_ms(self) -> int | None:
        last = self.spool.last_published(self.stream)
        if last is None:
            return None
        return max(0, self.server_now() - next_open_time(last, self.interval))
