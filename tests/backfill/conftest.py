"""Backfill tests against the simulator (REST on 127.0.0.1, port 0) serving the real fixtures.

The module-scoped `sim` serves the bundled BTCUSDT 1h months (2022-01, 2023-05) and a
synthetic BTCUSDC 1h stream from 2023-01-01; simulated now is 2023-06-02 00:00 UTC.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill.plan import Page, Plan
from backfill.result import RunResult
from backfill.run import run_backfill
from backfill.settings import Settings
from binance_sim.testing import SimProcess, run_simulator
from klinelake.backends.lake import read_object
from klinelake.backends.local_store import LocalStore
from klinelake.core.intervals import Gap
from klinelake.core.row import parse_csv
from tests.recorded import recorded_csv

ROOT = Path(__file__).resolve().parents[2]
SIM_NOW = "2023-06-02T00:00:00"
SIM_ARGS = ("--start", SIM_NOW, "--synthetic", "BTCUSDC:1h:2023-01-01")


def fixture_lines(month: str) -> bytes:
    rows = parse_csv(recorded_csv(f"BTCUSDT-1h-{month}.csv"), "BTCUSDT", "1h")
    return b"".join(r.to_line() for r in rows)


def lake_bytes(lake: Path, name: str) -> bytes:
    """Through `LocalStore` (it escapes names on disk: `1M` is not `1m`)."""
    return read_object(LocalStore(lake), "raw/" + name)


class Quiet:
    """A reporter that only remembers what it was told."""

    def __init__(self) -> None:
        self.pages: list[Page] = []
        self.empties: list[tuple[str, Gap]] = []

    def planned(self, plan: Plan, skipped: int, budget: int, settings: Settings) -> None:
        pass

    def page_done(self, page: Page, rows: int, used_weight: int) -> None:
        self.pages.append(page)

    def empty(self, stream: str, gap: Gap) -> None:
        self.empties.append((stream, gap))

    def finished(self, result: RunResult) -> None:
        pass


async def backfill(
    sim: SimProcess, tmp: Path, headers: list[int] | None = None, **kw: Any
) -> RunResult:
    """One in-process run against `sim` into `tmp/lake` with state in `tmp/state`."""
    settings = Settings(rest_url=sim.url, lake=str(tmp / "lake"), state_dir=tmp / "state", **kw)
    on_weight = headers.append if headers is not None else None
    return await run_backfill(settings, Quiet(), on_used_weight=on_weight)


def cli_args(sim: SimProcess, tmp: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "backfill", "--rest-url", sim.url,
        "--lake", str(tmp / "lake"), "--state-dir", str(tmp / "state"), *args,
    ]  # fmt: skip


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KLINES_TOPIC", "LAKE_URI")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def run_cli(
    sim: SimProcess, tmp: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_args(sim, tmp, *args),
        capture_output=True, text=True, cwd=ROOT, env=cli_env(env), timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with run_simulator(None, *SIM_ARGS) as running:
        yield running


@contextlib.contextmanager
def halted_simulator(now: str, symbol: str, since: str, halt: Gap) -> Iterator[SimProcess]:
    """A simulator at `now` with a synthetic `symbol` 1h stream from `since`, halted over the
    open times of `halt` (inclusive)."""
    with run_simulator(None, "--start", now, "--synthetic", f"{symbol}:1h:{since}") as running:
        running.admin({"halt": {"symbol": symbol, "interval": "1h", "start": halt[0],
                                "end": halt[1]}})  # fmt: skip
        yield running
