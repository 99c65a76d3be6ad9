"""The connection slots: each slot keeps one live, subscribed connection for its streams.

At every check the slot describes its connection to `slot_policy.decide` (pure) and does what
it says: reconnect a dead connection, replace an old one before Binance's 24 h cut (the new one
subscribed before the old one closes: no gap), ask REST about one silent stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from klinelake.binance.rest import Blocked
from klinelake.config import EXIT_BLOCKED
from klinelake.core.publish import has_klines
from klinelake.logs import log_event
from streamer.backoff import Backoff
from streamer.connection import Connection, ConnectionFailed
from streamer.slot_policy import Act, Replacement, SlotView, decide
from streamer.stall import RestVerdict

if TYPE_CHECKING:
    from streamer.service import Service

log = logging.getLogger("streamer")

CHECK_EVERY_S = 0.2
REST_RETRY_S = 5.0  # pause before asking REST again about a silent stream after a failure


def start_slot(svc: Service, idx: int) -> None:
    task = asyncio.create_task(run_slot(svc, idx), name=f"slot-{idx}")
    task.add_done_callback(svc.task_done)
    svc.slot_tasks.append(task)


async def open_connection(svc: Service, idx: int, backoff: Backoff | None) -> Connection | None:
    """Open and subscribe a connection for slot `idx`; with `backoff`, retry until it works
    (or we stop); without, try once (a replacement: the old connection still serves)."""
    s = svc.settings
    while not svc.stopping.is_set():
        wait = svc.bucket.wait_time()
        if wait > 0:
            log_event(log, "WARNING", "connection attempts throttled", wait_s=round(wait, 2))
            await asyncio.sleep(wait)
            continue
        svc.bucket.try_take()
        svc.conn_seq += 1
        conn = Connection(
            f"{idx}.{svc.conn_seq}",
            s.ws_url,
            svc.slots[idx],
            svc.on_closed,
            svc.clock,
            stall_grace_ms=s.stall_grace_ms,
            max_params=s.subscribe_params,
            open_timeout_s=s.subscribe_timeout_s,
            counters=svc.counters,
            market=s.market,
            frames_per_s=s.subscribe_frames_per_s,
            keep_leftovers=svc.keep_closed,
        )
        try:
            await conn.open(first_id=svc.conn_seq * 10_000)
        except Blocked as exc:
            svc.fatal(str(exc), EXIT_BLOCKED)
            return None
        except ConnectionFailed as exc:
            log_event(log, "WARNING", "connection failed", conn=conn.conn_id, error=str(exc))
            if backoff is None:
                return None
            await asyncio.sleep(backoff.next_delay())
            continue
        log_event(log, "INFO", "connected", conn=conn.conn_id, streams=len(svc.slots[idx]))
        await conn.sync()
        return conn
    return None


async def after_connect(svc: Service, idx: int) -> None:
    # Re-anchor the clock before repairing: REST repair publishes what the clock says is
    # closed, and a clock run ahead of the exchange's would take the forming kline for one.
    if svc.rest is not None:
        await svc.sync_clock(svc.rest, timeout_s=3.0)  # (REST down: go on, unsynced)
    for ref in svc.slots[idx]:
        svc.senders[ref.sid].request_repair()


async def run_slot(svc: Service, idx: int) -> None:
    """Keep one live connection for slot `idx`: describe it to `slot_policy.decide` at
    every check and do what it says (the policy and its reasons are there)."""
    s = svc.settings
    backoff = Backoff(0.5, 30.0)
    conn: Connection | None = None
    replacing: asyncio.Task[Connection | None] | None = None
    retry_replacement_at = 0.0
    asking: dict[str, asyncio.Task[RestVerdict]] = {}  # REST checks of silent streams
    lost: set[str] = set()
    unknown: set[str] = set()
    loop = asyncio.get_running_loop()
    try:
        while not svc.stopping.is_set():
            if conn is None:
                conn = await open_connection(svc, idx, backoff)
                svc.slot_conns[idx] = conn
                if conn is None:
                    return
                await after_connect(svc, idx)
                continue
            if backoff.attempts and conn.counters.closed_klines:
                backoff.reset()
            for sid, task in list(asking.items()):
                if task.done():
                    del asking[sid]
                    answer = None if task.cancelled() else task.result()
                    if answer is RestVerdict.LOST:
                        lost.add(sid)
                    elif answer is RestVerdict.UNKNOWN:
                        unknown.add(sid)
                    else:
                        unknown.discard(sid)
            now = svc.clock.now_ms()
            tracker = conn.tracker
            assert tracker is not None and conn.read_task is not None
            tracker.on_frames(conn.frames_received, now)
            for sid in tracker.resumed:
                log_event(log, "INFO", "stream resumed", conn=conn.conn_id, stream=sid)
            tracker.resumed.clear()
            verdict = tracker.verdict(now)
            decision = decide(
                SlotView(
                    alive=conn.alive,
                    dead=verdict.dead,
                    lost=tuple(sorted(lost)),
                    unknown=tuple(sorted(unknown)),
                    silent=verdict.silent,
                    asking_rest=frozenset(asking),
                    shutdown_notice=conn.shutdown_notice,
                    age_ms=conn.age_ms(),
                    max_age_ms=int(s.max_conn_age_s * 1000),
                    replacement=_replacement_state(replacing),
                    replacement_retry_due=loop.time() >= retry_replacement_at,
                )
            )
            for sid in decision.ask_rest:
                asking[sid] = asyncio.create_task(ask_rest(svc, conn, sid))
            act = decision.act
            if act in (Act.RECONNECT, Act.SWITCH):
                for task in asking.values():
                    task.cancel()
                asking.clear()
                lost.clear()
                unknown.clear()
            if act is Act.RECONNECT:
                if conn.alive:
                    message = (
                        "connection stalled: every stream silent, reconnecting"
                        if verdict.dead
                        else "reconnecting"
                    )
                    log_event(log, "WARNING", message, conn=conn.conn_id,
                              reason=decision.reason, silent=verdict.silent[:5])  # fmt: skip
                await conn.close()
                svc.slot_reconnects[idx] += 1
                new: Connection | None = None
                if replacing is not None:  # a replacement is on its way: take it
                    new = await replacing
                    replacing = None
                if new is None:
                    await asyncio.sleep(backoff.next_delay())
                    new = await open_connection(svc, idx, backoff)
                conn = new
                svc.slot_conns[idx] = conn
                if conn is None:
                    return
                await after_connect(svc, idx)
                continue
            if act is Act.SWITCH:
                assert replacing is not None
                new = replacing.result()
                replacing = None
                assert new is not None
                old, conn = conn, new
                svc.slot_conns[idx] = conn
                await old.close()  # after the new one is subscribed: no gap
                svc.slot_reconnects[idx] += 1
                await after_connect(svc, idx)
                continue
            if act is Act.RETRY_LATER:
                replacing = None
                retry_replacement_at = loop.time() + backoff.next_delay()
            elif act is Act.REPLACE:
                log_event(log, "INFO", "replacing connection", conn=conn.conn_id,
                          reason=decision.reason)  # fmt: skip
                replacing = asyncio.create_task(open_connection(svc, idx, None))
            assert conn.read_task is not None
            waits: set[asyncio.Future[Any]] = {conn.read_task}
            if replacing is not None:
                waits.add(replacing)
            await asyncio.wait(waits, timeout=CHECK_EVERY_S)
    finally:
        for task in asking.values():
            task.cancel()
        if replacing is not None:
            replacing.cancel()
            with contextlib.suppress(BaseException):
                extra = await replacing
                if extra is not None:
                    await extra.close()
        if conn is not None:
            await conn.close()


async def ask_rest(svc: Service, conn: Connection, sid: str) -> RestVerdict:
    """One stream is silent while the connection delivers: do its klines exist on REST?"""
    tracker, snd = conn.tracker, svc.senders[sid]
    assert tracker is not None and svc.rest is not None
    if not tracker.watches(sid):  # retired meanwhile (a delivery, a delisting)
        return RestVerdict.MOOT
    window = tracker.rest_window(sid, svc.clock.now_ms())
    try:
        rest_has = await asyncio.wait_for(
            has_klines(svc.rest, snd.symbol, snd.interval, *window, market=snd.market), 10
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # still silent: asked again after a pause
        log_event(log, "WARNING", "cannot ask REST about a silent stream", stream=sid,
                  error=repr(exc)[:300])  # fmt: skip
        await asyncio.sleep(REST_RETRY_S)
        return RestVerdict.UNKNOWN
    verdict = tracker.on_rest(sid, window, rest_has, svc.clock.now_ms())
    if verdict is RestVerdict.HALTED:
        log_event(
            log, "WARNING", "stream halted: no closed klines on WS or REST, not reconnecting",
            conn=conn.conn_id, stream=sid, since_open_time=window[0],
        )  # fmt: skip
    elif verdict is RestVerdict.LOST:
        log_event(log, "WARNING", "stream silent on WS but REST has its klines",
                  conn=conn.conn_id, stream=sid, first_open_time=window[0])  # fmt: skip
    return verdict


def _replacement_state(task: asyncio.Task[Connection | None] | None) -> Replacement:
    if task is None:
        return Replacement.NONE
    if not task.done():
        return Replacement.PENDING
    return Replacement.READY if task.result() is not None else Replacement.FAILED
