"""The market as it changes: listings, delistings and deliveries (futures) while streaming.

exchangeInfo is re-read every `exchange_info_interval_s` (and at the next delivery); the pure
`streamer.listing.plan_changes` says which symbols to add and which streams to retire. A new
symbol is subscribed on a connection with room (no reconnect), a retired stream unsubscribed
and repaired up to its end.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from klinelake.core.exchange_info import SymbolInfo, parse_exchange_info
from klinelake.core.intervals import align_down
from klinelake.core.publish import read_listing
from klinelake.core.selector import SymbolSet
from klinelake.logs import log_event
from streamer.backoff import Backoff
from streamer.config import StreamSpec
from streamer.connection import StreamRef
from streamer.listing import Retirement, end_step, listing_wait_s, next_delivery, plan_changes
from streamer.shards import slot_with_room
from streamer.slots import start_slot

if TYPE_CHECKING:
    from streamer.service import Service

log = logging.getLogger("streamer")


def symbol_set(svc: Service) -> SymbolSet:
    s = svc.settings
    if s.symbol_set is not None:
        return s.symbol_set
    return SymbolSet(s.market, tuple(dict.fromkeys(spec.symbol for spec in s.streams)))


async def read_exchange_listing(svc: Service, rest: Any) -> dict[str, SymbolInfo] | None:
    """exchangeInfo now (spot: only our symbols unless a selector needs them all; futures
    always lists every symbol at weight 1); None if Binance cannot be asked."""
    symbols = symbol_set(svc)
    wanted = None if symbols.is_selector else sorted(set(symbols.symbols) | set(svc.active))
    try:
        info = await asyncio.wait_for(read_listing(rest, wanted, svc.settings.market), 60)
    except Exception as exc:
        log_event(log, "WARNING", "exchangeInfo unavailable", error=repr(exc)[:300])
        return None
    listing = parse_exchange_info(info, svc.settings.market)
    svc.listing = listing
    return listing


async def initial_streams(svc: Service, rest: Any) -> list[StreamSpec]:
    """The configured streams, or the selector's resolved against exchangeInfo (retried
    until Binance answers: a selector cannot be resolved without it)."""
    s = svc.settings
    symbols = symbol_set(svc)
    backoff = Backoff(1.0, 30.0)
    listing = await read_exchange_listing(svc, rest)
    while listing is None and symbols.is_selector:
        delay = backoff.next_delay()
        log_event(log, "WARNING", "selector waits for exchangeInfo", retry_in_s=delay)
        await asyncio.sleep(delay)
        listing = await read_exchange_listing(svc, rest)
    if not symbols.is_selector:
        return list(s.streams)
    chosen = symbols.resolve(svc.listing)
    log_event(log, "INFO", "selector resolved", symbols=len(chosen), first=chosen[:20])
    return [StreamSpec(sym, iv, s.market) for sym in chosen for iv in s.intervals]


async def listing_loop(svc: Service, rest: Any) -> None:
    """Re-read exchangeInfo every interval (and at the next delivery): add and retire."""
    s = svc.settings
    while True:
        now = svc.clock.now_ms()
        due = next_delivery(svc.listing, svc.active, now)
        await asyncio.sleep(listing_wait_s(now, due, s.exchange_info_interval_s, s.clock_speed))
        listing = await read_exchange_listing(svc, rest)
        if listing is None:
            listing = svc.listing  # deliveries are known in advance; apply them anyway
        if not listing:
            continue
        add, gone = plan_changes(symbol_set(svc), listing, svc.active, svc.clock.now_ms())
        for retirement in gone:
            await retire(svc, retirement)
        if add:
            await add_symbols(svc, add)
        log_ended(svc)


async def retire(svc: Service, r: Retirement) -> None:
    """Unsubscribe the symbol's streams on their live connections (no reconnect), stop
    expecting their klines, repair them up to their end, and record the end."""
    specs = svc.active.pop(r.symbol, [])
    sids = {spec.sid for spec in specs}
    for idx, refs in enumerate(svc.slots):
        leaving = [ref for ref in refs if ref.sid in sids]
        if not leaving:
            continue
        refs[:] = [ref for ref in refs if ref.sid not in sids]
        conn = svc.slot_conns[idx]
        if conn is not None:
            await conn.change("UNSUBSCRIBE", leaving)
    for spec in specs:
        svc.senders[spec.sid].retire(r.end_ms)
        last = align_down(r.end_ms - 1, spec.interval)
        svc.ended[spec.sid] = {
            "reason": r.reason, "end_ms": r.end_ms, "last_open_time": last, "logged": False,
            "final_repair": False,
        }  # fmt: skip
        log_event(
            log, "INFO", "stream retired", stream=spec.sid, reason=r.reason,
            end_ms=r.end_ms, last_open_time=last,
        )  # fmt: skip


def log_ended(svc: Service) -> None:
    """Once a retired stream's last kline has closed, repair it once more (a delisting
    mid-kline: that kline still closes), and once that is published log the real end."""
    now = svc.clock.now_ms()
    for sid, end in svc.ended.items():
        snd = svc.senders[sid]
        settled = snd.idle.is_set() and snd.repair_target is None
        step = end_step(end["logged"], bool(end.get("final_repair")), end["last_open_time"],
                        snd.interval, now_ms=now, sender_settled=settled)  # fmt: skip
        if step == "repair":
            end["final_repair"] = True
            snd.request_repair()
        if step != "log":
            continue
        end["logged"] = True
        # What this streamer published last; if it published nothing (a backfill covered
        # the stream) the exchange's bound stands.
        published = svc.spool.last_published(sid)
        end["published_upto"] = published
        if published is not None:
            end["last_open_time"] = published
        log_event(log, "INFO", "stream ended", stream=sid, reason=end["reason"],
                  last_open_time=end["last_open_time"])  # fmt: skip


async def add_symbols(svc: Service, symbols: list[str]) -> None:
    """New listings: subscribe on connections with room (no reconnect), else a new one."""
    s = svc.settings
    for symbol in symbols:
        specs = [
            StreamSpec(symbol, iv, s.market) for iv in s.intervals or configured_intervals(svc)
        ]
        svc.active[symbol] = specs
        log_event(log, "INFO", "symbol listed: streaming", symbol=symbol, streams=len(specs))
        info = svc.listing.get(symbol)
        onboard = info.onboard_ms if info is not None else None
        for spec in specs:
            svc.ended.pop(spec.sid, None)
            snd = svc.senders.get(spec.sid)
            if snd is None:
                snd = svc.new_sender(spec)
                svc.start_sender(snd)
            else:  # back from BREAK: the same stream continues
                snd.end_ms = None
            if onboard is not None and onboard >= svc.started_at:
                snd.history_from = align_down(onboard, spec.interval)  # a new listing
                snd.request_repair()
            ref = StreamRef(spec.ws_name, spec.sid, spec.interval)
            idx = slot_with_room([len(refs) for refs in svc.slots], s.streams_per_connection)
            if idx is None:
                svc.slots.append([ref])
                svc.slot_reconnects.append(0)
                svc.slot_conns.append(None)
                start_slot(svc, len(svc.slots) - 1)
                continue
            svc.slots[idx].append(ref)
            conn = svc.slot_conns[idx]
            if conn is not None:
                await conn.change("SUBSCRIBE", [ref])


def configured_intervals(svc: Service) -> list[str]:
    return list(dict.fromkeys(spec.interval for spec in svc.settings.streams))
