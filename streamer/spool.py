"""The durable spool (sqlite3 in the state directory, WAL, synchronous=FULL).

A closed kline is inserted before it is published and deleted only once the sink has returned
(Pub/Sub acknowledged, or the lake written). The table `published` keeps, per stream, the
open_time of the last kline that reached the sink: rows at or before it are never spooled again,
so a kline is published once even if WS, a replacement connection and REST repair all bring it.

When a write fails (disk full, state directory remounted read-only, I/O error) nothing is lost
and nothing raises: the rows are *held* in memory and served by `peek` like spooled rows, so the
senders publish them all the same; acks are kept in memory and written with the next write that
succeeds. The spool is then *degraded* (`state`), logged once per episode with the path and the
real SQLite error; the first write that succeeds writes the held rows to disk and ends it. Only
held rows that are still unsent when the process exits are lost (`held()` says which): the
service reports them and exits non-zero.

All calls are synchronous and short; the service makes them from its event loop thread only,
and has the acks of one loop turn written together (`defer_acks`).
"""

from __future__ import annotations

import heapq
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from klinelake.core.markets import split_stream_key
from klinelake.core.row import Kline, parse_lake_line
from klinelake.logs import log_event

log = logging.getLogger("streamer.spool")

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    stream TEXT NOT NULL,
    open_time INTEGER NOT NULL,
    line BLOB NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (stream, open_time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS published (
    stream TEXT PRIMARY KEY,
    open_time INTEGER NOT NULL
) WITHOUT ROWID;
"""
OK = "ok"


class SpoolUnavailable(Exception):
    """The spool cannot be opened: the state directory is read-only, full, missing, ..."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot open the spool {path}: {reason}")
        self.path = path
        self.reason = reason


