"""Futures benchmarks (run by hand): `python bench/bench_futures.py [backfill|streamer|all]`
(`--help` lists the runs; `all`, the default, runs both, ~12 min).

- backfill: USD-M history through the simulator's one 2400/min weight pool (real 60 s windows):
  weight used per window against the limit, bars/s, 429s, for page limits 499 (weight 2), 1000
  (5) and 1500 (10) side by side, at budget shares 0.8 (the default) and 0.95.
- streamer: CPU and RSS of one streamer following `um:quote=USDT` (every symbol of the
  simulator's USD-M market: N perpetuals, 1m), real time, 250 ms open-kline pushes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from binance_sim.testing import run_simulator  # noqa: E402
from tests.streamer.helpers import streamer  # noqa: E402

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MINUTE = 60_000


def backfill_run(tmp: Path, page_limit: int, share: float, seconds: float) -> None:
    symbols = [f"F{i:02d}USDT" for i in range(20)]
    args = ["--start", str(START), "--speed", "1"]
    for s in symbols:
        args += ["--futures", f"um:{s}:onboard=2024-01-01"]
    with run_simulator(None, *args) as sim:
        cmd = [sys.executable, "-m", "backfill", "--market", "um", "--symbols", ",".join(symbols),
               "--intervals", "1m", "--start", "2024-01-01", "--end", str(START - 1),
               "--rest-url", sim.url, "--lake", str(tmp / f"lake-{page_limit}-{share}"),
               "--state-dir", str(tmp / f"st-{page_limit}-{share}"), "--page-limit",
               str(page_limit), "--budget-share", str(share), "--concurrency", "16"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        peaks: dict[int, int] = {}
        try:
            while time.monotonic() - t0 < seconds and proc.poll() is None:
                time.sleep(2)  # sampling interval (each sample costs 1 weight: 30/min)
                try:  # weight 1: read the window's counter
                    r = httpx.get(f"{sim.url}/fapi/v1/ping", timeout=30)
                except httpx.TimeoutException:
                    continue
                window = int(time.time() // 60)
                peaks[window] = max(peaks.get(window, 0), int(r.headers["X-MBX-USED-WEIGHT-1M"]))
        finally:
            proc.terminate()
            proc.wait(30)
        elapsed = time.monotonic() - t0
        stats = sim.state()["counters"]
    rows = 0
    lake = tmp / f"lake-{page_limit}-{share}" / "raw"
    for f in lake.glob("*.jsonl"):
        rows += sum(1 for _ in f.open("rb"))
    full = [v for w, v in sorted(peaks.items())][1:-1] or list(peaks.values())  # whole windows
    print(
        f"page limit {page_limit:4d}, share {share}: {rows / elapsed:7.0f} bars/s in the lake, "
        f"weight per full minute {min(full)}-{max(full)} of 2400 "
        f"({max(full) / 2400:.0%} peak), 429s {stats['responses_429']}, 418s "
        f"{stats['responses_418']}, {elapsed:.0f} s"
    )


def streamer_run(tmp: Path, n: int, seconds: float) -> None:
    args = ["--start", str(START), "--speed", "1"]
    for i in range(n):
        args += ["--futures", f"um:S{i:03d}USDT:onboard=2025-06-01"]
    with (
        run_simulator(None, *args) as sim,
        streamer(
            sim,
            tmp / f"st-{n}",
            "um:quote=USDT",
            "1m",
            1.0,
            "--ws-url",
            f"{sim.ws_url}/fstream",
            lake=tmp / f"lake-s{n}",
        ) as st,  # fmt: skip
    ):
        proc = psutil.Process(st.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(st.health().get("streams", {})) < n:
            time.sleep(0.2)  # polling interval
        c0 = proc.cpu_times()
        f0 = sim.state()["counters"]["ws_frames_sent"]
        t0 = time.monotonic()
        rss = []
        while time.monotonic() - t0 < seconds:
            rss.append(proc.memory_info().rss / 2**20)
            time.sleep(1)  # sampling interval
        c1 = proc.cpu_times()
        frames = (sim.state()["counters"]["ws_frames_sent"] - f0) / (time.monotonic() - t0)
        h = st.health()
        st.terminate()
    cpu = (c1.user + c1.system - c0.user - c0.system) / (time.monotonic() - t0)
    print(
        f"streamer, {n} USD-M streams (1m, 250 ms pushes, {frames:.0f} frames/s received): "
        f"CPU {cpu:.1%} of a core, RSS {min(rss):.0f}-{max(rss):.0f} MB over {seconds:.0f} s; "
        f"{sum(v.get('published_rows', 0) for v in h['streams'].values())} closed klines "
        f"published, reconnects {h['reconnects']}"
    )


def backfill_runs(tmp: Path) -> None:
    for limit in (499, 1000, 1500):
        backfill_run(tmp, limit, 0.8, 130)
    backfill_run(tmp, 499, 0.95, 130)


RUNS = {"backfill": backfill_runs, "streamer": lambda tmp: streamer_run(tmp, 200, 120)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "runs", nargs="*", choices=[*RUNS, "all"], default=["all"],
        help="backfill: page limits 499/1000/1500 at share 0.8 and 499 at 0.95, 130 s each; "
        "streamer: 200 USD-M streams for 120 s; all: both",
    )  # fmt: skip
    names = [a for a in parser.parse_args().runs if a != "all"] or list(RUNS)
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            RUNS[name](Path(d))


if __name__ == "__main__":
    main()
