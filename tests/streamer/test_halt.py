"""A halted symbol on a shared connection (issue 12, item 8): the streamer asks REST, marks the
stream halted and does not reconnect; the other streams on the connection lose nothing; the
halted stream is live again when trading resumes, and the halt is recorded as confirmed empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from binance_sim.testing import run_simulator
from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.core.intervals import MINUTE
from localcloud import wait_for
from tests.streamer.helpers import (
    assert_lake_matches_truth,
    caught_up,
    seed_published,
    streamer,
    wait_health,
)

SPEED = 120.0  # a simulated minute in 0.5 s
STREAMS = [(s, "1m") for s in ("HALTAUSDC", "HALTBUSDC", "HALTCUSDC")]  # one connection
HALTED = "HALTBUSDC@1m"


@pytest.mark.parametrize("per_connection", [3, 1], ids=["shared", "alone"])
def test_a_halted_stream_is_not_a_reason_to_reconnect(tmp_path: Path, per_connection: int) -> None:
    """Shared: the other streams on the connection deliver. Alone: every stream on the halted
    stream's connection is silent, which REST tells apart from a dead connection."""
    args = ["--start", "2024-06-01T00:00:00", "--speed", str(SPEED)]
    for s, i in STREAMS:
        args += ["--synthetic", f"{s}:{i}:2024-05-30"]
    lake, state = tmp_path / "lake", tmp_path / "state"
    # A grace that is not a whole number of minutes: the old stall check, which compared the
    # halted stream's deadline with the other streams' last close, reconnected whenever a check
    # fell between that deadline and the next minute's closes.
    flags = ("--stall-grace", "400", "--streams-per-connection", str(per_connection))
    with run_simulator(None, *args) as sim:
        first = seed_published(state, sim, STREAMS)
        with streamer(sim, state, "HALTAUSDC,HALTBUSDC,HALTCUSDC", "1m", SPEED, *flags,
                      lake=lake) as st:  # fmt: skip
            h = wait_health(st, lambda h: all(
                v["last_closed_open_time"] for v in h["streams"].values()
            ), 30, "streams live")  # fmt: skip
            assert h["reconnects"] == 0
            now = sim.state()["now"]
            start = (now // MINUTE + 1) * MINUTE
            halt = {"symbol": "HALTBUSDC", "interval": "1m", "start": start,
                    "end": start + 11 * MINUTE}  # fmt: skip
            sim.admin({"halt": halt})
            wait_health(st, lambda h: h["streams"][HALTED]["ws_state"] == "halted", 30,
                        "the halted stream is marked halted")  # fmt: skip
            wait_for(lambda: sim.state()["now"] > halt["end"] + 2 * MINUTE, 30, 0.05, "halt ends")
            h = wait_health(st, lambda h: h["streams"][HALTED]["ws_state"] == "live"
                            and h["streams"][HALTED]["last_closed_open_time"] > halt["end"],
                            30, "the halted stream resumes")  # fmt: skip
            assert h["reconnects"] == 0, "a halt dropped the shared connection"
            assert sim.state()["counters"]["ws_opened"] == 3 // per_connection
            log = st.log_text()
            # (freezing the market makes every stream silent: reconnects from here are right)
            sim.clock(speed=0.001)
            last = wait_for(lambda: caught_up(lake, sim, STREAMS), 30, 0.1, "lake caught up")
            assert st.terminate() == 0
        assert log.count('"message":"stream halted') == 1
        assert '"message":"stream resumed"' in log and "connection stalled" not in log
        for s, i in STREAMS:
            sid = f"{s}@{i}"
            assert_lake_matches_truth(lake, sim, s, i, first=first[sid], last=last[sid])
        empty = EmptyRanges(state).get("HALTBUSDC", "1m")
        assert empty == [(halt["start"], halt["end"])]
