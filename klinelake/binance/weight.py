"""The REST weight budget: stay under a share of Binance's request-weight limit, never earn a ban.

Binance charges every REST request a weight (klines 2, exchangeInfo 20, time 1) against a
per-IP counter of 6000 per minute and reports the counter in `X-MBX-USED-WEIGHT-1M` on every
response, errors included (binance-spot-api.md §8). Over the limit it answers 429 with
`Retry-After`; a client that keeps going is banned with 418 (2 minutes up to 3 days).

Two layers, as in h11/websockets (sans-I/O core, thin async adapter):

- `WeightLedger` is pure: the caller passes the time in. `try_reserve(now, w)` reserves `w`
  before a request is sent, so concurrent requests can never add up past the budget; it counts
  the weight the server reported for the current window plus what is in flight.
  `on_response(now, w, header)` releases the reservation and learns the server's counter.
- `WeightBudget` is the asyncio adapter shared by every request of a process: `acquire(w)`
  waits until the ledger allows the request (the window rolls over, a response frees a
  reservation, a 429 pause ends) and raises `Banned` while a 418 ban lasts.

Windows are fixed minutes (the counter resets at wall-clock minute boundaries: [obs] in
binance-spot-api.md §8, JKorf/Binance.Net#288). Because our clock and the server's are not the
same clock, a new window is trusted only `grace_ms` after its boundary, and a header read just
after a boundary counts against the new window (an overestimate, never an underestimate).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from klinelake.core.binance_limits import WEIGHT_WINDOW_S
from klinelake.core.markets import SPECS, Market

WEIGHT_LIMIT_1M = SPECS[Market.SPOT].weight_limit_1m  # the default budget: spot's

WINDOW_MS = int(WEIGHT_WINDOW_S * 1000)
DEFAULT_SHARE = 0.8

# Request weights (binance-spot-api.md §6, §7).
WEIGHT_KLINES = 2
WEIGHT_EXCHANGE_INFO = 20
WEIGHT_TIME = 1


class Banned(Exception):
    """A 418 ban is in force until `until_ms`: send nothing before then."""

    def __init__(self, until_ms: int) -> None:
        self.until_ms = until_ms
        super().__init__(f"IP banned until {until_ms}")


def budget_for(limit: int, share: float) -> int:
    if not 0 < share <= 1:
        raise ValueError(f"budget share must be in (0, 1], got {share}")
    return max(1, int(limit * share))


@dataclass
class WeightLedger:
    """Pure bookkeeping of one process's use of the per-IP weight window."""

    limit: int = WEIGHT_LIMIT_1M
    share: float = DEFAULT_SHARE
    window_ms: int = WINDOW_MS
    grace_ms: int = 1_000

    def __post_init__(self) -> None:
        self.budget = budget_for(self.limit, self.share)
        self.window = -1  # index (now // window_ms) of the window `used` belongs to
        self.used = 0  # the highest counter the server reported for that window
        # Weight of requests that failed without a header in that window: the server may have
        # charged them after any counter we saw, so they are added on top (never lost).
        self.blind = 0
        self.prev_used = 0  # the same for the window before (trusted reset only after grace)
        self.in_flight = 0  # reserved by requests sent and not yet answered
        self.paused_until_ms = 0  # 429 Retry-After
        self.banned_until_ms = 0  # 418
        self.charged = 0  # total weight of every request we sent (a counter)
        self.max_header = 0  # highest X-MBX-USED-WEIGHT-1M seen

    def _roll(self, now_ms: int) -> None:
        window = now_ms // self.window_ms
        if window > self.window:
            self.prev_used = self.used + self.blind if window == self.window + 1 else 0
            self.window = window
            self.used = 0
            self.blind = 0

    def used_now(self, now_ms: int) -> int:
        """What the server's counter may be at `now_ms`, from the responses seen so far.

        A response received in window k reports the counter of window k or of an earlier one
        (the server handled it before we read it), so attributing it to k never underestimates
        k. For `grace_ms` after a boundary the old window's count still applies, in case the
        server's clock is behind ours.
        """
        self._roll(now_ms)
        if now_ms - self.window * self.window_ms < self.grace_ms:
            return max(self.used + self.blind, self.prev_used)
        return self.used + self.blind

    def try_reserve(self, now_ms: int, weight: int) -> int | None:
        """Reserve `weight` and return None, or return the time (ms) worth trying again.

        Raises `Banned` while a 418 ban lasts. A single request heavier than the whole budget
        is allowed alone in a fresh window (otherwise it could never be sent).
        """
        if now_ms < self.banned_until_ms:
            raise Banned(self.banned_until_ms)
        if now_ms < self.paused_until_ms:
            return self.paused_until_ms
        total = self.used_now(now_ms) + self.in_flight
        if total + weight <= self.budget or total == 0:
            self.in_flight += weight
            self.charged += weight
            return None
        # Wait for a response to free a reservation, or for the next trusted window.
        trusted = self.window * self.window_ms + self.grace_ms
        return trusted if now_ms < trusted else trusted + self.window_ms

    def on_response(self, now_ms: int, weight: int, used_header: int | None) -> None:
        """Release a reservation; learn the server's counter from the response header.

        Without a header (a network error: the server may or may not have charged us) the
        weight is counted as used.
        """
        self.in_flight = max(0, self.in_flight - weight)
        self._roll(now_ms)
        if used_header is None:
            self.blind += weight
        else:
            self.max_header = max(self.max_header, used_header)
            self.used = max(self.used, used_header)

    def cancel(self, weight: int) -> None:
        """A reservation whose request was never sent."""
        self.in_flight = max(0, self.in_flight - weight)
        self.charged -= weight

    def on_rate_limited(self, now_ms: int, retry_after_s: float) -> None:
        """429: everyone waits `Retry-After` (the 429's own used-weight header, learned in
        `on_response`, then decides whether the window is full)."""
        self.paused_until_ms = max(self.paused_until_ms, now_ms + int(retry_after_s * 1000))

    def on_banned(self, until_ms: int) -> None:
        """418: nothing is sent until `until_ms`."""
        self.banned_until_ms = max(self.banned_until_ms, until_ms)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class WeightBudget:
    """The ledger shared by all concurrent requests of one process (asyncio)."""

    def __init__(
        self,
        limit: int = WEIGHT_LIMIT_1M,
        share: float = DEFAULT_SHARE,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        grace_ms: int = 1_000,
        window_ms: int = WINDOW_MS,
    ) -> None:
        self.ledger = WeightLedger(limit, share, window_ms=window_ms, grace_ms=grace_ms)
        self.clock = clock
        self._changed: asyncio.Condition | None = None
        self.waits = 0  # how often a request had to wait for the budget (a counter)

    @property
    def budget(self) -> int:
        return self.ledger.budget

    @property
    def banned_until_ms(self) -> int:
        return self.ledger.banned_until_ms

    def set_limit(self, limit: int, window_ms: int = WINDOW_MS) -> None:
        """The limit the server announces (exchangeInfo `rateLimits`: REQUEST_WEIGHT, 6000 per
        1 MINUTE on Binance)."""
        self.ledger.limit = limit
        self.ledger.budget = budget_for(limit, self.ledger.share)
        self.ledger.window_ms = window_ms

    def _cond(self) -> asyncio.Condition:
        # Created lazily inside the running loop (nothing async happens in a constructor).
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def acquire(self, weight: int) -> None:
        """Wait until `weight` fits the budget and reserve it; raise `Banned` during a ban."""
        cond = self._cond()
        async with cond:
            waited = False
            while True:
                now = self.clock()
                wake = self.ledger.try_reserve(now, weight)
                if wake is None:
                    return
                if not waited:
                    self.waits += 1
                    waited = True
                timeout = max(0.001, (wake - now) / 1000)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cond.wait(), timeout)

    async def _notify(self) -> None:
        cond = self._cond()
        async with cond:
            cond.notify_all()

    async def release(self, weight: int, used_header: int | None) -> None:
        self.ledger.on_response(self.clock(), weight, used_header)
        await self._notify()

    async def cancel(self, weight: int) -> None:
        self.ledger.cancel(weight)
        await self._notify()

    async def rate_limited(self, retry_after_s: float) -> None:
        self.ledger.on_rate_limited(self.clock(), retry_after_s)
        await self._notify()

    async def banned(self, until_ms: int) -> None:
        self.ledger.on_banned(until_ms)
        await self._notify()
