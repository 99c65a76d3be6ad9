"""A Pub/Sub emulator outage while the streamer publishes through the local cloud stack
(Pub/Sub emulator → ingest function → fake-gcs): nothing is lost, the spool is sent on recovery,
and the lake object completes byte-identical to the simulator's truth."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from binance_sim.testing import run_simulator
from klinelake.core.intervals import MINUTE
from localcloud import Stack, wait_for
from tests.streamer.helpers import (
    assert_lake_matches_truth,
    caught_up,
    counter,
    lake_has_published,
    lake_last_open,
    published_upto,
    seed_published,
    streamer,
    wait_health,
)

pytestmark = pytest.mark.stack
SPEED = 240.0  # a 1m kline closes every 0.25 real seconds
STREAMS = [("OUTAGEUSDC", "1m"), ("OUTAGEUSDC", "1h")]


def test_pubsub_outage_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    args = ["--start", "2024-03-01T00:50:00", "--speed", str(SPEED)]
    for s, i in STREAMS:
        args += ["--synthetic", f"{s}:{i}:2024-02-01"]
    env = {**os.environ, **stack.env()}
    state = tmp_path / "state"
    with run_simulator(None, *args) as sim:
        first = seed_published(state, sim, STREAMS)
        with streamer(sim, state, "OUTAGEUSDC", "1m,1h", SPEED,
                      "--publish-timeout", "3", env=env) as st:  # fmt: skip
            wait_for(lambda: lake_last_open(stack, "OUTAGEUSDC", "1m"), 60, 0.1, "first rows")
            # The emulator is frozen, not restarted: a restart drops the messages it has
            # acknowledged but not pushed yet (real Pub/Sub never does), which no publisher
            # could recover. Frozen, every publish times out (3 s) and is retried while the
            # spool holds the klines; a publish it took before or while frozen is delivered
            # once it thaws, and its retry is a duplicate the lake writer drops.
            emulator = stack.state.pids["pubsub"]
            os.killpg(emulator, signal.SIGSTOP)
            down_at = sim.state()["now"]
            try:
                wait_health(
                    st, lambda h: counter(h, "spool_depth") > 20 and any(
                        v["send_failures"] for v in h["streams"].values()
                    ), 60, "publishes failing, spool growing",
                )  # fmt: skip
            finally:
                os.killpg(emulator, signal.SIGCONT)
            up_at = sim.state()["now"]

            # after the outage it catches up with live
            def recovered(h: dict[str, Any]) -> bool:
                last = h["streams"]["OUTAGEUSDC@1m"]["last_closed_open_time"] or 0
                return last >= sim.state()["now"] - 5 * MINUTE and h["spool_depth"] == 0

            wait_health(st, recovered, 90, "caught up after the outage")
            last = wait_for(lambda: caught_up(stack, sim, STREAMS), 60, 0.1, "live again")
            assert st.terminate() == 0
            h = st.health()
        assert published_upto(state)["OUTAGEUSDC@1m"] > up_at
        wait_for(lambda: lake_has_published(stack, state, first), 120, 0.2, "lake complete")
        for s, i in STREAMS:
            sid = f"{s}@{i}"
            assert_lake_matches_truth(stack, sim, s, i, first=first[sid], last=last[sid])
    failures = sum(v["send_failures"] for v in h["streams"].values())
    print(
        f"\noutage: {(up_at - down_at) / 1000 / SPEED:.1f}s real, {failures} failed publishes "
        f"retried; spool depth at exit {h['spool_depth']}"
    )
