"""End to end against the simulator at accelerated time, asserting on the lake (issue 7).

One run spanning simulated days with every WS fault the simulator offers (dropped connection,
malformed frames, a stalled connection that still answers pings, serverShutdown, an unplanned
24 h cut, planned replacement before the cut, a halted stream) and a SIGKILL + restart of the
streamer: at the end each lake object is byte-identical to the simulator's truth over its span.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from binance_sim.testing import run_simulator
from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.core.intervals import HOUR
from localcloud import wait_for
from tests.streamer.helpers import (
    assert_lake_matches_truth,
    caught_up,
    counter,
    seed_published,
    streamer,
    wait_health,
)

SPEED = 14_400.0  # a simulated day in 6 real seconds
SYMBOLS = ("AAAUSDC", "BBBUSDC", "CCCUSDC")
INTERVALS = ("1m", "1h")
STREAMS = [(s, i) for s in SYMBOLS for i in INTERVALS]


def sim_args(speed: float) -> list[str]:
    args = ["--start", "2024-01-01T00:00:00", "--speed", str(speed), "--ping-interval", "1",
            "--pong-timeout", "5", "--max-conn-age", "86400"]  # fmt: skip
    for s, i in STREAMS:
        args += ["--synthetic", f"{s}:{i}:2023-12-01"]
    return args


def test_days_of_faults_and_a_sigkill_leave_the_lake_complete(tmp_path: Path) -> None:
    lake, state = tmp_path / "lake", tmp_path / "state"
    common: tuple[Any, ...] = (state, ",".join(SYMBOLS), ",".join(INTERVALS), SPEED,
                               "--max-conn-age", "43200", "--subscribe-timeout", "2")  # fmt: skip
    with run_simulator(None, *sim_args(SPEED)) as sim:
        first = seed_published(state, sim, STREAMS)
        with streamer(sim, *common, lake=lake) as st:
            h = wait_health(st, lambda h: all(
                v["last_closed_open_time"] for v in h["streams"].values()
            ), 20, "every stream published")  # fmt: skip
            rc0 = counter(h, "reconnects")

            sim.admin({"ws_drop": True})
            h = wait_health(
                st, lambda h: counter(h, "reconnects") > rc0, 20, "reconnect after drop"
            )

            sim.admin({"ws_malformed": 5})
            wait_health(st, lambda h: counter(h, "malformed_frames") >= 5, 20, "malformed counted")

            # A halt: BBBUSDC 1m has no klines for 2 simulated hours (quiet, not stalled).
            now = sim.state()["now"]
            halt = {
                "symbol": "BBBUSDC",
                "interval": "1m",
                "start": now + HOUR,
                "end": now + 3 * HOUR,
            }
            sim.admin({"halt": halt})

            rc = counter(st.health(), "reconnects")
            sim.admin({"ws_stall": True, "answer_pings": True})
            wait_health(st, lambda h: counter(h, "reconnects") > rc, 30, "stall detected")
            sim.admin({"ws_stall": False})
            # a connection opened while stalled never got its SUBSCRIBE ack: wait until a
            # fresh one flows again, so that serverShutdown hits a healthy connection
            n = counter(st.health(), "closed_klines_received")
            wait_health(st, lambda h: counter(h, "closed_klines_received") > n + 100, 20, "flow")

            rc = counter(st.health(), "reconnects")
            sim.admin({"ws_shutdown": True})
            wait_health(st, lambda h: counter(h, "reconnects") > rc, 20, "serverShutdown switch")
            assert '"reason":"serverShutdown"' in st.log_text()

            rc = counter(st.health(), "reconnects")
            sim.admin({"ws_cut": True})
            wait_health(st, lambda h: counter(h, "reconnects") > rc, 20, "reconnect after cut")
            # planned replacement before the 24 h cut (every 12 simulated hours here)
            wait_for(lambda: "connection age" in st.log_text(), 20, 0.05, "age rollover")

            st.kill()  # SIGKILL: whatever was in flight stays in the spool
            killed_at = sim.state()["now"]

        # down for 4 simulated hours, then restart on the same state dir
        wait_for(lambda: sim.state()["now"] > killed_at + 4 * HOUR, 20, 0.05, "time passes")
        with streamer(sim, *common, lake=lake) as st:
            wait_health(st, lambda h: bool(h.get("streams")), 20, "restarted")
            start = sim.state()["now"]
            wait_for(lambda: sim.state()["now"] > start + 6 * HOUR, 20, 0.05, "time passes")
            sim.clock(speed=0.001)  # all but freeze the market, then let the streamer catch up
            last = wait_for(lambda: caught_up(lake, sim, STREAMS), 30, 0.1, "lake caught up")
            assert st.terminate() == 0
            log = st.log_text()

        total = 0
        for s, i in STREAMS:
            sid = f"{s}@{i}"
            total += assert_lake_matches_truth(lake, sim, s, i, first=first[sid], last=last[sid])
        counters = sim.state()["counters"]

    # the stall was detected by us (every stream silent), not by the server closing the socket
    assert '"severity":"WARNING","message":"connection stalled: every stream silent' in log
    assert total > 3 * 1440 * 2  # more than two simulated days of 1m klines per symbol
    assert counters["ws_opened"] >= 6
    assert "gaps repaired over REST" in log
    # the halt was fetched once, found empty, and recorded so that it is never fetched again
    empty = EmptyRanges(tmp_path / "state").get("BBBUSDC", "1m")
    assert empty and halt["start"] <= empty[0][0] and empty[-1][1] <= halt["end"]
