"""The one publish path of both publishers (streamer, backfill): Binance REST → sink, once.

- `send_until_durable`: the send policy. A sink's `send()` returns once the batch is durable;
  a failure is retried with capped, fully jittered exponential backoff. Publishers never lose a
  closed kline, so the default patience is forever (the streamer's spool holds the rows); a
  caller that can stop cleanly (the backfill: its checkpoint holds the progress, a re-run
  resumes) passes a `Patience` with a bounded number of attempts and a test for permanent
  errors, which end the call at once.
- `fetch_range` / `next_page_start`: the REST range pager. Every kline in an inclusive
  open-time range, one `GET /api/v3/klines` page at a time (binance-spot-api.md §6); the pure
  `next_page_start` decides where the next request starts, or that the range is complete.
- `confirmed_empty`: halt inference. What a complete answer for a range lacks does not exist on
  Binance (an exchange halt or outage): those open times are confirmed empty.
- `check_listed`: symbols checked against exchangeInfo (-1121 names the unknown one).

Where to build the sink is `klinelake.sink.make_sink`. This module imports no network client
(the REST client is a protocol; its -1121 error type is imported only when checking symbols).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
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

from klinelake.intervals import Gap, find_gaps, grid_is_documented, next_open_time

if TYPE_CHECKING:
    from klinelake.contract import KlineBatch, Source
    from klinelake.row import Kline
    from klinelake.sink import Sink

PAGE_LIMIT = 1000  # GET /api/v3/klines `limit` maximum
SYMBOLS_PER_REQUEST = 100  # keeps exchangeInfo's `symbols=[...]` query short
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
    batch: KlineBatch,
    source: Source,
    *,
    patience: Patience = FOREVER,
    on_retry: OnRetry | None = None,
) -> None:
    """Return once `sink` made `batch` durable (the one send policy of both publishers)."""
    await retry_until_done(lambda: sink.send(batch, source), patience=patience, on_retry=on_retry)


# --- the REST range pager -------------------------------------------------------------------------


class KlineSource(Protocol):
    async def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = PAGE_LIMIT
    ) -> list[Kline]: ...


def next_page_start(
    rows: Sequence[Kline], *, returned: int, last: int, limit: int, interval: str
) -> int | None:
    """Where the next request of a range ending at `last` starts, after a page that returned
    `returned` klines of which `rows` lie in the range; None when the range is complete (a short
    page: Binance has nothing more; or the range's end reached)."""
    if returned < limit or not rows:
        return None
    start = next_open_time(rows[-1].open_time, interval)
    return start if start <= last else None


async def fetch_range(
    rest: KlineSource,
    symbol: str,
    interval: str,
    first: int,
    last: int,
    *,
    limit: int = PAGE_LIMIT,
) -> AsyncIterator[list[Kline]]:
    """Every kline with `first <= open_time <= last`, a page at a time (pages may be empty)."""
    start: int | None = first
    while start is not None and start <= last:
        page = await rest.klines(symbol, interval, start, last, limit)
        rows = [k for k in page if start <= k.open_time <= last]
        yield rows
        start = next_page_start(rows, returned=len(page), last=last, limit=limit, interval=interval)


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


async def check_listed(rest: ExchangeInfoSource, symbols: Sequence[str]) -> dict[str, Any]:
    """exchangeInfo for `symbols` (one request per 100); raises `UnlistedSymbols` naming exactly
    the unknown ones (a -1121 for a group is narrowed down symbol by symbol). Other errors (e.g.
    Binance unreachable) propagate: the caller decides whether to start without the check."""
    from klinelake.binance_rest import UnknownSymbol  # the HTTP client only when checking

    merged: dict[str, Any] = {}
    listed: set[Any] = set()
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
        entries = [s for s in info.get("symbols", []) if isinstance(s, dict)]
        merged["symbols"].extend(entries)
        listed.update(s.get("symbol") for s in entries)
    missing = [s for s in symbols if s not in listed]
    if missing:
        raise UnlistedSymbols(missing)
    return merged
