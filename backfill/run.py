"""The backfill run: check the symbols, plan, fetch pages concurrently under the weight budget
(backfill/fetch_pool.py), emit each stream in page order through the sink, checkpoint what the
sink made durable (backfill/emitter.py).

    settings.py    Settings, validated when built (BadInput: exit 2)
    span.py        the open times a stream covers (pure)
    exchange.py    exchangeInfo: listed symbols, the announced weight limit
    plan.py        ranges -> pages (pure); vision.py: archives as pages
    fetch_pool.py  workers fetching pages; emitter.py: pages -> batches -> sink -> checkpoint
    result.py      RunResult and the Reporter protocol (progress.py prints)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from backfill.checkpoint import Checkpoint
from backfill.exchange import check_symbols, request_weight_limit
from backfill.fetch_pool import fetch_all
from backfill.plan import (
    Plan,
    StreamPlan,
    plan_identity,
    plan_stream,
)
from backfill.result import Reporter, RunResult
from backfill.settings import Settings
from backfill.span import clamp_to_listing, resolve_range
from backfill.vision import VisionFetcher, plan_vision_stream
from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.backends.lake import open_store, read_lines
from klinelake.backends.sink import Sink, make_sink
from klinelake.binance.rest import BinanceRest
from klinelake.binance.vision_client import VisionClient
from klinelake.binance.weight import WeightBudget
from klinelake.core.exchange_info import SymbolInfo, parse_exchange_info
from klinelake.core.halts import subtract
from klinelake.core.halts_writer import read_empty
from klinelake.core.intervals import (
    Gap,
    find_gaps,
)
from klinelake.core.markets import Market, spec
from klinelake.core.row import open_time_of_line
from klinelake.core.symbols import object_name
from klinelake.core.vision import Archive


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


async def run_backfill(
    settings: Settings,
    reporter: Reporter,
    *,
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
            await fetch_all(
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
