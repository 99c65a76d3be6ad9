"""The one publish path of both publishers (streamer, backfill): Binance REST → sink, once.

- `send_until_durable`: the send policy. A sink's `send()` returns once the batch is durable;
  a failure is retried with capped, fully jittered exponential backoff. Publishers never lose a
  closed kline, so the default patience is forever (the streamer's spool holds the rows); a
  caller that can stop cleanly (the backfill: its checkpoint holds the progress, a re-run
  resumes) passes a `Patience` with a bounded number of attempts and a test for permanent
  errors, which end the call at once.
- `fetch_range` / `next_page_start`: the REST range pager. Every kline in an inclusive
  open-time range, one `klines` page at a time (binance-spot-api.md §6, binance-futures-api.md
  §6); the pure `next_page_start` decides where the next request starts, or that the range is
  complete. Spot and USD-M answer from `startTime` on, so a short page ends the range. COIN-M
  answers the NEWEST bars of a window of at most 200 days, so each request's window is bounded
  (`klinelake.core.markets.window_for_page`) and a short page only ends that window. `has_klines`:
  whether a range has any kline at all (the streamer's silent-stream check), on the same pager.
- `confirmed_empty`: halt inference. What a complete answer for a range lacks does not exist on
  Binance (an exchange halt or outage): those open times are confirmed empty.
- `check_listed`: symbols checked against exchangeInfo, per market (spot: `symbols=[...]`, at
  most 100 a request, -1121 names the unknown one; futures: one parameterless request lists
  every symbol, binance-futures-api.md §7). `read_listing`: the exchangeInfo to re-read a
  symbol set's listing from (the same per-market rule, and never a -1121 for a delisted one).

Where to build the sink is `klinelake.backends.sink.make_sink`. This module imports no network
client (the REST client is a protocol; its -1121 error type is imported only when checking symbols).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from klinelake.core.intervals import (
    Gap,
    align_down,
    count_between,
    find_gaps,
    grid_is_documented,
    next_open_time,
)
from klinelake.core.markets import Market, spec, window_for_page
from klinelake.core.row import open_time_at, open_times

if TYPE_CHECKING:
    from klinelake.backends.sink import Sink
    from klinelake.core.contract import KlineBatch, Source
    from klinelake.core.row import Kline

PAGE_LIMIT = 1000  # GET /api/v3/klines `limit` maximum (spot)
SYMBOLS_PER_REQUEST = 100  # keeps spot exchangeInfo's `symbols=[...]` query short
T = TypeVar("T")


# --- send until durable ---------------------------------------------------------------------------


def _never_permanent(exc: BaseException) -> bool:
    return False


@dataclass(frozen=True)
class Patience:
    """How long a caller waits for a sink. The delay before retry n is uniform in
    [0, min(cap_s, first_s · 2^n)] (full jitter: many streams retrying at once spread out)."""

    attempts: int | None = None  # None: until durable (or cancelled)
    first_s: float = 0.2
    cap_s: float = 30.0
    permanent: Callable[[BaseException], bool] = _never_permanent  # True: give up at once


FOREVER = Patience()

OnRetry = Callable[[BaseException, float], None]  # (the failure, seconds until the next try)


async def retry_until_done(
    call: Callable[[], Awaitable[T]],
    *,
    patience: Patience = FOREVER,
    on_retry: OnRetry | None = None,
) -> T:
    """`await call()` until it returns, under `patience`; the last failure is raised only when
    `patience` gives up (a permanent error, or the attempts spent). Cancellation passes through."""

    def retryable(exc: BaseException) -> bool:
        return isinstance(exc, Exception) and not patience.permanent(exc)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(exc, state.next_action.sleep)

    retrying = AsyncRetrying(
        retry=retry_if_exception(retryable),
        stop=stop_never if patience.attempts is None else stop_after_attempt(patience.attempts),
        wait=wait_random_exponential(multiplier=patience.first_s, max=patience.cap_s),
        before_sleep=before_sleep,
        sleep=asyncio.sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            result = await call()
        if not attempt.retry_state.outcome or not attempt.retry_state.outcome.failed:
            return result
    raise AssertionError("unreachable: tenacity either returns, retries or raises")


async def send_until_durable(
    sink: Sink,
    batch: KlineBatch | Sequence[KlineBatch],
    source: Source,
    *,
    patience: Patience = FOREVER,
    on_retry: OnRetry | None = None,
) -> None:
    """Return once `sink` made `batch` (or consecutive batches of one stream, `Sink.send_all`)
    durable: the one send policy of both publishers."""
    if isinstance(batch, Sequence):
        batches = batch
        await retry_until_done(
            lambda: sink.send_all(batches, source), patience=patience, on_retry=on_retry
        )
        return
    one = batch
    await retry_until_done(lambda: sink.send(one, source), patience=patience, on_retry=on_retry)


# --- the REST range pager -------------------------------------------------------------------------


class KlineSource(Protocol):
    async def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = PAGE_LIMIT
    ) -> Sequence[Kline]: ...


def next_page_start(
    rows: Sequence[Kline],
    *,
    returned: int,
    last: int,
    limit: int,
    interval: str,
    window_end: int | None = None,
) -> int | None:
    """Where the next request of a range ending at `last` starts, after a page that returned
    `returned` klines of which `rows` lie in the range; None when the range is complete.

    `window_end` is the `endTime` the request was bounded to (COIN-M: `window_for_page`; None
    or `last` elsewhere). A full page continues after its last kline. A short page means
    Binance has nothing more up to `window_end`: the range is complete when that window
    reached `last` (spot, USD-M), else it continues after the window (COIN-M: a halt inside a
    window, or a window that ends before the range does)."""
    if returned >= limit and rows:
        start = next_open_time(open_time_at(rows, -1), interval)
    elif window_end is not None and window_end < last:
        start = next_open_time(align_down(window_end, interval), interval)
    else:
        return None
    return start if start <= last else None


def within(rows: Sequence[Kline], first: int, last: int) -> Sequence[Kline]:
    """The rows (ascending by open_time) with `first <= open_time <= last`; the rows themselves
    when all are (a page inside its range, the common case: no per-row pass)."""
    if not rows or (first <= open_time_at(rows, 0) and open_time_at(rows, -1) <= last):
        return rows
    times = open_times(rows)
    return rows[bisect.bisect_left(times, first) : bisect.bisect_right(times, last)]


async def fetch_range(
    rest: KlineSource,
    symbol: str,
    interval: str,
    first: int,
    last: int,
    *,
    limit: int = PAGE_LIMIT,
    market: Market | str = Market.SPOT,
) -> AsyncGenerator[Sequence[Kline], None]:
    """Every kline with `first <= open_time <= last`, a page at a time (pages may be empty).
    `market` decides each request's window (COIN-M's 200-day, newest-bars rule)."""
    start: int | None = first
    while start is not None and start <= last:
        window_end = window_for_page(market, start, last, interval, limit)
        page = await rest.klines(symbol, interval, start, window_end, limit)
        rows = within(page, start, window_end)
        yield rows
        start = next_page_start(
            rows, returned=len(page), last=last, limit=limit, interval=interval,
            window_end=window_end,
        )  # fmt: skip


async def has_klines(
    rest: KlineSource,
    symbol: str,
    interval: str,
    first: int,
    last: int,
    *,
    market: Market | str = Market.SPOT,
) -> bool:
    """Does REST have any kline with `first <= open_time <= last` (a silent stream's question)?
    Pages with the most bars the market's least weight buys (spot 1000 for 2, futures 99 for
    1), and stops at the first kline: on COIN-M a one-bar request would ask only the first bar
    of the range (its window is bounded to `limit` bars), so a halt ending inside the range
    would look like no kline at all."""
    s = spec(market)
    cheapest = s.weight_for_limit(1)
    per_request = max(n for n in range(1, s.max_limit + 1) if s.weight_for_limit(n) == cheapest)
    limit = max(1, min(per_request, count_between(first, align_down(last, interval), interval)))
    pages = fetch_range(rest, symbol, interval, first, last, limit=limit, market=market)
    async with contextlib.aclosing(pages):
        async for page in pages:
            if page:
                return True
    return False


# --- halt inference -------------------------------------------------------------------------------


def confirmed_empty(present: Iterable[int], first: int, last: int, interval: str) -> list[Gap]:
    """Open times in [first, last] that a complete answer (`present`, ascending) lacks: Binance
    has no klines there. For an interval whose grid Binance does not document (`3d`), holes are
    inferred only when the range has no kline at all (our grid may not be Binance's)."""
    times = list(present)
    if times and not grid_is_documented(interval):
        return []
    return find_gaps(times, first, last, interval)


# --- symbols against exchangeInfo -----------------------------------------------------------------


class ExchangeInfoSource(Protocol):
    async def exchange_info(self, symbols: list[str] | None = None) -> dict[str, Any]: ...


class UnlistedSymbols(Exception):
    """Binance does not list these symbols (-1121, or absent from exchangeInfo)."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        super().__init__(", ".join(self.symbols))


async def check_listed(
    rest: ExchangeInfoSource, symbols: Sequence[str], market: Market | str = Market.SPOT
) -> dict[str, Any]:
    """exchangeInfo for `symbols` of `market`; raises `UnlistedSymbols` naming exactly the
    unknown ones. Spot: one request per 100 symbols (a -1121 for a group is narrowed down
    symbol by symbol). Futures exchangeInfo takes no parameters and lists every symbol at
    weight 1 (binance-futures-api.md §7): one request, filtered here. The answer keeps the
    first response's top level (serverTime, rateLimits) and only the asked-for symbols.
    Other errors (e.g. Binance unreachable) propagate: the caller decides whether to start
    without the check."""
    if not symbols:
        return {"symbols": []}
    if spec(market).is_futures:
        info = await rest.exchange_info(None)
        return _only_listed(info, symbols)
    from klinelake.binance.rest import UnknownSymbol  # the HTTP client only when checking

    merged: dict[str, Any] = {}
    for i in range(0, len(symbols), SYMBOLS_PER_REQUEST):
        chunk = list(symbols[i : i + SYMBOLS_PER_REQUEST])
        try:
            info = await rest.exchange_info(chunk)
        except UnknownSymbol:
            unknown = []
            for symbol in chunk if len(chunk) > 1 else ():
                try:
                    await rest.exchange_info([symbol])
                except UnknownSymbol:
                    unknown.append(symbol)
            raise UnlistedSymbols(unknown or chunk) from None
        if not merged:
            merged = dict(info)  # serverTime, rateLimits: from the first answer
            merged["symbols"] = []
        merged["symbols"].extend(s for s in info.get("symbols", []) if isinstance(s, dict))
    return _only_listed(merged, symbols)


def _only_listed(info: dict[str, Any], symbols: Sequence[str]) -> dict[str, Any]:
    """`info` with only the entries of `symbols`; `UnlistedSymbols` if any is absent."""
    wanted = set(symbols)
    entries = [
        s for s in info.get("symbols", []) if isinstance(s, dict) and s.get("symbol") in wanted
    ]
    listed = {s["symbol"] for s in entries}
    missing = [s for s in symbols if s not in listed]
    if missing:
        raise UnlistedSymbols(missing)
    return {**info, "symbols": entries}


async def read_listing(
    rest: ExchangeInfoSource, symbols: Sequence[str] | None, market: Market | str = Market.SPOT
) -> dict[str, Any]:
    """exchangeInfo to read the listing of `symbols` from (None: every symbol, as a selector
    needs). Futures: always the one parameterless request (weight 1). Spot: `symbols=[...]`
    when at most 100 (weight 20 either way), else everything; a -1121 (one of them delisted)
    asks for everything, so the caller sees the delisting instead of an error."""
    if spec(market).is_futures or symbols is None or len(symbols) > SYMBOLS_PER_REQUEST:
        return await rest.exchange_info(None)
    from klinelake.binance.rest import UnknownSymbol  # the HTTP client only when asking

    try:
        return await rest.exchange_info(list(symbols))
    except UnknownSymbol:
        return await rest.exchange_info(None)
