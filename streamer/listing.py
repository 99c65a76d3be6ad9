"""Which streams to add and retire as the market changes (pure; the service does the I/O).

The streamer re-reads exchangeInfo every `--exchange-info-interval` (weight 1 on futures, 20 on
spot: binance-futures-api.md §7) and, for a dated contract, also wakes at its `deliveryDate`, so
a settling contract is retired when its last kline is due rather than reported as a stall.

- add: a symbol the `--symbols` set wants that is TRADING and not streamed (a new listing, a
  symbol back from BREAK). Its history before the first live kline is the backfill's job.
- retire: a streamed symbol that is no longer listed, no longer TRADING (BREAK, delisting,
  settlement), past its delivery, or no longer matched by the selector. Its streams are
  unsubscribed on the live connection (no reconnect), dropped from stall detection, repaired
  over REST up to their end, and their end is logged and shown in health.
- A renamed symbol (NANO → XNO) is one retirement and one new listing: a new stream (a new
  object in the lake), never a continuation of the old one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from klinelake.core.exchange_info import SymbolInfo
from klinelake.core.intervals import next_open_time
from klinelake.core.selector import SymbolSet


@dataclass(frozen=True, slots=True)
class Retirement:
    symbol: str
    reason: str  # "DELIVERED", "CLOSE", "BREAK", "not listed", "no longer selected", ...
    end_ms: int  # no kline opens at or after this (server time)


def plan_changes(
    symbols: SymbolSet,
    listing: Mapping[str, SymbolInfo],
    active: Iterable[str],
    now_ms: int,
) -> tuple[list[str], list[Retirement]]:
    """(symbols to add, symbols to retire) given the current exchangeInfo."""
    active = set(active)
    add = [
        s
        for s in symbols.resolve(listing)
        if s not in active
        and s in listing
        and listing[s].trading
        and not listing[s].delivered_by(now_ms)
    ]
    retire: list[Retirement] = []
    for s in sorted(active):
        info = listing.get(s)
        if info is None:
            retire.append(Retirement(s, "not listed", now_ms))
        elif info.delivered_by(now_ms):
            assert info.delivery_ms is not None
            retire.append(Retirement(s, info.status or "DELIVERED", info.delivery_ms))
        elif not info.trading:
            retire.append(Retirement(s, info.status, now_ms))
        elif symbols.is_selector and not symbols.matches(info):
            retire.append(Retirement(s, "no longer selected", now_ms))
    return add, retire


def next_delivery(
    listing: Mapping[str, SymbolInfo], active: Iterable[str], now_ms: int
) -> int | None:
    """The earliest delivery still ahead among the active symbols (when to look again)."""
    times = [
        info.delivery_ms
        for s in active
        if (info := listing.get(s)) is not None
        and info.delivery_ms is not None
        and info.delivery_ms > now_ms
    ]
    return min(times, default=None)


def listing_wait_s(now_ms: int, due_ms: int | None, interval_s: float, clock_speed: float) -> float:
    """Real seconds until exchangeInfo is read again: the interval, or less when a contract
    settles sooner (`due_ms`, server time, run at `clock_speed`): wake when it settles, not a
    period later; never less than 50 ms."""
    if due_ms is None:
        return interval_s
    return min(interval_s, max(0.05, (due_ms - now_ms) / 1000 / max(clock_speed, 1e-9)))


def end_step(
    logged: bool, final_repair: bool, last_open_time: int, interval: str, *, now_ms: int,
    sender_settled: bool,
) -> str:  # fmt: skip
    """What to do next for a retired stream: "wait" (its last kline has not closed, or its
    final repair is still sending), "repair" (once more after the close: a delisting mid-kline
    still closes that kline), "log" (its real end is published: log it once)."""
    if logged or now_ms < next_open_time(last_open_time, interval):
        return "wait"
    if not final_repair:
        return "repair"
    return "log" if sender_settled else "wait"
