"""The backfill run: validate, plan, fetch pages concurrently under the weight budget, emit each
stream in page order through the sink, checkpoint what the sink made durable.

Pages complete out of order; each stream buffers completed pages and sends the contiguous prefix
as contract batches (≤ 5000 rows, `make_batches`). A stream goes oldest page first, or newest
first when the sink's lake prepends cheaply (`Sink.history_newest_first`, GCS): each batch is
ascending either way, and lies wholly before the rows already sent, so the writer composes it
in front of the object in O(batch) instead of merging it into ever more rows (issue 15).
A page is checkpointed only once the sink returned for every one of its rows, so a crash at
any point loses nothing and a re-run fetches only unfinished pages. Open times a complete page
(or archive) lacks are exchange halts: they ride on the stream's batches as confirmed-empty
ranges (the lake's meta object, contract 4), and once sent they are also cached locally
(klinelake.empty_ranges) for `--missing-only`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import KW_ONLY, InitVar, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import httpx

from backfill.checkpoint import Checkpoint
from backfill.plan import (
    Page,
    Plan,
    StreamPlan,
    first_open_at_or_after,
    plan_identity,
    plan_stream,
)
from backfill.vision import VisionFetcher, plan_vision_stream
from klinelake.binance_rest import BinanceRest, NoAnswer
from klinelake.config import DEFAULT_LAKE_URI, DEFAULT_REST_URL, DEFAULT_VISION_URL
from klinelake.contract import MAX_ROWS, Source, make_batches, with_empty
from klinelake.empty_ranges import EmptyRanges
from klinelake.errors import InvalidData, TransientError
from klinelake.exchange_info import SymbolInfo, parse_exchange_info
from klinelake.halts import subtract
from klinelake.halts_writer import read_empty
from klinelake.intervals import (
    DAY,
    Gap,
    align_down,
    check_interval,
    find_gaps,
    last_closed_open_time,
)
from klinelake.lake import open_store, read_lines
from klinelake.markets import Market, check_market_interval, spec
from klinelake.publish import (
    Patience,
    UnlistedSymbols,
    check_listed,
    confirmed_empty,
    fetch_range,
    send_until_durable,
)
from klinelake.row import Kline, open_time_of_line
from klinelake.sink import Sink, make_sink
from klinelake.symbols import object_name, validate_symbol
from klinelake.vision import Archive
from klinelake.vision_client import VisionClient
from klinelake.weight import WeightBudget

DEFAULT_DAYS = 30
# The backfill may give up on the sink: its checkpoint holds the progress and a re-run resumes.
# Transient failures get 6 tries over ~20 s; anything else (bad config, a rejected batch) ends it.
SINK_PATIENCE = Patience(
    attempts=6, first_s=0.5, cap_s=10.0, permanent=lambda e: not isinstance(e, TransientError)
)


class BadInput(Exception):
    """The command cannot succeed as given (exit code 2); the message is one clear line."""


@dataclass(frozen=True)
class Settings:
    symbols: tuple[str, ...] = ("BTCUSDC",)
    intervals: tuple[str, ...] = ("1h",)
    start_ms: int | None = None
    end_ms: int | None = None  # inclusive: klines whose open_time <= end_ms
    days: int | None = None
    topic: str | None = None
    lake: str = DEFAULT_LAKE_URI
    rest_url: str = DEFAULT_REST_URL
    state_dir: Path = Path("./state")
    budget_share: float = 0.8
    concurrency: int = 10
    missing_only: bool = False
    dry_run: bool = False
    source: Source = "rest"
    vision_url: str = DEFAULT_VISION_URL
    page_limit: int | None = None  # None: the market's cheapest (spot 1000, futures 499)
    batch_rows: int = MAX_ROWS
    market: Market = Market.SPOT

    @property
    def limit(self) -> int:
        return self.page_limit or spec(self.market).cheapest_page_limit

    def __post_init__(self) -> None:
        check_settings(self)  # validated when built: a Settings that exists can run

    @property
    def sink_target(self) -> str:
        return f"pubsub:{self.topic}" if self.topic else f"lake:{self.lake}"


@dataclass
class RunResult:
    plan: Plan
    pages_skipped: int = 0
    pages_fetched: int = 0
    rows_sent: int = 0
    batches_sent: int = 0
    empty_ranges: list[tuple[str, Gap]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    weight_charged: int = 0
    max_used_weight: int = 0
    budget: int = 0
    elapsed_s: float = 0.0


class Reporter(Protocol):
    def planned(self, plan: Plan, skipped: int, budget: int, settings: Settings) -> None: ...

    def page_done(self, page: Page, rows: int, used_weight: int) -> None: ...

    def empty(self, stream: str, gap: Gap) -> None: ...

    def finished(self, result: RunResult) -> None: ...


def check_settings(settings: Settings) -> None:
    """What can be refused before any request."""
    for interval in settings.intervals:
        try:
            check_market_interval(settings.market, check_interval(interval))
        except InvalidData as exc:
            raise BadInput(str(exc)) from None
    for symbol in settings.symbols:
        try:
            validate_symbol(symbol.upper())  # typed in any case, used uppercased
        except InvalidData as exc:
            raise BadInput(str(exc)) from None
    if not settings.symbols or not settings.intervals:
        raise BadInput("no symbols or no intervals given")
    if settings.end_ms is not None and settings.days is not None:
        raise BadInput("--end and --days are mutually exclusive")
    if settings.days is not None and settings.days <= 0:
        raise BadInput(f"--days must be positive, got {settings.days}")
    if (
        settings.start_ms is not None
        and settings.end_ms is not None
        and settings.start_ms > settings.end_ms
    ):
        raise BadInput(f"start {iso(settings.start_ms)} is after end {iso(settings.end_ms)}")
    if not 0 < settings.budget_share <= 1:
        raise BadInput(f"--budget-share must be in (0, 1], got {settings.budget_share}")
    if settings.concurrency < 1:
        raise BadInput("--concurrency must be at least 1")
    ceiling = spec(settings.market).max_limit
    if not 1 <= settings.limit <= ceiling:
        raise BadInput(f"--page-limit must be 1..{ceiling}")
    if settings.source not in ("rest", "vision"):
        raise BadInput(f"source {settings.source!r} is not supported (only 'rest' or 'vision')")
    if settings.source == "vision" and settings.missing_only:
        raise BadInput("--missing-only is not supported with --source vision")


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def resolve_range(settings: Settings, interval: str, now_ms: int) -> tuple[int, int]:
    """(first, last) open times for one interval: closed klines only (by the server's time)."""
    if settings.start_ms is not None and settings.start_ms > now_ms:
        raise BadInput(
            f"range in the future: start {iso(settings.start_ms)} is after the server time "
            f"{iso(now_ms)}"
        )
    end = settings.end_ms
    if end is None:
        end = now_ms
        if settings.start_ms is not None and settings.days is not None:
            end = min(now_ms, settings.start_ms + settings.days * DAY - 1)
    start = settings.start_ms
    if start is None:
        start = end - (settings.days or DEFAULT_DAYS) * DAY + 1
    last = min(align_down(end, interval), last_closed_open_time(now_ms, interval))
    return first_open_at_or_after(start, interval), last


async def check_symbols(rest: BinanceRest, symbols: Sequence[str]) -> dict[str, Any]:
    """exchangeInfo for all symbols (`klinelake.publish.check_listed`); unknown ones are bad
    input."""
    try:
        return await check_listed(rest, symbols, rest.market)
    except TransientError as exc:  # the client's retries are spent: nothing can be fetched
        raise NoAnswer(rest.base_url, f"{rest.max_attempts} attempts", repr(exc)) from exc
    except UnlistedSymbols as exc:
        raise BadInput(f"unknown symbol {exc}") from None


_UNIT_MS = {"SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


def request_weight_limit(info: dict[str, Any]) -> tuple[int, int] | None:
    """(limit, window ms) of the REQUEST_WEIGHT rate limit exchangeInfo announces, e.g.
    `{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":6000}`."""
    for entry in info.get("rateLimits", []):
        if not isinstance(entry, dict) or entry.get("rateLimitType") != "REQUEST_WEIGHT":
            continue
        limit, num, unit = entry.get("limit"), entry.get("intervalNum"), entry.get("interval")
        if isinstance(limit, int) and isinstance(num, int) and unit in _UNIT_MS:
            return limit, num * _UNIT_MS[unit]
    return None


def lake_gaps(
    lake: str, symbol: str, interval: str, first: int, last: int, *, market: Market = Market.SPOT
) -> list[Gap]:
    """Missing open times in [first, last] of the lake object (streamed, not loaded), less the
    halts the lake records (its meta object, contract 4)."""
    store = open_store(lake)
    name = object_name(symbol, interval, market)
    times = (open_time_of_line(line) for line in read_lines(store, name))
    recorded = read_empty(store, symbol, interval, spec(market).object_token)
    return subtract(find_gaps(times, first, last, interval), recorded, interval)


def clamp_to_listing(first: int, last: int, interval: str, info: SymbolInfo | None) -> Gap:
    """Futures: nothing before the onboard bar, nothing from a passed delivery on (a settled
    contract's stream has ended; its absence after delivery is not a hole)."""
    if info is None:
        return first, last
    if info.onboard_ms is not None:
        first = max(first, align_down(info.onboard_ms, interval))
    if info.delivery_ms is not None:
        last = min(last, align_down(info.delivery_ms - 1, interval))
    return first, last


async def make_plan(
    settings: Settings,
    now_ms: int,
    empty: EmptyRanges,
    archives: dict[str, Archive] | None = None,
    listing: dict[str, SymbolInfo] | None = None,
) -> Plan:
    """The plan; with `archives` (--source vision) whole months and days are one archive page
    each, added to `archives` by page key. `listing` (futures exchangeInfo) bounds each symbol
    to its onboard and delivery dates."""
    streams: list[StreamPlan] = []
    market = settings.market
    for symbol in settings.symbols:
        for interval in settings.intervals:
            first, last = resolve_range(settings, interval, now_ms)
            if market is not Market.SPOT:
                first, last = clamp_to_listing(first, last, interval, (listing or {}).get(symbol))
            if archives is not None:
                stream_plan, keys = plan_vision_stream(
                    symbol, interval, first, last, page_limit=settings.limit, market=market
                )
                streams.append(stream_plan)
                archives.update(keys)
                continue
            missing: list[Gap] | None = None
            if settings.missing_only:
                gaps = await asyncio.to_thread(
                    partial(lake_gaps, market=market), settings.lake, symbol, interval, first, last
                )
                missing = subtract(gaps, empty.get(symbol, interval, market), interval)
            streams.append(
                plan_stream(
                    symbol,
                    interval,
                    first,
                    last,
                    page_limit=settings.limit,
                    missing=missing,
                    market=market,
                )
            )
    return Plan(tuple(streams), settings.limit, market)


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
    ready: dict[str, tuple[list[Kline], list[Gap]]] = field(init=False, default_factory=dict)
    rows: list[Kline] = field(init=False, default_factory=list)
    # confirmed-empty ranges of the pages moved into self.rows
    halts: list[Gap] = field(init=False, default_factory=list)
    # (page key, end index in self.rows)
    page_ends: list[tuple[str, int]] = field(init=False, default_factory=list)
    wakeup: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self, pages: Sequence[Page]) -> None:
        self.order = [p.key for p in pages]
        self.symbol, self.interval = pages[0].symbol, pages[0].interval
        self.market = pages[0].market

    def complete(self, page: Page, rows: list[Kline], halts: list[Gap]) -> None:
        self.ready[page.key] = (rows, halts)
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            while self.next < len(self.order) and self.order[self.next] in self.ready:
                key = self.order[self.next]
                rows, halts = self.ready.pop(key)
                self.rows.extend(reversed(rows) if self.newest_first else rows)
                self.halts.extend(halts)
                self.page_ends.append((key, len(self.rows)))
                self.next += 1
                self.slots.release()
            final = self.next == len(self.order) or self.fetching_done.is_set()
            while len(self.rows) >= self.batch_rows or (final and self.page_ends):
                n = min(len(self.rows), self.batch_rows)
                if n or self.halts:  # a page's halts go with the first batch sent after it
                    await self._send(self.rows[:n], self.halts)
                    self.halts = []
                done = [key for key, end in self.page_ends if end <= n]
                self.page_ends = [(k, end - n) for k, end in self.page_ends if end > n]
                del self.rows[:n]
                await asyncio.to_thread(self.checkpoint.mark, done)
            if final:
                return
            await self.wakeup.wait()
            self.wakeup.clear()

    async def _send(self, rows: list[Kline], halts: list[Gap]) -> None:
        batches = list(make_batches(rows))  # each ascending (make_batches sorts)
        ordered = list(reversed(batches)) if self.newest_first else batches
        for batch in with_empty(self.symbol, self.interval, ordered, halts, self.market):
            await send_until_durable(self.sink, batch, self.source, patience=SINK_PATIENCE)
            self.result.batches_sent += 1
            self.result.rows_sent += len(batch.rows)
        if halts:  # durable in the lake now; the local cache only spares --missing-only requests
            await asyncio.to_thread(self.empty.add, self.symbol, self.interval, halts, self.market)


def page_halts(page: Page, rows: Sequence[Kline]) -> list[Gap]:
    """Open times a complete page lacks: Binance has no klines there (exchange halts)."""
    last_open = align_down(page.end, page.interval)
    return confirmed_empty((r.open_time for r in rows), page.start, last_open, page.interval)


async def run_backfill(
    settings: Settings,
    reporter: Reporter,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    on_used_weight: Callable[[int], None] | None = None,
    sink: Sink | None = None,
) -> RunResult:
    started = time.monotonic()
    symbols = tuple(s.upper() for s in settings.symbols)
    settings = replace(settings, symbols=symbols)
    market = settings.market
    budget = WeightBudget(limit=spec(market).weight_limit_1m, share=settings.budget_share)
    empty = EmptyRanges(settings.state_dir)
    async with BinanceRest(
        settings.rest_url,
        budget=budget,
        transport=transport,
        on_used_weight=on_used_weight,
        market=market,
    ) as rest:
        info = await check_symbols(rest, symbols)
        now_ms = info.get("serverTime")
        if type(now_ms) is not int:
            now_ms = await rest.server_time()
        weight_limit = request_weight_limit(info)
        if weight_limit is not None:
            budget.set_limit(*weight_limit)
        archives: dict[str, Archive] | None = {} if settings.source == "vision" else None
        listing = parse_exchange_info(info, market)
        plan = await make_plan(settings, now_ms, empty, archives, listing)
        checkpoint = Checkpoint(
            settings.state_dir,
            plan_identity(settings.sink_target, settings.limit, settings.source),
        )
        done = checkpoint.load()
        own_sink = sink is None
        sink = sink if sink is not None else make_sink(settings.topic, settings.lake)
        todo = [p for p in plan.pages_to_emit(sink.history_newest_first) if p.key not in done]
        result = RunResult(plan, pages_skipped=plan.page_count - len(todo), budget=budget.budget)
        reporter.planned(plan, result.pages_skipped, budget.budget, settings)
        if settings.dry_run:
            if own_sink:
                await sink.close()
            return _finish(result, rest, started, reporter)
        vision = (
            VisionFetcher(
                VisionClient(settings.vision_url), rest, archives, page_limit=settings.limit
            )
            if archives is not None
            else None
        )
        try:
            await _fetch_all(
                todo,
                rest=rest,
                sink=sink,
                checkpoint=checkpoint,
                empty=empty,
                settings=settings,
                result=result,
                reporter=reporter,
                fetch_page=vision.fetch if vision is not None else None,
            )
        finally:
            if vision is not None:
                await vision.client.aclose()
            checkpoint.close()
            if own_sink:
                await sink.close()
        return _finish(result, rest, started, reporter)


def _finish(result: RunResult, rest: BinanceRest, started: float, reporter: Reporter) -> RunResult:
    result.requests = rest.counters.requests
    result.retries = rest.counters.retries
    result.weight_charged = rest.counters.weight_charged
    result.max_used_weight = rest.counters.max_used_weight
    result.elapsed_s = time.monotonic() - started
    reporter.finished(result)
    return result


async def _fetch_all(
    todo: list[Page],
    *,
    rest: BinanceRest,
    sink: Sink,
    checkpoint: Checkpoint,
    empty: EmptyRanges,
    settings: Settings,
    result: RunResult,
    reporter: Reporter,
    fetch_page: Callable[[Page], Awaitable[list[Kline]]] | None = None,
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
                    rows = [k async for part in pages for k in part]
            except Exception as exc:  # stop taking pages; the first failure is raised below
                failures.append(exc)
                slots.release()
                return
            rows = [r for r in rows if page.start <= r.open_time <= page.end]
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
