"""The durable spool (sqlite3 in the state directory, WAL, synchronous=FULL).

A closed kline is inserted before it is published and deleted only once the sink has returned
(Pub/Sub acknowledged, or the lake written). The table `published` keeps, per stream, the
open_time of the last kline that reached the sink: rows at or before it are never spooled again,
so a kline is published once even if WS, a replacement connection and REST repair all bring it.

All calls are synchronous and short; the service makes them from its event loop thread only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from klinelake.markets import split_stream_key
from klinelake.row import Kline, parse_lake_line

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


class Spool:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._published: dict[str, int] = {}  # one entry per configured stream: bounded

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        self._db = db
        self._published = dict(db.execute("SELECT stream, open_time FROM published").fetchall())

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("spool is not open")
        return self._db

    def last_published(self, stream: str) -> int | None:
        return self._published.get(stream)

    def add(self, items: Iterable[tuple[str, Kline]], source: str = "ws") -> set[str]:
        """Insert closed klines in one transaction (one fsync); return the streams that got
        new rows. Rows at or before the stream's last published open_time are dropped."""
        rows = []
        for stream, k in items:
            last = self._published.get(stream)
            if last is None or k.open_time > last:
                rows.append((stream, k.open_time, k.to_line(), source))
        if not rows:
            return set()
        db = self.db
        db.execute("PRAGMA synchronous=FULL")  # a spooled kline survives a power cut
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.executemany("INSERT OR IGNORE INTO spool VALUES (?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return {r[0] for r in rows} if cur.rowcount else set()

    def peek(self, stream: str, limit: int) -> tuple[list[Kline], str]:
        """The oldest spooled rows of `stream`, ascending, and their source ("rest" if any
        came from REST repair, else "ws")."""
        cur = self.db.execute(
            "SELECT line, source FROM spool WHERE stream = ? ORDER BY open_time LIMIT ?",
            (stream, limit),
        )
        rows, source = [], "ws"
        market = split_stream_key(stream)[0]  # `um:BTCUSDT@1m`: COIN-M rows have COIN-M keys
        for line, src in cur:
            rows.append(parse_lake_line(line, market=market))
            if src != "ws":
                source = src
        return rows, source

    def open_times(self, stream: str, upto: int) -> Iterator[int]:
        """Spooled open_times of `stream` up to `upto`, ascending (streamed from the cursor)."""
        cur = self.db.execute(
            "SELECT open_time FROM spool WHERE stream = ? AND open_time <= ? ORDER BY open_time",
            (stream, upto),
        )
        for (t,) in cur:
            yield t

    def last_spooled(self, stream: str) -> int | None:
        row = self.db.execute(
            "SELECT MAX(open_time) FROM spool WHERE stream = ?", (stream,)
        ).fetchone()
        return row[0] if row and row[0] is not None else None

    def last_spooled_upto(self, stream: str, upto: int) -> int | None:
        row = self.db.execute(
            "SELECT MAX(open_time) FROM spool WHERE stream = ? AND open_time <= ?", (stream, upto)
        ).fetchone()
        return row[0] if row and row[0] is not None else None

    def ack(self, stream: str, upto: int) -> None:
        """The sink has the rows of `stream` up to `upto`: forget them, remember `upto`.

        Without an fsync of its own (WAL, synchronous=NORMAL): the next insert's fsync makes it
        durable. Losing an ack to a power cut only re-sends rows the lake already has (the
        writer dedupes); losing an insert would lose a kline, so inserts are FULL."""
        db = self.db
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM spool WHERE stream = ? AND open_time <= ?", (stream, upto))
            db.execute(
                "INSERT INTO published VALUES (?, ?) ON CONFLICT(stream) DO UPDATE "
                "SET open_time = MAX(open_time, excluded.open_time)",
                (stream, upto),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._published[stream] = max(upto, self._published.get(stream, upto))

    def depth(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT stream, COUNT(*) FROM spool GROUP BY stream"))

    def spooled_streams(self) -> list[str]:
        return [s for (s,) in self.db.execute("SELECT DISTINCT stream FROM spool")]
