from __future__ import annotations

from pathlib import Path

import pytest

from klinelake.row import Kline, parse_csv

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def jan2022() -> list[Kline]:
    return parse_csv((DATA / "BTCUSDT-1h-2022-01.csv").read_bytes(), "BTCUSDT", "1h")


@pytest.fixture(scope="session")
def may2023() -> list[Kline]:
    return parse_csv((DATA / "BTCUSDT-1h-2023-05.csv").read_bytes(), "BTCUSDT", "1h")
