"""Backfill benchmark (run by hand): our `python -m backfill` vs python-binance's
`Client.get_historical_klines`, side by side in one run against the same simulator.

    .venv/bin/python bench/bench_backfill.py [--days 365] [--latency-ms 50]

The simulator serves a synthetic BTCUSDC 1m stream with a fixed delay per REST request (50 ms by
default). Our backfill writes into a temporary local lake; python-binance only collects the rows
in memory (it has no sink), so the comparison favours it. Prints wall times, rows, requests, the
ratio and the weight each used (from the simulator's counter and the X-MBX-USED-WEIGHT-1M header).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from binance_sim.testing import SimProcess, run_simulator  # noqa: E402

START = datetime(2022, 1, 1, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def sim_cpu_s(sim: SimProcess) -> float:
    """CPU seconds the simulator process has used (it is single-threaded: a floor on wall)."""
    fields = Path(f"/proc/{sim.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counters(sim: SimProcess) -> dict[str, int]:
    return sim.state()["counters"]  # type: ignore[no-any-return]


def run_ours(sim: SimProcess, start: int, end: int, work: Path) -> dict[str, object]:
    before = counters(sim)
    sim_cpu = sim_cpu_s(sim)
    own_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    args = [
        sys.executable, "-m", "backfill", "--rest-url", sim.url, "--symbols", "BTCUSDC",
        "--intervals", "1m", "--start", str(start), "--end", str(end),
        "--lake", str(work / "lake"), "--state-dir", str(work / "state"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KLINES_TOPIC", None)
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"backfill failed ({done.returncode}):\n{done.stderr}")
    summary = orjson.loads(done.stderr.strip().splitlines()[-1])
    lake = work / "lake" / "raw" / "binance_btcusdc_1m.jsonl"
    after = counters(sim)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime - own_cpu.ru_utime - own_cpu.ru_stime,
        "sim_cpu_s": sim_cpu_s(sim) - sim_cpu,
        "rows": lake.read_bytes().count(b"\n"),
        "requests": after["requests"] - before["requests"],
        "weight": after["weight"] - before["weight"],
        "max_used_weight_1m": summary["max_used_weight_1m"],
        "budget_per_minute": summary["budget_per_minute"],
    }


def run_python_binance(sim: SimProcess, start: int, end: int) -> dict[str, object]:
    from binance.client import Client

    before = counters(sim)
    sim_cpu = sim_cpu_s(sim)
    client = Client(ping=False)  # the constructor would otherwise ping api.binance.com
    client.API_URL = sim.url + "/api"
    t0 = time.perf_counter()
    rows = client.get_historical_klines("BTCUSDC", "1m", start, end)
    wall = time.perf_counter() - t0
    client.close_connection()
    after = counters(sim)
    return {
        "wall_s": wall,
        "sim_cpu_s": sim_cpu_s(sim) - sim_cpu,
        "rows": len(rows),
        "requests": after["requests"] - before["requests"],
        "weight": after["weight"] - before["weight"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--latency-ms", type=int, default=50)
    opts = parser.parse_args()
    end_dt = START + timedelta(days=opts.days)
    start, end = ms(START), ms(end_dt) - 1
    sim_args = (
        "--synthetic", f"BTCUSDC:1m:{START.strftime('%Y-%m-%d')}",
        "--start", (end_dt + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"),
        "--latency-ms", str(opts.latency_ms),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, run_simulator(None, *sim_args) as sim:
        print(f"simulator {sim.url}: BTCUSDC 1m, {opts.days} days, {opts.latency_ms} ms/request")
        ours = run_ours(sim, start, end, Path(tmp))
        print(f"ours:           {ours}")
        theirs = run_python_binance(sim, start, end)
        print(f"python-binance: {theirs}")
    ratio = float(theirs["wall_s"]) / float(ours["wall_s"])  # type: ignore[arg-type]
    print(
        f"\nrows: ours {ours['rows']:,}, python-binance {theirs['rows']:,} "
        f"(expected {opts.days * 1440:,})\n"
        f"wall: ours {ours['wall_s']:.1f} s (incl. interpreter start and lake writes), "
        f"python-binance {theirs['wall_s']:.1f} s -> {ratio:.1f}x faster (target >= 10x)\n"
        f"weight: ours {ours['weight']} (max X-MBX-USED-WEIGHT-1M seen "
        f"{ours['max_used_weight_1m']} of budget {ours['budget_per_minute']}/min), "
        f"python-binance {theirs['weight']}\n"
        f"cpu: our process {ours['cpu_s']:.1f} s, simulator serving us {ours['sim_cpu_s']:.1f} s "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
