"""One ordered sender per stream: spool → (gap repair) → sink, in open_time order, once each.

The sender is the only code that publishes a stream. Each step it reads the oldest spooled rows
(up to 5,000, one contract batch), first repairs any gap between the last published kline and
what it is about to send (or the repair target set on start and after a reconnect), then sends
the batch and acknowledges it in the spool. While backlogged (a Pub/Sub outage) the batches are
naturally large. Failures are retried with capped backoff forever: the spool holds the rows.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from klinelake.contract import MAX_ROWS, KlineBatch, check_source
from klinelake.empty_ranges import EmptyRanges
from klinelake.errors import BinanceError, TransientError
from klinelake.halts import subtract
from klinelake.intervals import (
    Gap,
    align_down,
    last_closed_open_time,
    next_open_time,
    prev_open_time,
)
from klinelake.logs import log_event
from klinelake.markets import Market
from klinelake.row import Kline
from klinelake.sink import Sink
from klinelake.symbols import stream_id
from streamer.backoff import Backoff
from streamer.repair import KlineSource, fetch_gap, plan_gaps
from streamer.spool import Spool

log = logging.getLogger("streamer.sender")


@dataclass
class StreamStats:
    reconnects: int = 0
    published_rows: int = 0
    repaired_rows: int = 0
    send_failures: int = 0
    repair_failures: int = 0


class StreamSender:
    def __init__(
        self,
        *,
        symbol: str,
        interval: str,
        spool: Spool,
        sink: Sink,
        rest: KlineSource | None,
        server_now: Callable[[], int],
        batch_rows: int = MAX_ROWS,
        backoff_cap_s: float = 30.0,
        empty: EmptyRanges | None = None,
        market: Market = Market.SPOT,
    ) -> None:
        self.empty = empty
        self.symbol = symbol
        self.interval = interval
        self.market = market
        self.stream = stream_id(symbol, interval, market)
        self.spool = spool
        self.sink = sink
        self.rest = rest
        self.server_now = server_now
        self.batch_rows = batch_rows
        self.backoff_cap_s = backoff_cap_s
        self.wake = asyncio.Event()
        self.repair_target: int | None = None
        self.end_ms: int | None = None  # retired: no kline opens at or after this
        # A listing seen while running: its history starts at its onboard bar, not at the first
        # live kline (which may close before the SUBSCRIBE is acked).
        self.history_from: int | None = None
        self.stats = StreamStats()
        self.idle = asyncio.Event()  # set when nothing is spooled and nothing is in flight
        # Confirmed empty, not yet in the lake: rides on the next batch (contract 4). Lost in a
        # crash only together with the cache entry, so repair confirms it again.
        self.pending_empty: list[Gap] = []

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
        while True:
            if not self.wake.is_set():
                self.idle.set()
                if draining.is_set():
                    return
                await self.wake.wait()
            self.idle.clear()
            self.wake.clear()
            backoff = Backoff(0.5, self.backoff_cap_s)
            while True:
                try:
                    if not await self.step():
                        break
                    backoff.reset()
                except sqlite3.Error as exc:  # the spool's disk: full, read-only, I/O error
                    delay = backoff.next_delay()
                    log_event(
                        log, "ERROR", "spool error, retrying", stream=self.stream,
                        error=repr(exc)[:300], retry_in_s=round(delay, 2),
                    )  # fmt: skip
                    await asyncio.sleep(delay)

    async def step(self) -> bool:
        """Send one batch (repairing first if needed). False when there is nothing to send."""
        rows, source = self.spool.peek(self.stream, self.batch_rows)
        requested = self.repair_target
        target = requested
        if rows:
            target = max(target or rows[-1].open_time, rows[-1].open_time)
        if target is not None and self.rest is not None and await self._repair(target, rows):
            rows, source = self.spool.peek(self.stream, self.batch_rows)
            # live rows that arrived meanwhile may lie past a new gap: not in this batch
            rows = [k for k in rows if k.open_time <= target]
        if self.repair_target == requested:
            self.repair_target = None
        if not rows and not self.pending_empty:
            return False
        batch = KlineBatch(
            self.symbol, self.interval, tuple(rows), tuple(self.pending_empty), market=self.market
        )
        await self._send(batch, source)
        return True

    async def _repair(self, target: int, rows: list[Kline]) -> bool:
        """Fill the gaps up to `target`; True if rows were added. Retries until REST answers."""
        backoff = Backoff(0.5, self.backoff_cap_s)
        while True:
            last = self.spool.last_published(self.stream)
            if last is None and self.history_from is not None:
                last = prev_open_time(self.history_from, self.interval)
            gaps = plan_gaps(
                last_published=last,
                spooled=self.spool.open_times(self.stream, target),
                first_spooled=rows[0].open_time if rows else None,
                target=target,
                interval=self.interval,
            )
            if gaps:
                known = (
                    self.empty.get(self.symbol, self.interval, self.market) if self.empty else []
                )
                gaps = subtract(gaps, [*known, *self.pending_empty], self.interval)
            if not gaps:
                return False
            closed = last_closed_open_time(self.server_now(), self.interval)
            added = 0
            try:
                for gap in gaps:
                    assert self.rest is not None
                    added += await fetch_gap(
                        self.rest,
                        symbol=self.symbol,
                        interval=self.interval,
                        gap=gap,
                        closed_upto=closed,
                        store=self._store_rest,
                    )
            except (BinanceError, TransientError, OSError) as exc:
                self.stats.repair_failures += 1
                delay = backoff.next_delay()
                log_event(
                    log,
                    "WARNING",
                    "gap repair failed, retrying",
                    stream=self.stream,
                    gaps=len(gaps),
                    error=repr(exc)[:300],
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            self.stats.repaired_rows += added
            self._record_empty(last, rows[0].open_time if rows else None, min(target, closed))
            log_event(
                log,
                "INFO",
                "gaps repaired over REST",
                stream=self.stream,
                gaps=len(gaps),
                first=gaps[0][0],
                last=gaps[-1][1],
                rows=added,
            )
            return added > 0

    def _record_empty(self, last: int | None, first_spooled: int | None, upto: int) -> None:
        """What REST did not return, before a kline that exists, does not exist (a halt or an
        exchange outage): publish it with the next batch (the lake's meta object), then cache it
        so repair never fetches it again. The tail after the newest existing kline is not
        recorded: REST may just not have it yet."""
        newest = self.spool.last_spooled_upto(self.stream, upto)
        if newest is None:
            return
        holes = plan_gaps(
            last_published=last,
            spooled=self.spool.open_times(self.stream, newest),
            first_spooled=first_spooled,
            target=newest,
            interval=self.interval,
        )
        if holes:
            self.pending_empty.extend(holes)
            log_event(
                log, "INFO", "confirmed empty (no klines on REST)", stream=self.stream,
                ranges=holes[:10],
            )  # fmt: skip

    def _store_rest(self, rows: list[Kline]) -> None:
        self.spool.add(((self.stream, k) for k in rows), source="rest")

    async def _send(self, batch: KlineBatch, source: str) -> None:
        backoff = Backoff(0.2, self.backoff_cap_s)
        while True:
            try:
                await self.sink.send(batch, check_source(source))
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sink outage must not lose anything: retry forever
                self.stats.send_failures += 1
                delay = backoff.next_delay()
                severity = "WARNING" if isinstance(exc, TransientError) else "ERROR"
                log_event(
                    log,
                    severity,
                    "publish failed, retrying",
                    stream=self.stream,
                    rows=len(batch.rows),
                    first=batch.first_open_time,
                    error=repr(exc)[:300],
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
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
            log,
            "DEBUG",
            "published",
            stream=self.stream,
            rows=len(batch.rows),
            first=batch.first_open_time,
            last=batch.last_open_time,
            source=source,
        )

    def lag_ms(self) -> int | None:
        last = self.spool.last_published(self.stream)
        if last is None:
            return None
        return max(0, self.server_now() - next_open_time(last, self.interval))
