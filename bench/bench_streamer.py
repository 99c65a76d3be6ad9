"""Streamer benchmark (run by hand): `python bench/bench_streamer.py [latency|cloud|rss|all]`,
or `python bench/bench_streamer.py cadence [SYMBOLS ...] [--baseline DIR] [--seconds S]`.

- latency: closed kline at the simulator → row in the local lake, p50/p99. The simulator runs
  at real speed with `1s` streams; a kline's close is `close_time + 1` on the simulator's clock,
  mapped to the wall clock; the lake files are polled every 2 ms.
- cloud: the same through the local cloud stack (Pub/Sub emulator → ingest function → fake-gcs).
- rss: RSS and CPU of the streamer after 1 and 7 simulated days, on 1 stream (1m) and on
  1,000 streams (1h), at accelerated time.
- cadence: CPU per frame and RSS of the streamer at Binance's real cadence (simulator at speed 1:
  a forming frame every 2 s per stream, a closed one per interval), for SYMBOLS symbols (default
  200) x 15 intervals (1m..1M; 1s would add a lake write per stream per second, a sink cost, not
  the hot loop). Streamer CPU over a steady window divided by the frames the simulator sent.
  `--baseline DIR` runs another checkout's streamer against the same simulator, right after.
  `--update-hz H` thins forming frames to at most H per stream per second (the simulator's
  `--max-update-hz`): at 24,000 streams the simulator cannot send the full cadence on this
  machine, and the streamer's RSS depends on its streams, not on the frame rate.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import psutil  # noqa: E402

from binance_sim.testing import run_simulator  # noqa: E402
from klinelake.core.intervals import DAY  # noqa: E402
from klinelake.core.row import parse_lake_line  # noqa: E402
from localcloud import wait_for  # noqa: E402
from tests.streamer.helpers import lake_bytes, streamer  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def latency(lake: Any, state: Path, seconds: float, n_streams: int, env: dict[str, str] | None,  # noqa: PLR0917
            label: str) -> None:  # fmt: skip
    symbols = [f"LAT{i}USDC" for i in range(n_streams)]
    args = ["--speed", "1"]
    for s in symbols:
        args += ["--synthetic", f"{s}:1s:2024-01-01"]
    samples: list[float] = []
    with run_simulator(None, *args) as sim:
        t_wall, t_sim = time.time(), sim.state()["now"]
        offset = t_sim - t_wall * 1000  # sim ms = wall ms + offset (speed 1)
        kw: dict[str, Any] = {"env": env} if env else {"lake": lake}
        with streamer(sim, state, ",".join(symbols), "1s", 1.0, **kw) as st:
            seen = {s: 0 for s in symbols}
            end = time.monotonic() + seconds
            warm = time.monotonic() + 3
            while time.monotonic() < end:
                for s in symbols:
                    data = lake_bytes(lake, s, "1s")
                    data = data[: data.rfind(b"\n") + 1]
                    lines = data.splitlines()
                    if len(lines) > seen[s]:
                        now_sim = time.time() * 1000 + offset
                        for line in lines[seen[s] :]:
                            k = parse_lake_line(line)
                            if time.monotonic() > warm:
                                samples.append(now_sim - (k.close_time + 1))
                        seen[s] = len(lines)
                time.sleep(0.002)  # polling interval
            proc = psutil.Process(st.pid)
            cpu = proc.cpu_times()
            st.terminate()
    print(
        f"{label}: {len(samples)} klines, {n_streams} streams of 1s: latency p50 "
        f"{statistics.median(samples):.0f} ms, p99 {pct(samples, 99):.0f} ms, max "
        f"{max(samples):.0f} ms; streamer CPU {cpu.user + cpu.system:.1f} s in {seconds:.0f} s"
    )


def rss_run(n: int, interval: str, days: float, real_s: float, tmp: Path) -> None:
    speed = days * 86400 / real_s
    symbols = [f"R{i:04d}USDC" for i in range(n)]
    args = ["--start", "2024-01-01T00:00:00", "--speed", f"{speed:.0f}", "--max-update-hz", "0.2"]
    for s in symbols:
        args += ["--synthetic", f"{s}:{interval}:2023-12-31"]
    lake = tmp / f"lake-{n}"
    with run_simulator(None, *args) as sim:
        start = sim.state()["now"]
        with streamer(sim, tmp / f"state-{n}", ",".join(symbols), interval, speed,
                      "--streams-per-connection", "1000", lake=lake) as st:  # fmt: skip
            proc = psutil.Process(st.pid)
            marks: dict[int, tuple[float, float]] = {}
            while len(marks) < int(days):
                day = (sim.state()["now"] - start) // DAY
                if day >= 1 and day not in marks:
                    c = proc.cpu_times()
                    marks[day] = (proc.memory_info().rss / 2**20, c.user + c.system)
                time.sleep(0.05)  # polling interval
            h = st.health()
            st.terminate()
    rows = sum(v["published_rows"] for v in h["streams"].values())
    line = ", ".join(f"day {d}: {r:.1f} MB" for d, (r, _) in sorted(marks.items()))
    cpu = marks[max(marks)][1]
    print(
        f"rss {n} stream(s) of {interval}, {days:.0f} simulated days in ~{real_s:.0f} s: {line}; "
        f"CPU {cpu:.1f} s; {rows} rows published, lag at end "
        f"{max((v['lag_ms'] or 0) for v in h['streams'].values()) / 1000:.0f} s (server)"
    )


CADENCE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
                     "3d", "1w", "1M")  # fmt: skip


def _spawn_streamer(root: Path, sim: Any, tmp: Path, symbols: list[str]) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "streamer", "--symbols", ",".join(symbols),
        "--intervals", ",".join(CADENCE_INTERVALS), "--rest-url", sim.url, "--ws-url", sim.ws_url,
        "--state-dir", str(tmp / "state"), "--lake", str(tmp / "lake"),
        "--streams-per-connection", "1000", "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("KLINES_TOPIC", None)
    return subprocess.Popen(args, cwd=root, env=env, stderr=subprocess.DEVNULL)


def _settled(health_file: Path, n_streams: int) -> bool:
    """Every connection up and the start-up repairs done: what follows is the steady state."""
    try:
        h = orjson.loads(health_file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return bool(
        h.get("connections", 0) >= -(-n_streams // 1000)
        and h.get("spool_depth", 1) == 0
        and h.get("closed_klines_received", 0) > 0
    )


def cadence_run(root: Path, sim: Any, tmp: Path, symbols: list[str], seconds: float) -> str:
    n = len(symbols) * len(CADENCE_INTERVALS)
    proc = _spawn_streamer(root, sim, tmp, symbols)
    try:
        wait_for(lambda: _settled(tmp / "state" / "health.json", n), 600, 0.5, "streamer settled")
        ps = psutil.Process(proc.pid)
        c0, s0, t0 = ps.cpu_times(), sim.state()["counters"], time.monotonic()
        time.sleep(seconds)  # the measurement window (a benchmark, not a synchronisation)
        c1, s1, t1 = ps.cpu_times(), sim.state()["counters"], time.monotonic()
        rss = ps.memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(30)
    frames = s1["ws_frames_sent"] - s0["ws_frames_sent"]
    closed = sum(s1["closed_klines_sent"].values()) - sum(s0["closed_klines_sent"].values())
    cpu = c1.user + c1.system - c0.user - c0.system
    elapsed = t1 - t0
    return (
        f"{n:,} streams: {frames / elapsed:,.0f} frames/s ({closed / elapsed:,.1f} closed/s) "
        f"over {elapsed:.0f} s; CPU {100 * cpu / elapsed:.1f}% of a core = "
        f"{1e6 * cpu / frames:.1f} us/frame; RSS {rss:.0f} MB"
    )


def cadence(n_symbols: int, seconds: float, baseline: Path | None, update_hz: float) -> None:
    symbols = [f"C{i:04d}USDT" for i in range(n_symbols)]
    args = ["--start", "2024-01-01T00:00:00", "--speed", "1", "--weight-limit", "1000000000",
            "--max-update-hz", f"{update_hz:g}"]  # fmt: skip
    for s in symbols:
        for iv in CADENCE_INTERVALS:
            args += ["--synthetic", f"{s}:{iv}:2023-12-01"]
    with tempfile.TemporaryDirectory() as d, run_simulator(None, *args) as sim:
        sim_ps = psutil.Process(sim.pid)
        runs = [("ours", ROOT)] + ([("baseline", baseline)] if baseline else [])
        for label, root in runs:
            c0 = sim_ps.cpu_times()
            t0 = time.monotonic()
            line = cadence_run(root, sim, Path(d) / label, symbols, seconds)
            c1 = sim_ps.cpu_times()
            sim_share = (c1.user + c1.system - c0.user - c0.system) / (time.monotonic() - t0)
            print(f"cadence {label:8s} {line}; simulator {100 * sim_share:.0f}% of a core; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which == "cadence":
        import argparse

        p = argparse.ArgumentParser(prog="bench_streamer.py cadence")
        p.add_argument("symbols", type=int, nargs="*", default=[200])
        p.add_argument("--seconds", type=float, default=30.0)
        p.add_argument("--baseline", type=Path, default=None)
        p.add_argument("--update-hz", type=float, default=10.0)
        opts = p.parse_args(sys.argv[2:])
        for n in opts.symbols:
            cadence(n, opts.seconds, opts.baseline, opts.update_hz)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if which in ("latency", "all"):
            latency(tmp / "lake", tmp / "state-lat", 20, 5, None, "local lake")
        if which in ("cloud", "all"):
            from localcloud import Stack

            with Stack(tmp / "stack", project="bench-project") as stack:
                env = {**os.environ, **stack.env()}
                latency(stack, tmp / "state-cloud", 20, 2, env, "cloud stack")
        if which in ("rss", "all"):
            rss_run(1, "1m", 7, 60, tmp)
            rss_run(1000, "1h", 7, 280, tmp)  # a load it sustains (2,160x real time)


if __name__ == "__main__":
    main()
