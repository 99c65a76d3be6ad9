"""Backfill benchmark (run by hand): our `python -m backfill` vs ccxt's `fetch_ohlcv` and
python-binance's `Client.get_historical_klines`, side by side in one run against one simulator.

    .venv/bin/python bench/bench_backfill.py [--days 365] [--latency-ms 50] [--baseline DIR]
        [--no-python-binance] [--no-ccxt] [--repeat N] [--gzip off|accepted|always]

The simulator serves a synthetic BTCUSDC 1m stream with a fixed delay per REST request (50 ms by
default), history pages from pre-rendered rows (so it is not the bottleneck; it renders each
row once, during the first run, which is ours). Each checkout is byte-compiled first, as
`pip install` does where it is deployed. Our backfill writes into a temporary local lake;
ccxt and python-binance only collect the rows in memory (they have no sink), so the comparison
favours them. `--baseline DIR` also runs `python -m backfill` from another checkout (e.g. a
`git worktree` of the baseline commit) against the same simulator. Prints wall times, CPU per
row, rows, requests, ratios, the latency bound and the weight each used (from the simulator's
counter and the X-MBX-USED-WEIGHT-1M header). Needs the `bench` extra (ccxt).
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
from typing import Any

import httpx
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


def byte_compile(root: Path) -> None:
    """A checkout's bytecode, as `pip install` writes it into the VM's venv (infra/startup.sh):
    with PYTHONDONTWRITEBYTECODE set (as on these machines) every run would otherwise compile
    our ~100 modules from source first (~0.2 s of CPU), a cost no deployed run pays."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    args = [sys.executable, "-m", "compileall", "-q", "klinelake", "backfill"]
    subprocess.run(args, cwd=root, env=env, check=True)


