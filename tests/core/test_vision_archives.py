"""The archive layout (klinelake.core.vision): which archives cover a range, and what is left to
REST."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core.intervals import INTERVALS, align_down, open_times
from klinelake.core.vision import cover, day, month, parse_archive_path

T0 = 1_700_000_000_000  # 2023-11-14


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    interval=st.sampled_from([i for i in INTERVALS if i not in ("1s", "1m")]),
    start=st.integers(0, 120 * 86_400_000),
    span=st.integers(0, 100 * 86_400_000),
)
def test_archives_and_rest_partition_the_range_in_order(
    interval: str, start: int, span: int
) -> None:
    first = align_down(T0 + start, interval)
    last = align_down(first + span, interval)
    archives, rest = cover("BTCUSDT", interval, first, last)
    pieces = [(a.first_open_time, a.last_open_time) for a in archives] + rest
    pieces.sort()
    got = [t for lo, hi in pieces for t in open_times(lo, hi, interval)]
    assert got == list(open_times(first, last, interval))  # every open time once, in order
    for a in archives:
        assert first <= a.first_open_time <= a.last_open_time <= last


def test_names_and_paths_follow_binance() -> None:
    jan = month("BTCUSDT", "1M", 2022 * 12)
    assert jan.path == "data/spot/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2022-01.zip"
    d = day("BTCUSDT", "1h", 1_641_000_000_000)
    assert d.path == "data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2022-01-01.zip"
    assert parse_archive_path("BTCUSDT", "1h", "BTCUSDT-1h-2022-01-01.zip.CHECKSUM") == (d, True)
    assert parse_archive_path("BTCUSDT", "1mo", "BTCUSDT-1mo-2022-01.zip") == (jan, False)


@pytest.mark.parametrize(
    ("symbol", "iv", "name"),
    [
        ("BTCUSDT", "1M", "BTCUSDT-1M-2022-01.zip"),  # Binance's paths never say 1M
        ("BTCUSDT", "1w", "BTCUSDT-1w-2022-01-03.zip"),  # no daily files above 1d
        ("BTCUSDT", "1h", "BTCUSDT-1h-2022-02-30.zip"),  # no such day
        ("BTCUSDT", "1h", "ETHUSDT-1h-2022-01.zip"),
        ("BTCUSDT", "1h", "BTCUSDT-1h-2022-01.csv"),
    ],
)
def test_unknown_archive_names(symbol: str, iv: str, name: str) -> None:
    assert parse_archive_path(symbol, iv, name) is None
