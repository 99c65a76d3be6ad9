from __future__ import annotations

import pytest

from klinelake.core.row import Kline, parse_csv
from tests.recorded import recorded_csv


@pytest.fixture(scope="session")
def jan2022() -> list[Kline]:
    return parse_csv(recorded_csv("BTCUSDT-1h-2022-01.csv"), "BTCUSDT", "1h")


@pytest.fixture(scope="session")
def may2023() -> list[Kline]:
    return parse_csv(recorded_csv("BTCUSDT-1h-2023-05.csv"), "BTCUSDT", "1h")
