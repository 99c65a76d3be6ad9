"""The spool (durability, dedupe) and the ordered sender (gap repair, retries), in process."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from binance_sim.market import synthetic_kline
from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.core.contract import KlineBatch
from klinelake.core.errors import TransientError
from klinelake.core.intervals import MINUTE
from klinelake.core.row import Kline
from streamer.sender import StreamSender
from streamer.spool import Spool

T0 = 1_704_067_200_000
SID = "AAAUSDC@1m"


def k(i: int) -> Kline:
    return synthetic_kline(0, "AAAUSDC", "1m", T0 + i * MINUTE)


class FlakySink:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[tuple[KlineBatch, str]] = []

    @property
    def description(self) -> str:
        return "memory"

    async def send(self, batch: KlineBatch, source: str) -> None:
        if self.failures:
            self.failures -= 1
            raise TransientError("pubsub down")
        self.batches.append((batch, source))

    async def close(self) -> None:
        pass

    def open_times(self) -> list[int]:
        return [r.open_time for b, _ in self.batches for r in b.rows]


class FakeRest:
    """REST with every kline up to `upto` (index), except `missing` (a halt)."""

    def __init__(self, upto: int, missing: frozenset[int] = frozenset()) -> None:
        self.upto = upto
        self.missing = missing
        self.calls: list[tuple[int, int]] = []

    async def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = 1000
    ) -> list[Kline]:
        self.calls.append((start_ms, end_ms))
        out = []
        for i in range((start_ms - T0) // MINUTE, (end_ms - T0) // MINUTE + 1):
            if 0 <= i <= self.upto and i not in self.missing and len(out) < limit:
                out.append(k(i))
        return out


def test_spool_dedupes_and_survives_reopen(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite3")
    sp.open()
    assert sp.add([(SID, k(2)), (SID, k(1)), (SID, k(1))]) == {SID}
    assert [r.open_time for r in sp.peek(SID, 10)[0]] == [T0 + MINUTE, T0 + 2 * MINUTE]
    sp.ack(SID, T0 + MINUTE)
    assert sp.add([(SID, k(1))]) == set()  # already published: never spooled again
    sp.close()
    sp = Spool(tmp_path / "s.sqlite3")
    sp.open()
    assert sp.last_published(SID) == T0 + MINUTE
    rows, source = sp.peek(SID, 10)
    assert [r.open_time for r in rows] == [T0 + 2 * MINUTE] and source == "ws"
    assert sp.depth() == {SID: 1}
    sp.close()


async def _run_until_idle(sender: StreamSender) -> None:
    draining = asyncio.Event()
    draining.set()
    sender.wake.set()
    await asyncio.wait_for(sender.run(draining), 10)


async def test_sender_repairs_gaps_in_order_and_retries(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite3")
    sp.open()
    sink = FlakySink(failures=3)
    rest = FakeRest(upto=20, missing=frozenset({7}))
    now = T0 + 21 * MINUTE + 5
    empty = EmptyRanges(tmp_path)
    sender = StreamSender(
        symbol="AAAUSDC", interval="1m", spool=sp, sink=sink, rest=rest, server_now=lambda: now,
        backoff_cap_s=0.01, empty=empty,
    )  # fmt: skip
    sp.add([(SID, k(i)) for i in (0, 3, 4, 10)])
    sender.request_repair()  # target: the newest closed kline (index 20)
    await _run_until_idle(sender)
    assert sink.open_times() == [T0 + i * MINUTE for i in range(21) if i != 7]
    assert sender.stats.send_failures == 3
    assert sp.depth() == {} and sp.last_published(SID) == T0 + 20 * MINUTE
    assert {s for _, s in sink.batches} == {"rest"}
    assert empty.get("AAAUSDC", "1m") == [(T0 + 7 * MINUTE, T0 + 7 * MINUTE)]  # the halt
    # a duplicate (replacement connection, replay) is never published twice
    assert sp.add([(SID, k(20)), (SID, k(3))]) == set()
    sp.close()


async def test_sender_sends_backlog_as_large_batches(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite3")
    sp.open()
    sp.add([(SID, k(i)) for i in range(12_000)])
    sink = FlakySink()
    sender = StreamSender(
        symbol="AAAUSDC", interval="1m", spool=sp, sink=sink, rest=FakeRest(0),
        server_now=lambda: T0 + 12_000 * MINUTE,
    )  # fmt: skip
    await _run_until_idle(sender)
    assert [len(b.rows) for b, _ in sink.batches] == [5000, 5000, 2000]
    sp.close()


async def test_sender_survives_a_spool_error(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.sqlite3")
    sp.open()
    sp.add([(SID, k(0)), (SID, k(1))])
    sink = FlakySink()
    sender = StreamSender(
        symbol="AAAUSDC", interval="1m", spool=sp, sink=sink, rest=FakeRest(1),
        server_now=lambda: T0 + 2 * MINUTE, backoff_cap_s=0.01,
    )  # fmt: skip
    real_peek, calls = sp.peek, [0]

    def flaky_peek(stream: str, limit: int) -> tuple[list[Kline], str]:
        calls[0] += 1
        if calls[0] <= 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real_peek(stream, limit)

    sp.peek = flaky_peek  # type: ignore[method-assign]
    await _run_until_idle(sender)
    assert sink.open_times() == [T0, T0 + MINUTE]
    sp.close()


def test_deferred_acks_share_one_write_and_reads_honour_them_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    sp = Spool(path)
    sp.open()
    scheduled: list[object] = []
    sp.defer_acks(scheduled.append)  # the service passes loop.call_soon
    sids = [f"S{i}USDC@1m" for i in range(3)]
    sp.add((s, synthetic_kline(0, s[:-3], "1m", T0 + i * MINUTE)) for s in sids for i in (1, 2))

    def on_disk() -> dict[str, int]:
        with sqlite3.connect(path) as db:
            return dict(db.execute("SELECT stream, open_time FROM published").fetchall())

    for s in sids:
        sp.ack(s, T0 + MINUTE)
    assert scheduled == [sp.write_acks]  # one write for the turn's acks, not one per stream
    assert on_disk() == {}
    for s in sids:  # in memory at once: nothing acked is served again, or counted
        assert [r.open_time for r in sp.peek(s, 10)[0]] == [T0 + 2 * MINUTE]
        assert sp.last_published(s) == T0 + MINUTE
    assert sp.depth() == dict.fromkeys(sids, 1)  # (it writes them first: one count query)
    assert on_disk() == dict.fromkeys(sids, T0 + MINUTE)
    sp.write_acks()  # the scheduled write finds nothing left
    assert on_disk() == dict.fromkeys(sids, T0 + MINUTE)
    sp.ack(sids[0], T0 + 2 * MINUTE)  # a new turn schedules a new write
    assert len(scheduled) == 2
    sp.close()  # what a stop leaves unwritten is written on the way out
    assert on_disk()[sids[0]] == T0 + 2 * MINUTE
    sp = Spool(path)
    sp.open()
    assert sp.depth() == {sids[1]: 1, sids[2]: 1}
    sp.close()
