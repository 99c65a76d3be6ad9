"""The fetch pool: `concurrency` workers take planned pages in order and fetch each (REST pages
through the core's range pager, or an archive with --source vision) under the weight budget,
hand the rows to their stream's emitter, and stop taking pages at the first failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence

from backfill.checkpoint import Checkpoint
from backfill.emit_policy import batches_per_send
from backfill.emitter import StreamEmitter, page_halts
from backfill.plan import (
    Page,
)
from backfill.result import Reporter, RunResult
from backfill.settings import Settings
from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.backends.sink import Sink
from klinelake.binance.rest import BinanceRest
from klinelake.core.contract import MAX_ROWS
from klinelake.core.publish import (
    fetch_range,
    within,
)
from klinelake.core.row import Kline, StreamRows


async def fetch_all(
    todo: list[Page],
    *,
    rest: BinanceRest,
    sink: Sink,
    checkpoint: Checkpoint,
    empty: EmptyRanges,
    settings: Settings,
    result: RunResult,
    reporter: Reporter,
    fetch_page: Callable[[Page], Awaitable[Sequence[Kline]]] | None = None,
) -> None:
    by_stream: dict[str, list[Page]] = {}
    for page in todo:
        by_stream.setdefault(page.stream, []).append(page)
    # Pages fetched but not yet in their stream's send buffer (in flight or out of order) hold
    # a slot: memory stays bounded however far fetching runs ahead of the sink. A worker takes
    # a slot before it takes the next page, so the earliest unfinished page always has one.
    slots = asyncio.Semaphore(4 * settings.concurrency)
    fetching_done = asyncio.Event()
    emitters = {
        stream: StreamEmitter(
            pages,
            sink=sink,
            checkpoint=checkpoint,
            source=settings.source,
            result=result,
            empty=empty,
            batch_rows=settings.batch_rows,
            batches_per_send=batches_per_send(
                sink.rows_per_send // MAX_ROWS, settings.batch_rows, len(by_stream)
            ),
            slots=slots,
            fetching_done=fetching_done,
            newest_first=sink.history_newest_first,
        )
        for stream, pages in by_stream.items()
    }
    queue: Iterator[Page] = iter(todo)
    failures: list[Exception] = []

    async def worker() -> None:
        while True:
            await slots.acquire()
            page = None if failures else next(queue, None)  # each page goes to one worker
            if page is None:
                slots.release()
                return
            try:
                if fetch_page is not None:  # --source vision: an archive, or REST pages
                    rows = await fetch_page(page)
                else:
                    pages = fetch_range(
                        rest, page.symbol, page.interval, page.start, page.end,
                        limit=settings.limit, market=page.market,
                    )  # fmt: skip
                    parts = [part async for part in pages]
                    rows = (
                        parts[0]
                        if len(parts) == 1  # a page in several requests keeps its lines
                        else StreamRows.joined(page.symbol, page.interval, page.market, parts)
                    )
            except Exception as exc:  # stop taking pages; the first failure is raised below
                failures.append(exc)
                slots.release()
                return
            rows = within(rows, page.start, page.end)
            halts = page_halts(page, rows)
            for gap in halts:
                result.empty_ranges.append((page.stream, gap))
                reporter.empty(page.stream, gap)
            result.pages_fetched += 1
            reporter.page_done(page, len(rows), rest.counters.last_used_weight)
            emitters[page.stream].complete(page, rows, halts)

    async def fetch() -> None:
        async with asyncio.TaskGroup() as workers:
            for _ in range(min(settings.concurrency, max(1, len(todo)))):
                workers.create_task(worker())
        fetching_done.set()
        for emitter in emitters.values():
            emitter.wakeup.set()

    try:
        async with asyncio.TaskGroup() as group:
            for emitter in emitters.values():
                group.create_task(emitter.run())
            group.create_task(fetch())
    except BaseExceptionGroup as group_exc:
        # A sink failure (or a bug) cancels everything; surface the first real error.
        raise _first_error(group_exc) from None
    if failures:
        raise failures[0]


def _first_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = inner[0] if inner else exc.exceptions[0]
    return exc
