"""Simulator fixtures: subprocess simulators on port 0 (stopped by PID), fixture paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from binance_sim.testing import SimProcess, run_simulator
from tests.recorded import CSV_DIR

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = CSV_DIR
JAN_2022 = BUNDLED / "BTCUSDT-1h-2022-01.csv"
JAN_START = 1_640_995_200_000  # 2022-01-01 00:00 UTC
FEB_START = 1_643_673_600_000  # 2022-02-01 00:00 UTC
# Simulated now for the shared simulator: 2023-06-10, after both bundled files.
NOW_ARGS = ("--start", "2023-06-10T00:00:30", "--synthetic", "ETHUSDT:1m:2022-01-01")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    """Bundled data, speed 1, ETHUSDT 1m synthetic; tests must not inject faults here."""
    with run_simulator(BUNDLED, *NOW_ARGS) as s:
        yield s


@pytest.fixture
def own_sim() -> Iterator[SimProcess]:
    """A fresh simulator per test, for faults (same data and clock as `sim`)."""
    with run_simulator(BUNDLED, *NOW_ARGS) as s:
        yield s
