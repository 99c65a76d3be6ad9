"""Futures test helpers: the simulator's truth per market and lake objects per market."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from klinelake.core.markets import Market, split_stream_key
from klinelake.core.row import parse_lake_line
from klinelake.core.symbols import object_name

ROOT = Path(__file__).resolve().parents[2]


def truth(sim: Any, stream: str, start: int, end: int) -> bytes:
    """Lake lines (the market's row keys) of the closed klines of `market:SYMBOL@interval`."""
    market, symbol, interval = split_stream_key(stream)
    params = {"market": market.value, "symbol": symbol, "interval": interval,
              "start": start, "end": end}  # fmt: skip
    r = httpx.get(f"{sim.url}/_sim/futures/truth", params=params, timeout=10)
    r.raise_for_status()
    return r.content


def lake_object(lake: Any, stream: str) -> bytes:
    """A stream's object from a local lake directory or a `localcloud.Stack` (fake-gcs)."""
    market, symbol, interval = split_stream_key(stream)
    name = object_name(symbol, interval, market)
    if isinstance(lake, Path):
        path = lake / name
        data = path.read_bytes() if path.exists() else b""
    else:
        data = bytes(lake.read_object(name) or b"")
    return data[: data.rfind(b"\n") + 1]  # a reader may see a partial last line


def open_times(data: bytes, market: Market) -> list[int]:
    return [parse_lake_line(line, market=market).open_time for line in data.splitlines()]


def assert_matches_truth(lake: Any, sim: Any, stream: str, first: int, last: int) -> int:
    """The object holds exactly the simulator's truth over [first, last], byte for byte."""
    data = lake_object(lake, stream)
    want = truth(sim, stream, first, last)
    if data != want:
        market = split_stream_key(stream)[0]
        got, exp = set(open_times(data, market)), set(open_times(want, market))
        raise AssertionError(
            f"{stream}: {len(got)} rows vs {len(exp)} in truth; missing {sorted(exp - got)[:5]}, "
            f"extra {sorted(got - exp)[:5]}"
        )
    return len(want.splitlines())


def backfill(sim: Any, market: str, symbols: str, start: int, end: int, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    args = [sys.executable, "-m", "backfill", "--market", market, "--symbols", symbols,
            "--intervals", "1m", "--start", str(start), "--end", str(end), "--rest-url", sim.url,
            *extra]  # fmt: skip
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
