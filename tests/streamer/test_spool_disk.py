"""The spool on a real full disk and a read-only state directory (issue 12, item 2): the real
error logged once per episode with the path, nothing dropped, everything still published."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binance_sim.testing import run_simulator
from klinelake.core.intervals import MINUTE
from localcloud import wait_for
from localcloud.procs import free_port
from streamer.sender import StreamSender
from streamer.spool import OK, Spool, SpoolUnavailable
from tests.streamer import helpers
from tests.streamer.helpers import counter, streamer, wait_health
from tests.streamer.test_spool_sender import SID, T0, FakeRest, FlakySink, k
from tests.streamer.tinyfs import fill, read_only_dir, tiny_fs


def spool_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "streamer.spool" and r.levelno >= logging.ERROR]


def test_full_disk_holds_klines_logs_the_real_error_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tiny_fs(tmp_path / "state") as state:
        sp = Spool(state / "spool.sqlite3", retry_s=0)
        sp.open()
        sp.add([(SID, k(0))])
        filler = fill(state)
        for i in range(1, 120):  # one transaction per kline, as the live stream does
            sp.add([(SID, k(i))])
        errors = spool_errors(caplog)
        assert len(errors) == 1, [r.getMessage() for r in errors]
        fields = errors[0].__dict__["fields"]
        assert fields["error"] == "database or disk is full"
        assert fields["path"] == str(state / "spool.sqlite3")
        assert sp.state == f"degraded: disk full at {state / 'spool.sqlite3'}"
        rows, _ = sp.peek(SID, 1000)
        assert [r.open_time for r in rows] == [T0 + i * MINUTE for i in range(120)]
        sp.ack(SID, T0 + 49 * MINUTE)  # sent: (the ack itself may not reach the disk)
        assert sp.depth() == {SID: 70}
        assert sp.peek(SID, 1000)[0][0].open_time == T0 + 50 * MINUTE
        assert list(sp.open_times(SID, T0 + 51 * MINUTE)) == [T0 + 50 * MINUTE, T0 + 51 * MINUTE]
        assert sp.last_spooled_upto(SID, T0 + 200 * MINUTE) == T0 + 119 * MINUTE

        filler.unlink()  # space again: the next write stores what was held
        sp.add([(SID, k(120))])
        assert sp.state == OK and sp.held() == {}
        assert "spool writable again" in caplog.text
        sp.close()
        sp = Spool(state / "spool.sqlite3", retry_s=0)
        sp.open()  # durable: the held rows and the ack reached the disk
        assert sp.last_published(SID) == T0 + 49 * MINUTE
        assert [r.open_time for r in sp.peek(SID, 1000)[0]] == [
            T0 + i * MINUTE for i in range(50, 121)
        ]
        sp.close()


async def test_a_sender_publishes_what_a_full_disk_refused(tmp_path: Path) -> None:
    with tiny_fs(tmp_path / "state") as state:
        sp = Spool(state / "spool.sqlite3", retry_s=0)
        sp.open()
        fill(state)
        sp.add([(SID, k(i)) for i in (0, 1, 2, 5)])
        assert sp.state.startswith("degraded: disk full")
        sink = FlakySink(failures=2)
        sender = StreamSender(
            symbol="AAAUSDC", interval="1m", spool=sp, sink=sink, rest=FakeRest(upto=5),
            server_now=lambda: T0 + 6 * MINUTE, backoff_cap_s=0.01,
        )  # fmt: skip
        draining = asyncio.Event()
        draining.set()
        sender.request_repair()
        await asyncio.wait_for(sender.run(draining), 10)
        assert sink.open_times() == [T0 + i * MINUTE for i in range(6)]  # 3, 4 from REST
        assert sp.depth() == {} and sp.held() == {}
        assert sp.last_published(SID) == T0 + 5 * MINUTE
        sp.close()


def test_a_read_only_state_directory_is_refused_naming_the_path(tmp_path: Path) -> None:
    with read_only_dir(tmp_path / "ro") as ro:
        sp = Spool(ro / "spool.sqlite3")
        with pytest.raises(SpoolUnavailable) as exc:
            sp.open()
        assert str(ro / "spool.sqlite3") in str(exc.value)
        assert exc.value.reason.startswith("read-only")
        assert not sp.is_open and sp.depth() == {}


SPEED = 600.0  # a 1m kline every 0.1 s


def sim_args(symbol: str) -> list[str]:
    return ["--start", "2024-05-01T00:00:00", "--speed", str(SPEED),
            "--synthetic", f"{symbol}:1m:2024-04-01"]  # fmt: skip


def test_streamer_on_a_full_disk_publishes_everything_and_says_so(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with tiny_fs(tmp_path / "state") as state, run_simulator(None, *sim_args("FULLUSDC")) as sim:
        first = helpers.seed_published(state, sim, [("FULLUSDC", "1m")])["FULLUSDC@1m"]
        flags = ("--health-port", str(free_port()))
        with streamer(sim, state, "FULLUSDC", "1m", SPEED, *flags, lake=lake) as st:
            wait_health(st, lambda h: h["streams"]["FULLUSDC@1m"]["last_closed_open_time"],
                        30, "live")  # fmt: skip
            fill(state)
            full = f"degraded: disk full at {state / 'spool.sqlite3'}"
            h = wait_health(st, lambda h: h["spool"] == full, 30, "health says disk full")
            before = h["streams"]["FULLUSDC@1m"]["published_rows"]
            wait_health(st, lambda h: h["streams"]["FULLUSDC@1m"]["published_rows"] > before + 50,
                        30, "klines still published while the disk is full")  # fmt: skip
            last = wait_for(lambda: helpers.caught_up(lake, sim, [("FULLUSDC", "1m")]), 30, 0.05,
                            "the lake has the newest kline")["FULLUSDC@1m"]  # fmt: skip
            assert st.terminate() == 0
            log = st.log_text()
        assert log.count('"message":"spool write failed') == 1, log[-3000:]
        assert '"error":"database or disk is full"' in log
        assert "cannot rollback" not in log and "Traceback" not in log
        rows = helpers.assert_lake_matches_truth(
            lake, sim, "FULLUSDC", "1m", first=first, last=last
        )
        assert rows > 50


def test_sigterm_on_a_full_disk_with_pubsub_down_names_what_it_could_not_send(
    tmp_path: Path,
) -> None:
    dead = free_port()  # nothing listens there: every publish fails
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{dead}",
           "KLINES_TOPIC": "projects/p/topics/klines"}  # fmt: skip
    flags = ("--health-port", str(free_port()), "--drain-timeout", "1", "--publish-timeout", "1")
    with (
        tiny_fs(tmp_path / "state") as state,
        run_simulator(None, *sim_args("LOSTUSDC")) as sim,
        streamer(sim, state, "LOSTUSDC", "1m", SPEED, *flags, env=env) as st,
    ):
        wait_health(st, lambda h: counter(h, "spool_depth") >= 3, 30, "spool fills")
        fill(state)
        wait_health(st, lambda h: counter(h, "spool_held_in_memory") >= 3, 30, "held")
        assert st.terminate() == 1
        log = st.log_text()
    assert "stopped with " in log and "closed klines neither spooled nor published" in log
    assert "LOSTUSDC@1m" in log.split("neither spooled nor published", 1)[1]
    assert "Traceback" not in log


def test_streamer_refuses_a_read_only_state_directory_in_one_line(tmp_path: Path) -> None:
    with (
        read_only_dir(tmp_path / "ro") as ro,
        run_simulator(None, *sim_args("ROUSDC")) as sim,
        streamer(sim, ro, "ROUSDC", "1m", SPEED, lake=tmp_path / "lake") as st,
    ):
        assert st.proc.wait(30) == 2
    text = st.log_path.read_text()
    lines = [x for x in text.splitlines() if x.startswith("streamer: ")]
    assert len(lines) == 1 and str(ro) in lines[0] and "read-only" in lines[0], text
    assert "Traceback" not in text


class BreakableDb:
    """A spool connection whose writes fail while `broken` (the class of write failures: a
    full disk, a remount read-only, an I/O error), reads still served by the real database."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.broken = False
        self.transactions = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self.transactions += sql.startswith("BEGIN")
        if self.broken and sql.startswith("BEGIN"):
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.db.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def close(self) -> None:
        self.db.close()


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 40)),
        st.tuples(st.just("send"), st.integers(1, 5)),
        st.tuples(st.just("disk"), st.booleans()),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(OPS)
