"""Benchmarks of the simulator (issue 4). Run by hand: `.venv/bin/python bench/bench_sim.py`.

- REST: klines served per second, `limit=1000` pages of synthetic 1m data over years, from a
  concurrent httpx AsyncClient (`--concurrency` requests in flight) for `--seconds`.
- WS: events per second received on ONE connection subscribed to 1024 kline streams
  (1024 synthetic 1m symbols), simulated clock at `--speed` so klines close fast.

Both the simulator (a subprocess) and the client run on this machine, so the figures are for
the pair; the simulator is one Python process (one core).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import httpx
import orjson
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from binance_sim.testing import run_simulator  # noqa: E402

YEAR_MS = 365 * 24 * 3_600_000
START = "2024-01-01T00:00:00"
NOW_MS = 1_704_067_200_000  # 2024-01-01
SYNTH_FROM = "2019-01-01"


async def rest_bench(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    rng = random.Random(1)
    klines = 0
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal klines
            while time.monotonic() < deadline:
                start = NOW_MS - rng.randrange(0, 4 * YEAR_MS)
                t0 = time.perf_counter()
                r = await client.get(
                    "/api/v3/klines",
                    params={"symbol": "BTCUSDT", "interval": "1m", "startTime": start,
                            "limit": 1000},
                )  # fmt: skip
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code} {r.text[:200]}")
                klines += len(orjson.loads(r.content))

        t_start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - t_start
    return {
        "requests_per_s": len(latencies) / elapsed,
        "klines_per_s": klines / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": statistics.quantiles(latencies, n=20)[18] * 1000,
    }


async def ws_bench(ws_url: str, seconds: float, streams: list[str]) -> dict[str, float]:
    async with websockets.connect(f"{ws_url}/ws", max_size=None, max_queue=None) as ws:
        for i in range(0, len(streams), 256):  # 4 frames: a 6th in a second is cut (1008)
            chunk = streams[i : i + 256]
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": chunk, "id": i}).decode())
        events = closed = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            msg = orjson.loads(await ws.recv())
            if msg.get("e") == "kline":
                events += 1
                closed += msg["k"]["x"]
        elapsed = time.monotonic() - t0
    return {"events_per_s": events / elapsed, "closed_per_s": closed / elapsed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--speed", type=float, default=600.0, help="WS simulated clock speed")
    args = p.parse_args()

    rest_args = ("--start", START, "--synthetic", f"BTCUSDT:1m:{SYNTH_FROM}",
                 "--weight-limit", "1000000000")  # fmt: skip
    with run_simulator(None, *rest_args) as sim:
        r = asyncio.run(rest_bench(sim.url, args.seconds, args.concurrency))
    print(
        f"REST /api/v3/klines limit=1000, synthetic 1m over 4 years, concurrency "
        f"{args.concurrency}, {args.seconds:.0f} s: {r['klines_per_s']:,.0f} klines/s "
        f"({r['requests_per_s']:,.1f} requests/s, p50 {r['p50_ms']:.1f} ms, "
        f"p95 {r['p95_ms']:.1f} ms)"
    )

    symbols = [f"S{i:04d}USDT" for i in range(1024)]
    synth = [a for s in symbols for a in ("--synthetic", f"{s}:1m:{SYNTH_FROM}")]
    with run_simulator(None, "--start", START, "--speed", str(args.speed), *synth) as sim:
        streams = [f"{s.lower()}@kline_1m" for s in symbols]
        w = asyncio.run(ws_bench(sim.ws_url, args.seconds, streams))
    print(
        f"WS one connection, 1024 kline_1m streams, speed {args.speed:g} "
        f"({args.speed / 60:g} closes/s/stream offered), {args.seconds:.0f} s: "
        f"{w['events_per_s']:,.0f} events/s ({w['closed_per_s']:,.0f} closed klines/s)"
    )


if __name__ == "__main__":
    main()
