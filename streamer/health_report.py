"""The health document: the snapshot served on the health port and written to
STATE_DIRECTORY/health.json every `health_interval_s`, with the systemd watchdog ping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from klinelake.logs import log_event
from streamer.health import sd_notify, write_atomic

if TYPE_CHECKING:
    from streamer.service import Service

log = logging.getLogger("streamer")


def snapshot(svc: Service) -> dict[str, Any]:
    depth = svc.spool.depth()
    streams: dict[str, Any] = {}
    for idx, refs in enumerate(svc.slots):
        for ref in refs:
            snd = svc.senders[ref.sid]
            conn = svc.slot_conns[idx] if idx < len(svc.slot_conns) else None
            tracker = conn.tracker if conn is not None else None
            streams[ref.sid] = {
                # live | silent (REST asked why) | halted (REST has none either)
                "ws_state": tracker.state(ref.sid).value
                if tracker and tracker.watches(ref.sid)
                else "connecting",
                "last_closed_open_time": svc.spool.last_published(ref.sid),
                "lag_ms": snd.lag_ms(),
                "reconnects": svc.slot_reconnects[idx],
                "spool_depth": depth.get(ref.sid, 0),
                "published_rows": snd.stats.published_rows,
                "repaired_rows": snd.stats.repaired_rows,
                "send_failures": snd.stats.send_failures,
            }
    for sid, end in svc.ended.items():  # retired streams: their end, for operators
        snd = svc.senders[sid]
        streams[sid] = {
            "last_closed_open_time": svc.spool.last_published(sid),
            "ended": {
                k: end.get(k) for k in ("reason", "end_ms", "last_open_time", "published_upto")
            },
            "spool_depth": depth.get(sid, 0),
            "published_rows": snd.stats.published_rows,
            "repaired_rows": snd.stats.repaired_rows,
            "send_failures": snd.stats.send_failures,
        }
    return {
        "state": svc.state,
        "reason": svc.reason,
        "time": int(time.time() * 1000),
        "server_time": svc.clock.now_ms(),
        "connections": sum(1 for c in svc.slot_conns if c is not None and c.alive),
        "reconnects": sum(svc.slot_reconnects),
        "malformed_frames": svc.counters.malformed,
        "closed_klines_received": svc.counters.closed_klines,
        "spool_depth": sum(depth.values()),
        "spool": svc.spool.state,  # "ok" or "degraded: disk full at PATH" (and the like)
        "spool_held_in_memory": sum(n for n, _, _ in svc.spool.held().values()),
        "streams": streams,
    }


def write_health(svc: Service) -> None:
    path = svc.settings.state_dir / "health.json"
    try:
        write_atomic(path, _dumps(snapshot(svc)))
    except OSError as exc:
        if svc.health_error != exc.errno:  # once per episode, not every few seconds
            log_event(log, "ERROR", "cannot write health file (the HTTP endpoint still "
                      "serves it)", path=str(path), error=repr(exc))  # fmt: skip
        svc.health_error = exc.errno
        return
    svc.health_error = None


async def health_loop(svc: Service, rest: Any) -> None:
    last_sync = time.monotonic()
    while True:
        write_health(svc)
        sd_notify("WATCHDOG=1")
        if time.monotonic() - last_sync > 300:
            last_sync = time.monotonic()
            await svc.sync_clock(rest)
        await asyncio.sleep(svc.settings.health_interval_s)


def _dumps(obj: Any) -> bytes:
    import orjson

    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)