def run_ours(
    sim: SimProcess, start: int, end: int, work: Path, root: Path = ROOT
) -> dict[str, object]:
    before = counters(sim)
    sim_cpu = sim_cpu_s(sim)
    own_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    args = [
        sys.executable, "-m", "backfill", "--rest-url", sim.url, "--symbols", "BTCUSDC",
        "--intervals", "1m", "--start", str(start), "--end", str(end),
        "--lake", str(work / "lake"), "--state-dir", str(work / "state"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("KLINES_TOPIC", None)
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=root, env=env, check=False)
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


def peer_result(
    sim: SimProcess, before: dict[str, int], sim_cpu: float, wall: float, rows: int
) -> dict[str, object]:
    """A peer library's figures (it only collects rows in memory) from the simulator's counters."""
    after = counters(sim)
    return {
        "wall_s": wall,
        "sim_cpu_s": sim_cpu_s(sim) - sim_cpu,
        "rows": rows,
        "requests": after["requests"] - before["requests"],
        "weight": after["weight"] - before["weight"],
    }


def prerender(sim: SimProcess, start: int, end: int) -> dict[str, object]:
    """Request every page once, untimed, so the simulator serves every timed run from
    pre-rendered rows (rendering a year of synthetic 1m rows costs it seconds of CPU)."""
    sim_cpu = sim_cpu_s(sim)
    t0 = time.perf_counter()
    with httpx.Client(base_url=sim.url, timeout=60) as client:
        for since in range(start, end + 1, 1000 * 60_000):
            params: dict[str, str | int] = {"symbol": "BTCUSDC", "interval": "1m"}
            params.update(startTime=since, limit=1000)
            client.get("/api/v3/klines", params=params).raise_for_status()
    return {"wall_s": time.perf_counter() - t0, "sim_cpu_s": sim_cpu_s(sim) - sim_cpu}


def run_ccxt(sim: SimProcess, start: int, end: int) -> dict[str, object]:
    """ccxt's documented way to page history: `fetch_ohlcv(symbol, tf, since, limit)` in a loop
    (its own rate limiter on, as by default). Every URL but the simulator's is unreachable."""
    import ccxt

    before = counters(sim)
    sim_cpu = sim_cpu_s(sim)
    exchange = ccxt.binance(
        {"enableRateLimit": True, "options": {"fetchMarkets": {"types": ["spot"]}}}
    )
    api = exchange.urls["api"]
    for key in api:
        api[key] = "http://127.0.0.1:9/unreachable"
    api["public"] = sim.url + "/api/v3"
    rows: list[list[float]] = []
    t0 = time.perf_counter()
    since = start
    while since <= end:
        page = exchange.fetch_ohlcv("BTC/USDC", "1m", since, 1000, {"endTime": end})
        if not page:
            break
        rows += page
        since = int(page[-1][0]) + 60_000
    return peer_result(sim, before, sim_cpu, time.perf_counter() - t0, len(rows))


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
    return peer_result(sim, before, sim_cpu, wall, len(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=10, help="our default (--concurrency)")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to run too")
    parser.add_argument("--no-python-binance", action="store_true", help="it takes ~4 minutes")
    parser.add_argument("--no-ccxt", action="store_true", help="ours (and the baseline) only")
    parser.add_argument("--repeat", type=int, default=1, help="runs of ours (and the baseline)")
    parser.add_argument(
        "--gzip",
        choices=("off", "accepted", "always"),
        default="off",
        help="the simulator's compression: accepted = as Binance, when the client asks for it",
    )
    opts = parser.parse_args()
    end_dt = START + timedelta(days=opts.days)
    start, end = ms(START), ms(end_dt) - 1
    sim_args = (
        "--synthetic", f"BTCUSDC:1m:{START.strftime('%Y-%m-%d')}",
        "--start", (end_dt + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"),
        "--latency-ms", str(opts.latency_ms), "--gzip", opts.gzip,
    )  # fmt: skip
    if opts.repeat > 1:
        # back-to-back runs would add up in one 60 s weight window and wait for it (~1,074
        # weight a run); 10 s windows keep each run's conditions those of a single run
        sim_args += ("--weight-window", "10")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, run_simulator(None, *sim_args) as sim:
        print(
            f"simulator {sim.url}: BTCUSDC 1m, {opts.days} days, {opts.latency_ms} ms/request, "
            f"gzip {opts.gzip}"
        )
        print(f"pre-rendering the pages (untimed): {prerender(sim, start, end)}", flush=True)
        # ours and the baseline alternate, `--repeat` times each: this machine is shared, so
        # CPU time per run varies; the medians of interleaved runs compare like with like
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
        for root in (ROOT, opts.baseline) if opts.baseline is not None else (ROOT,):
            byte_compile(root)
        for i in range(opts.repeat):
            runs["ours"].append(run_ours(sim, start, end, Path(tmp) / f"ours{i}"))
            print(f"ours:           {runs['ours'][-1]}", flush=True)
            if opts.baseline is not None:
                base = run_ours(sim, start, end, Path(tmp) / f"base{i}", opts.baseline)
                runs["baseline"].append(base)
                print(f"baseline:       {base}", flush=True)
        for name, done in runs.items():
            if done:
                results[name] = median_run(done)
        if not opts.no_ccxt:
            results["ccxt"] = run_ccxt(sim, start, end)
            print(f"ccxt:           {results['ccxt']}", flush=True)
        if not opts.no_python_binance:
            results["python-binance"] = run_python_binance(sim, start, end)
            print(f"python-binance: {results['python-binance']}", flush=True)
    report(results, opts.days * 1440, opts.latency_ms, opts.concurrency)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median CPU time (wall and CPU then come from one real run), with every
    run's CPU time and wall time listed."""
    ranked = sorted(runs, key=lambda r: r["cpu_s"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["all_cpu_s"] = [round(r["cpu_s"], 2) for r in runs]
    chosen["all_wall_s"] = [round(r["wall_s"], 2) for r in runs]
    return chosen


def report(results: dict[str, dict[str, Any]], expected: int, latency_ms: int, conc: int) -> None:
    ours = results["ours"]
    bound = ours["requests"] * latency_ms / 1000 / conc
    rows = ", ".join(f"{name} {r['rows']:,}" for name, r in results.items())
    print(f"\nrows expected {expected:,}: {rows}")
    print(f"latency bound: {ours['requests']} requests x {latency_ms} ms / {conc} = {bound:.2f} s")
    for name, r in results.items():
        line = f"{name:15s} wall {r['wall_s']:6.1f} s"
        if "cpu_s" in r:
            line += f", CPU {r['cpu_s']:.2f} s = {r['cpu_s'] / r['rows'] * 1e6:.2f} us/row"
            if len(r["all_cpu_s"]) > 1:
                line += f" (median of CPU {r['all_cpu_s']} s, wall {r['all_wall_s']} s)"
        if name != "ours":
            line += f", ours is {r['wall_s'] / ours['wall_s']:.1f}x faster"
        print(f"{line}; simulator CPU {r['sim_cpu_s']:.1f} s, weight {r['weight']}")
    print(
        f"ours vs the latency bound: {ours['wall_s'] / bound:.2f}x (incl. interpreter start); "
        f"highest X-MBX-USED-WEIGHT-1M {ours['max_used_weight_1m']} of "
        f"{ours['budget_per_minute']}/min; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (shared machine)"
    )


if __name__ == "__main__":
    main()
