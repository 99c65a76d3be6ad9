"""The health document: the snapshot served on the health port and written to
STATE_DIRECTORY/health.json every `health_interval_s`, with the systemd watchdog ping.

The per-stream entries cost a few µs each: at 24,000 streams, rebuilt every 2 s, they were
~30 % of the streamer's busy time (docs/BENCHMARKS.md). So the file's `streams` section is
rebuilt at most every `streams_refresh_s` (2 s up to 4,000 streams, then 1 s per 2,000
streams: 12 s at 24,000), its time in `streams_time`; the rest of the document (state,
connections, spool, counters) is fresh at every write, and a write at stop or on a blocked
state rebuilds everything. The HTTP endpoint always builds the whole snapshot (on demand).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from klinelake.logs import log_event
from streamer.health import sd_notify, write_atomic

if TYPE_CHECKING:
    from streamer.service import Service

log = logging.getLogger("streamer")


# per-stream entries the file rebuilds per second at most (≈ 3 µs each: ≈ 0.6 % of a core)
STREAM_ENTRIES_PER_S = 2_000


def streams_refresh_s(n_streams: int, interval_s: float) -> float:
    """How often the file's per-stream section is rebuilt: every write for a few thousand
    streams, then at a cadence that bounds its cost to a fixed share of a core."""
    return max(interval_s, n_streams / STREAM_ENTRIES_PER_S)


@dataclass
class StreamsSection:
    """The file's last serialised `streams` section and when to rebuild it (monotonic s)."""

    data: bytes = b"{}"
    time_ms: int = 0
    refresh_at: float = 0.0


def snapshot(svc: Service) -> dict[str, Any]:
    depth = svc.spool.depth()
    return {**summary(svc, depth), "streams": stream_entries(svc, depth)}


def stream_entries(svc: Service, depth: dict[str, int]) -> dict[str, Any]:
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
    return streams


def summary(svc: Service, depth: dict[str, int]) -> dict[str, Any]:
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
    }


def _section(entries: dict[str, Any]) -> bytes:
    """`streams` as JSON, one stream per line (greppable), nested at the document's level 1."""
    if not entries:
        return b"{}"
    lines = (b"    " + orjson.dumps(sid) + b": " + orjson.dumps(e) for sid, e in entries.items())
    return b"{\n" + b",\n".join(lines) + b"\n  }"


def health_document(svc: Service, section: StreamsSection, *, force: bool = True) -> bytes:
    depth = svc.spool.depth()
    now = time.monotonic()
    if force or now >= section.refresh_at:
        entries = stream_entries(svc, depth)
        section.data = _section(entries)
        section.time_ms = int(time.time() * 1000)
        section.refresh_at = now + streams_refresh_s(len(entries), svc.settings.health_interval_s)
    doc = summary(svc, depth)
    doc["streams_time"] = section.time_ms  # when `streams` was built (ms since the epoch)
    doc["streams"] = orjson.Fragment(section.data)
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


def write_health(svc: Service, *, force: bool = True) -> None:
    path = svc.settings.state_dir / "health.json"
    try:
        write_atomic(path, health_document(svc, svc.health_streams, force=force))
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
        write_health(svc, force=False)
        sd_notify("WATCHDOG=1")
        if time.monotonic() - last_sync > 300:
            last_sync = time.monotonic()
            await svc.sync_clock(rest)
        await asyncio.sleep(svc.settings.health_interval_s)