def failure_kind(exc: BaseException) -> str:
    """What an operator should look at, from SQLite's result code (or errno for OSError)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL" or getattr(exc, "errno", None) == 28:  # ENOSPC
        return "disk full"
    if name.startswith("SQLITE_READONLY") or getattr(exc, "errno", None) in (13, 30):
        return "read-only"  # (13 EACCES, 30 EROFS)
    if name.startswith("SQLITE_CANTOPEN"):
        return "cannot open"
    if name.startswith("SQLITE_IOERR"):
        return "I/O error"
    return "write failed"


class Spool:
    def __init__(
        self, path: Path | str, retry_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = Path(path)
        # while degraded, try the disk again at most every `retry_s` seconds: each try
        # re-inserts everything held, and a full disk fails the same way many times a second
        self.retry_s = retry_s
        self._clock = clock
        self._retry_at = 0.0
        self._db: sqlite3.Connection | None = None
        self._published: dict[str, int] = {}  # one entry per configured stream: bounded
        # Degraded mode: rows and acks that could not be written (see the module docstring).
        self._held: dict[str, dict[int, tuple[bytes, str]]] = {}
        self._unwritten_acks: dict[str, int] = {}
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        self._acks_scheduled = False
        self.state = OK

    def open(self) -> None:
        """Open (creating) the database; `SpoolUnavailable` names the path and the reason."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(SCHEMA)
                published = db.execute("SELECT stream, open_time FROM published").fetchall()
            except BaseException:
                db.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            reason = failure_kind(exc)
            if reason == "cannot open" and not os.access(self.path.parent, os.W_OK):
                reason = "read-only"  # (SQLite says only "unable to open database file")
            raise SpoolUnavailable(self.path, f"{reason} ({_text(exc)})") from exc
        self._db = db
        self._published = dict(published)

    def close(self) -> None:
        """Write what is held if the disk allows it now, then close."""
        if self._db is not None:
            if self._held or self._unwritten_acks:
                self._write([])
            self._db.close()
            self._db = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("spool is not open")
        return self._db

    def last_published(self, stream: str) -> int | None:
        return self._published.get(stream)

    def add(self, items: Iterable[tuple[str, Kline]], source: str = "ws") -> set[str]:
        """Insert closed klines in one transaction (one fsync); return the streams that got
        new rows. Rows at or before the stream's last published open_time are dropped. A
        failed write holds the rows in memory instead (never raises for a disk problem)."""
        return self.add_lines(((s, k.open_time, k.to_line()) for s, k in items), source)

    def add_lines(self, items: Iterable[tuple[str, int, bytes]], source: str = "ws") -> set[str]:
        """`add` for rows given as (stream, open_time, lake line): a REST page held as its
        open times and lines (row.StreamRows) is spooled without a Kline per row."""
        rows = []
        for stream, t, line in items:
            last = self._published.get(stream)
            if (last is None or t > last) and t not in self._held.get(stream, ()):
                rows.append((stream, t, line, source))
        if not rows:
            return set()
        written = self._write(rows) if self._may_try() else None
        if written is None:  # held in memory
            for stream, t, line, src in rows:
                self._held.setdefault(stream, {}).setdefault(t, (line, src))
            return {r[0] for r in rows}
        return {r[0] for r in rows} if written else set()

    def _write(self, rows: list[tuple[str, int, bytes, str]]) -> int | None:
        """One transaction: the held rows, `rows` and the unwritten acks. Returns how many
        rows were inserted, or None if the write failed (the spool is then degraded)."""
        held = [(s, t, *row) for s, by_t in self._held.items() for t, row in by_t.items()]
        acks = list(self._unwritten_acks.items())
        db = self.db
        try:
            # A spooled kline survives a power cut (FULL); acks alone need no fsync (`ack`).
            db.execute(f"PRAGMA synchronous={'FULL' if rows or held else 'NORMAL'}")
            db.execute("BEGIN IMMEDIATE")
            try:
                if held:
                    db.executemany("INSERT OR IGNORE INTO spool VALUES (?, ?, ?, ?)", held)
                cur = db.executemany("INSERT OR IGNORE INTO spool VALUES (?, ?, ?, ?)", rows)
                inserted = cur.rowcount
                for stream, upto in acks:
                    _write_ack(db, stream, upto)
                db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL does): a second ROLLBACK
                # would replace the real error with "no transaction is active".
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._degrade(exc)
            return None
        self._held.clear()
        self._unwritten_acks.clear()
        if self.state != OK:
            log_event(log, "WARNING", "spool writable again", path=str(self.path),
                      was=self.state, held_rows_written=len(held))  # fmt: skip
            self.state = OK
        return max(inserted, 0)

    def _may_try(self) -> bool:
        return self.state == OK or self._clock() >= self._retry_at

    def _degrade(self, exc: sqlite3.Error) -> None:
        self._retry_at = self._clock() + self.retry_s
        state = f"degraded: {failure_kind(exc)} at {self.path}"
        if state != self.state:  # once per episode, not once per kline
            log_event(
                log, "ERROR", "spool write failed: holding klines in memory and publishing them "
                "from there", path=str(self.path), error=_text(exc), state=state,
            )  # fmt: skip
            self.state = state

    def peek(self, stream: str, limit: int) -> tuple[list[Kline], str]:
        """The oldest spooled (or held) rows of `stream`, ascending, and their source ("rest"
        if any came from REST repair, else "ws")."""
        cur = self.db.execute(
            "SELECT open_time, line, source FROM spool WHERE stream = ? AND open_time > ? "
            "ORDER BY open_time LIMIT ?",
            (stream, self._published.get(stream, -1), limit),
        )
        merged = heapq.merge(cur, self._held_rows(stream), key=lambda r: r[0])
        rows: list[Kline] = []
        source, last = "ws", None
        market = split_stream_key(stream)[0]  # `um:BTCUSDT@1m`: COIN-M rows have COIN-M keys
        for t, line, src in merged:
            if t == last:
                continue
            if len(rows) == limit:
                break
            last = t
            rows.append(parse_lake_line(line, market=market))
            if src != "ws":
                source = src
        return rows, source

    def _held_rows(self, stream: str) -> list[tuple[int, bytes, str]]:
        return [(t, line, src) for t, (line, src) in sorted(self._held.get(stream, {}).items())]

    def open_times(self, stream: str, upto: int) -> Iterator[int]:
        """Spooled (or held) open_times of `stream` up to `upto`, ascending, once each."""
        cur = self.db.execute(
            "SELECT open_time FROM spool WHERE stream = ? AND open_time > ? AND open_time <= ? "
            "ORDER BY open_time",
            (stream, self._published.get(stream, -1), upto),
        )
        held = sorted(t for t in self._held.get(stream, ()) if t <= upto)
        last = None
        for t in heapq.merge((t for (t,) in cur), held):
            if t != last:
                yield t
            last = t

    def last_spooled(self, stream: str) -> int | None:
        return self.last_spooled_upto(stream, 2**62)

    def last_spooled_upto(self, stream: str, upto: int) -> int | None:
        row = self.db.execute(
            "SELECT MAX(open_time) FROM spool WHERE stream = ? AND open_time > ? "
            "AND open_time <= ?",
            (stream, self._published.get(stream, -1), upto),
        ).fetchone()
        held = [t for t in self._held.get(stream, ()) if t <= upto]
        best = max([*held, *([row[0]] if row and row[0] is not None else [])], default=None)
        return best

    def defer_acks(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """From now on `ack` writes through `schedule(self.write_acks)` (the service passes
        `loop.call_soon`): the acks of one event-loop turn, for every stream, share one
        transaction. Each SQLite call releases the GIL, and while the lake writer threads hold
        it every reacquisition waits a switch interval (5 ms): a transaction per sent batch
        made a turn with 1,000 streams take seconds."""
        self._schedule = schedule

    def ack(self, stream: str, upto: int) -> None:
        """The sink has the rows of `stream` up to `upto`: forget them, remember `upto`.

        In memory at once (reads honour it); on disk now, or with the turn's other acks
        (`defer_acks`), without an fsync of its own (WAL, synchronous=NORMAL): the next
        insert's fsync makes it durable. Losing an ack to a power cut only re-sends rows the
        lake already has (the writer dedupes); losing an insert would lose a kline, so inserts
        are FULL. An ack that cannot be written is kept in memory and written with the next
        write."""
        self._published[stream] = max(upto, self._published.get(stream, upto))
        held = self._held.get(stream)
        if held:
            for t in [t for t in held if t <= upto]:
                del held[t]
            if not held:
                del self._held[stream]
        self._unwritten_acks[stream] = self._published[stream]
        if self._schedule is None:
            self.write_acks()
        elif not self._acks_scheduled:
            self._acks_scheduled = True
            self._schedule(self.write_acks)

    def write_acks(self) -> None:
        """Write the acks not on disk yet, in one transaction (a failure keeps them for the
        next write and degrades the spool, as any failed write does)."""
        self._acks_scheduled = False
        if not self._unwritten_acks or not self._may_try() or self._db is None:
            return
        self._write([])

    def depth(self) -> dict[str, int]:
        """Rows waiting to be sent, per stream (spooled and held)."""
        if self._db is None:
            return {}
        if self._unwritten_acks and self._may_try():
            self.write_acks()  # one transaction, then one count (not a count per acked stream)
        out: dict[str, int] = dict(
            self._db.execute("SELECT stream, COUNT(*) FROM spool GROUP BY stream")
        )
        for stream in self._unwritten_acks:  # rows already sent, not yet deleted on disk
            out[stream] = self._db.execute(
                "SELECT COUNT(*) FROM spool WHERE stream = ? AND open_time > ?",
                (stream, self._published[stream]),
            ).fetchone()[0]
        for stream, by_t in self._held.items():
            out[stream] = out.get(stream, 0) + len(by_t)
        return {s: n for s, n in out.items() if n}

    def held(self) -> dict[str, tuple[int, int, int]]:
        """Rows held in memory only, per stream: (count, first open_time, last open_time)."""
        return {s: (len(by_t), min(by_t), max(by_t)) for s, by_t in self._held.items() if by_t}

    def spooled_streams(self) -> list[str]:
        on_disk = [s for (s,) in self.db.execute("SELECT DISTINCT stream FROM spool")]
        return sorted({*on_disk, *self._held})


def _write_ack(db: sqlite3.Connection, stream: str, upto: int) -> None:
    db.execute("DELETE FROM spool WHERE stream = ? AND open_time <= ?", (stream, upto))
    db.execute(
        "INSERT INTO published VALUES (?, ?) ON CONFLICT(stream) DO UPDATE "
        "SET open_time = MAX(open_time, excluded.open_time)",
        (stream, upto),
    )


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