def test_no_write_failure_pattern_loses_or_repeats_a_kline(ops: list[tuple[str, int]]) -> None:
    """Whatever fails when: every kline accepted is sent exactly once, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        sp = Spool(Path(tmp) / "s.sqlite3", retry_s=0)
        sp.open()
        db = BreakableDb(sp.db)
        sp._db = db  # type: ignore[assignment]
        accepted: set[int] = set()
        sent: list[int] = []

        def send(n: int) -> None:
            rows, _ = sp.peek(SID, n)
            if rows:
                sent.extend(r.open_time for r in rows)
                sp.ack(SID, rows[-1].open_time)

        for op, arg in ops:
            if op == "add":
                if sp.add([(SID, k(arg))]):
                    accepted.add(T0 + arg * MINUTE)
            elif op == "send":
                send(arg)
            elif op == "disk":
                db.broken = arg
            elif not db.broken:  # a clean restart: what is held must reach the disk first
                sp.close()
                assert sp.held() == {}
                sp = Spool(Path(tmp) / "s.sqlite3", retry_s=0)
                sp.open()
                db = BreakableDb(sp.db)
                sp._db = db  # type: ignore[assignment]
        while sp.depth():
            send(5)
        db.broken = False
        sp.close()
        assert sent == sorted(set(sent)), "sent twice or out of order"
        assert set(sent) == accepted, "lost"


def test_a_degraded_spool_tries_the_disk_at_most_every_retry_s(tmp_path: Path) -> None:
    now = [0.0]
    sp = Spool(tmp_path / "s.sqlite3", retry_s=5.0, clock=lambda: now[0])
    sp.open()
    db = BreakableDb(sp.db)
    sp._db = db  # type: ignore[assignment]
    db.broken = True
    for i in range(10):
        sp.add([(SID, k(i))])
        sp.ack(SID, T0 + (i - 1) * MINUTE) if i % 3 == 2 else None
    assert db.transactions == 1 and sp.state.startswith("degraded")
    db.broken = False
    sp.add([(SID, k(10))])
    assert db.transactions == 1  # not yet: held, still served
    assert [r.open_time for r in sp.peek(SID, 100)[0]] == [T0 + i * MINUTE for i in range(8, 11)]
    now[0] = 5.0
    sp.add([(SID, k(11))])
    assert db.transactions == 2 and sp.state == OK and sp.held() == {}
    assert sp.depth() == {SID: 4}
    sp.close()
