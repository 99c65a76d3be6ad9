"""1,000 streams on the simulator: every closed kline published, once each, in order."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from binance_sim.testing import run_simulator
from klinelake.core.intervals import MINUTE
from localcloud import wait_for
from tests.streamer.helpers import (
    assert_lake_matches_truth,
    lake_last_open,
    seed_published,
    streamer,
)

N = 1000
SPEED = 60.0  # a 1m kline closes every real second


def test_1000_streams_publish_every_closed_kline(tmp_path: Path) -> None:
    symbols = [f"S{i:04d}USDC" for i in range(N)]
    args = ["--start", "2024-01-01T00:00:00", "--speed", str(SPEED), "--max-update-hz", "0.2"]
    for s in symbols:
        args += ["--synthetic", f"{s}:1m:2023-12-31"]
    lake = tmp_path / "lake"
    with run_simulator(None, *args) as sim:
        start = sim.state()["now"]
        # published "up to" 3 minutes ahead: 1,000 REST repairs at start would measure the REST
        # budget, not the streams; the head then comes over WS, exactly from the seed on
        first = seed_published(
            tmp_path / "state", sim, [(s, "1m") for s in symbols], ahead_ms=3 * MINUTE
        )
        with streamer(
            sim, tmp_path / "state", ",".join(symbols), "1m", SPEED,
            "--streams-per-connection", "400", lake=lake,
        ) as st:  # fmt: skip
            # a few closed klines per stream, all of them in the lake
            target = start + 7 * MINUTE

            def done() -> bool:
                assert st.alive(), st.log_text()[-2000:]
                return all((lake_last_open(lake, s, "1m") or 0) >= target for s in symbols)

            t0 = time.monotonic()
            wait_for(done, 120, 0.25, "every stream has 4 minutes of closed klines")
            took = time.monotonic() - t0
            proc = psutil.Process(st.pid)
            rss_mb = proc.memory_info().rss / 2**20
            cpu = proc.cpu_times()
            health = st.health()
            t_stop = time.monotonic()
            assert st.terminate() == 0  # within systemd's TimeoutStopSec (30 s)
            stop_s = time.monotonic() - t_stop
        rows = sum(
            assert_lake_matches_truth(lake, sim, s, "1m", first=first[f"{s}@1m"], last=target)
            for s in symbols
        )
    conns = health.get("connections")
    print(f"\n1000 streams: {rows} rows, RSS {rss_mb:.1f} MB, CPU user {cpu.user:.1f}s "
          f"sys {cpu.system:.1f}s, connections {conns}, {took:.1f}s, "
          f"SIGTERM to exit {stop_s:.1f}s")  # fmt: skip
    assert rows >= N * 4
    assert health["connections"] == 3
    assert rss_mb < 300
