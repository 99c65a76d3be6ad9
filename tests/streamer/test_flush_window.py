"""The per-stream flush window (FLUSH_WINDOW_S, issue 15): the pure policy, and end to end on
the simulator: with W > 0 far fewer messages (each one a lake write), and every closed kline in
the lake exactly once across a SIGKILL inside a window and a restart; SIGTERM flushes the window.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binance_sim.testing import run_simulator
from klinelake.core.contract import MAX_ROWS
from klinelake.core.intervals import INTERVALS, close_time, interval_ms
from localcloud import wait_for
from streamer.flush_window import FlushWindow
from tests.streamer.helpers import (
    Streamer,
    assert_lake_matches_truth,
    caught_up,
    seed_published,
    wait_health,
)

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z: aligned to every fixed interval up to 1d


def test_window_zero_sends_at_once_and_a_window_holds_until_w_after_the_first_close() -> None:
    first_close = close_time(T0, "1m")
    assert FlushWindow(0).wait_ms(
        now_ms=T0, first_open_time=T0, first_close_time=first_close, interval="1m", held=1
    ) == 0  # fmt: skip
    w = FlushWindow.of_seconds(60)
    kw: dict[str, Any] = {
        "first_open_time": T0,
        "first_close_time": first_close,
        "interval": "1m",
        "held": 1,
    }
    assert w.wait_ms(now_ms=first_close + 1, **kw) == 59_999
    assert w.wait_ms(now_ms=first_close + 60_000, **kw) == 0
    assert w.wait_ms(now_ms=first_close + 1, draining=True, **kw) == 0
    # a window longer than a full batch of 1s klines: due when 5,000 of them can have closed
    long = FlushWindow.of_seconds(86_400)
    due = long.due_at(T0, close_time(T0, "1s"), "1s")
    assert due == T0 + MAX_ROWS * 1000 - 1
    assert long.wait_ms(now_ms=T0, first_open_time=T0, first_close_time=T0 + 999,
                        interval="1s", held=MAX_ROWS) == 0  # fmt: skip
    with pytest.raises(ValueError, match=">= 0"):
        FlushWindow(-1)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    interval=st.sampled_from([i for i in INTERVALS if i != "1M"]),
    window_s=st.integers(0, 86_400),
    max_rows=st.integers(1, MAX_ROWS),
    first_index=st.integers(0, 10_000),
    elapsed=st.integers(0, 10**10),
)
def test_no_kline_waits_past_its_window_and_no_due_batch_can_exceed_the_cap(
    interval: str, window_s: int, max_rows: int, first_index: int, elapsed: int
) -> None:
    w = FlushWindow.of_seconds(window_s, max_rows)
    step = interval_ms(interval)
    first = T0 + first_index * step
    first_close = close_time(first, interval)
    now = first_close + elapsed
    # at most this many klines of the stream can have closed from `first` up to `now`
    closed = (now - first) // step
    held = min(closed, max_rows)
    wait = w.wait_ms(now_ms=now, first_open_time=first, first_close_time=first_close,
                     interval=interval, held=held)  # fmt: skip
    assert 0 <= wait <= window_s * 1000  # never held past W after the oldest close
    if wait:  # still holding: fewer than a full batch can be waiting
        assert closed < max_rows and now < first_close + window_s * 1000
    else:
        assert window_s == 0 or held >= max_rows or now >= w.due_at(first, first_close, interval)


# --- end to end -----------------------------------------------------------------------------

SPEED = 60.0  # a simulated minute in a real second
STREAMS = [("WINAUSDC", "1s"), ("WINBUSDC", "1s")]
WINDOW_S = 60  # server seconds: up to sixty 1s klines per message


def sim_args() -> list[str]:
    args = ["--start", "2024-06-01T00:00:00", "--speed", str(SPEED)]
    for s, i in STREAMS:
        args += ["--synthetic", f"{s}:{i}:2024-05-31T23:00:00"]
    return args


def spooled_rows(state: Path) -> int:
    db = sqlite3.connect(f"file:{state / 'spool.sqlite3'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])
    finally:
        db.close()


def published(log: str) -> dict[str, int]:
    """Batches handed to the sink (each one a message, and a write of the lake object), and
    the klines they carried, from the DEBUG log."""
    lines = [orjson.loads(x) for x in log.splitlines() if '"message":"published"' in x]
    return {"messages": len(lines), "rows": sum(int(x["rows"]) for x in lines)}


def run_streams(
    tmp_path: Path, sim: Any, name: str, window_s: int, restart_window_s: int | None = None
) -> dict[str, int]:
    """Stream STREAMS for 5 simulated minutes with a window; with `restart_window_s`, SIGKILL
    inside a window (klines held in the spool) and restart with that window for one more
    minute. Then freeze the market and SIGTERM: the lake must hold every closed kline once.
    Returns what the first process published."""
    lake, state = tmp_path / f"lake-{name}", tmp_path / f"state-{name}"
    first = seed_published(state, sim, STREAMS)
    syms = ",".join(s for s, _ in STREAMS)

    def start(window: int) -> Streamer:
        flags = ("--flush-window", str(window), "--log-level", "DEBUG")
        return Streamer(sim, state, syms, "1s", SPEED, *flags, lake=lake)

    began = sim.state()["now"]
    st = start(window_s)
    try:
        wait_for(lambda: sim.state()["now"] > began + 5 * 60_000, 30, 0.05, "time passes")
        if restart_window_s is not None:
            # inside a window: closed klines held (spooled, unpublished), then SIGKILL
            wait_for(lambda: spooled_rows(state) >= 20, 30, 0.01, "klines held in the spool")
            st.kill()
            held = spooled_rows(state)
            assert held > 0
            print(f"\nSIGKILL with {held} closed klines held in the spool")
            stats = published(st.log_text())
            st = start(restart_window_s)
            wait_health(st, lambda h: bool(h.get("streams")), 30, "restarted")
            again = sim.state()["now"]
            wait_for(lambda: sim.state()["now"] > again + 60_000, 30, 0.05, "time passes")
        sim.clock(speed=0.001)  # freeze the market; SIGTERM must flush what is held
        assert st.terminate() == 0
        if restart_window_s is None:
            stats = published(st.log_text())
    finally:
        st.kill()
    last = caught_up(lake, sim, STREAMS)
    assert last is not None, "SIGTERM did not flush the held klines"
    assert spooled_rows(state) == 0
    for s, i in STREAMS:
        sid = f"{s}@{i}"
        assert_lake_matches_truth(lake, sim, s, i, first=first[sid], last=last[sid])
    return stats


def test_a_window_sends_fewer_messages_and_loses_nothing_across_a_sigkill(
    tmp_path: Path,
) -> None:
    with run_simulator(None, *sim_args()) as sim:
        at_once = run_streams(tmp_path, sim, "w0", 0)
        sim.clock(speed=SPEED)
        # restarted with an hour's window (a minute of real time here): nothing the second
        # process holds can fall due before SIGTERM, so only the drain can publish it
        windowed = run_streams(tmp_path, sim, "w60", WINDOW_S, restart_window_s=3600)
    print(f"\nW=0: {at_once}\nW={WINDOW_S}: {windowed}")  # the figures of docs/cost.md
    # W=60 on 1s: up to 60 klines per message (the start's first window is cut short).
    # W=0 at this accelerated clock already batches what closes while a write is in flight
    # (at real time, one message per close): the window must still divide messages by > 5.
    assert windowed["messages"] * 10 <= windowed["rows"]
    assert windowed["rows"] / windowed["messages"] > 5 * at_once["rows"] / at_once["messages"]
