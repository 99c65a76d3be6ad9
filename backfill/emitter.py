"""Each stream's completed pages, in page order, through the sink; checkpointed once durable.

Pages complete out of order; each stream buffers completed pages and sends the contiguous prefix
as contract batches (≤ 5000 rows, `make_batches`). A stream goes oldest page first, or newest
first when the sink's lake prepends cheaply (`Sink.history_newest_first`, GCS): each batch is
ascending either way, and lies wholly before the rows already sent, so the writer composes it
in front of the object in O(batch) instead of merging it into ever more rows (issue 15).
A page is checkpointed only once the sink returned for every one of its rows
(`emit_policy.pages_sent`), so a crash at any point loses nothing and a re-run fetches only
unfinished pages. Open times a complete page (or archive) lacks are exchange halts: they ride on
the stream's batches as confirmed-empty ranges (the lake's meta object, contract 4), and once
sent they are also cached locally (klinelake.backends.empty_ranges) for `--missing-only`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import KW_ONLY, InitVar, dataclass, field

from backfill.checkpoint import Checkpoint
from backfill.emit_policy import next_send_size, pages_sent
from backfill.plan import (
    Page,
)
from backfill.result import RunResult
from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.backends.sink import Sink
from klinelake.core.contract import Source, make_batches, with_empty
from klinelake.core.errors import TransientError
from klinelake.core.intervals import (
    Gap,
    align_down,
)
from klinelake.core.markets import Market
from klinelake.core.publish import (
    Patience,
    confirmed_empty,
    send_until_durable,
)
from klinelake.core.row import Kline, StreamRows, open_times

# The backfill may give up on the sink: its checkpoint holds the progress and a re-run resumes.
# Transient failures get 6 tries over ~20 s; anything else (bad config, a rejected batch) ends it.
SINK_PATIENCE = Patience(
    attempts=6, first_s=0.5, cap_s=10.0, permanent=lambda e: not isinstance(e, TransientError)
)


@dataclass(eq=False)
class StreamEmitter:
    """Sends one stream's completed pages in open_time order; checkpoints what was sent.

    Workers hand pages over with `complete` (no waiting on the sink); `run` moves the
    contiguous prefix into the send buffer (freeing the page's slot), sends full batches, and
    the remainder once the stream's last page is in, or once fetching stopped (a failure: what
    was fetched in order is still written and checkpointed).
    """

    pages: InitVar[Sequence[Page]]
    _: KW_ONLY
    sink: Sink
    checkpoint: Checkpoint
    source: Source
    result: RunResult
    empty: EmptyRanges
    batch_rows: int
    # contract batches per sink write (`batches_per_send`): the local lake takes several
    batches_per_send: int = 1
    slots: asyncio.Semaphore
    fetching_done: asyncio.Event  # no more pages will come (all done, or a failure)
    # newest first: rows are buffered in descending open_time (each page reversed), so the
    # same prefix bookkeeping applies and a batch is reversed back to ascending when sent
    newest_first: bool = False
    order: list[str] = field(init=False)
    symbol: str = field(init=False)
    interval: str = field(init=False)
    market: Market = field(init=False)
    next: int = field(init=False, default=0)
    ready: dict[str, tuple[Sequence[Kline], list[Gap]]] = field(init=False, default_factory=dict)
    # the send buffer: rows as their open times and lake lines (row.StreamRows), no Klines
    times: list[int] = field(init=False, default_factory=list)
    lines: list[bytes] = field(init=False, default_factory=list)
    # confirmed-empty ranges of the pages moved into the buffer
    halts: list[Gap] = field(init=False, default_factory=list)
    # (page key, end index in the buffer)
    page_ends: list[tuple[str, int]] = field(init=False, default_factory=list)
    wakeup: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self, pages: Sequence[Page]) -> None:
        self.order = [p.key for p in pages]
        self.symbol, self.interval = pages[0].symbol, pages[0].interval
        self.market = pages[0].market

    def complete(self, page: Page, rows: Sequence[Kline], halts: list[Gap]) -> None:
        self.ready[page.key] = (rows, halts)
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            while self.next < len(self.order) and self.order[self.next] in self.ready:
                key = self.order[self.next]
                rows, halts = self.ready.pop(key)
                page = StreamRows.of(self.symbol, self.interval, self.market, rows)
                if self.newest_first:
                    page = page.reversed()
                self.times.extend(page.open_times)
                self.lines.extend(page.lines)
                self.halts.extend(halts)
                self.page_ends.append((key, len(self.times)))
                self.next += 1
                self.slots.release()
            final = self.next == len(self.order) or self.fetching_done.is_set()
            send_rows = self.batch_rows * self.batches_per_send
            while True:
                n = next_send_size(len(self.times), send_rows, final, bool(self.page_ends))
                if n is None:
                    break
                if n or self.halts:  # a page's halts go with the first batch sent after it
                    rows = StreamRows(
                        self.symbol, self.interval, self.market, self.times[:n], self.lines[:n]
                    )
                    await self._send(rows, self.halts)
                    self.halts = []
                done, self.page_ends = pages_sent(self.page_ends, n)
                del self.times[:n]
                del self.lines[:n]
                await asyncio.to_thread(self.checkpoint.mark, done)
            if final:
                return
            await self.wakeup.wait()
            self.wakeup.clear()

    async def _send(self, rows: StreamRows, halts: list[Gap]) -> None:
        batches = list(make_batches(rows, self.batch_rows))  # each ascending (make_batches sorts)
        ordered = list(reversed(batches)) if self.newest_first else batches
        sendable = with_empty(self.symbol, self.interval, ordered, halts, self.market)
        step = self.batches_per_send
        for i in range(0, len(sendable), step):
            group = sendable[i : i + step]
            await send_until_durable(self.sink, group, self.source, patience=SINK_PATIENCE)
            self.result.batches_sent += len(group)
            self.result.rows_sent += sum(len(batch.rows) for batch in group)
        if halts:  # durable in the lake now; the local cache only spares --missing-only requests
            await asyncio.to_thread(self.empty.add, self.symbol, self.interval, halts, self.market)


def page_halts(page: Page, rows: Sequence[Kline]) -> list[Gap]:
    """Open times a complete page lacks: Binance has no klines there (exchange halts)."""
    last_open = align_down(page.end, page.interval)
    return confirmed_empty(open_times(rows), page.start, last_open, page.interval)
