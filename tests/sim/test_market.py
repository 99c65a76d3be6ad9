"""The truth: file loading, synthetic rows, halts, REST selection and forming klines (pure)."""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binance_sim.market import (
    DataFileError,
    Halt,
    Market,
    SyntheticSpec,
    load_dir,
    partial_kline,
    synthetic_kline,
)
from klinelake.core.intervals import INTERVALS, align_down, close_time, next_open_time
from klinelake.core.row import parse_csv, validate_kline

from .conftest import BUNDLED, FEB_START, JAN_2022, JAN_START

HOUR = 3_600_000


def test_bundled_data_is_byte_identical_to_the_shared_fixtures() -> None:
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in BUNDLED.glob("*.csv")}
    assert digests == {  # the sha256 values in ../shared/fixtures/binance/PROVENANCE.md
        "BTCUSDT-1h-2022-01.csv": "3a27aac23664a410a0f33da68fba2275"
        "abfca80cffa82774a7aa806708b7befe",
        "BTCUSDT-1h-2023-05.csv": "407bf2772d53412b03bdcbeb9216aef9"
        "61ba60de13be235ee5b0bc18c043d37f",
    }


def test_load_dir_reads_both_files_exactly() -> None:
    series = load_dir(BUNDLED)[("BTCUSDT", "1h")]
    assert len(series.rows) == 744 * 2
    assert series.rows[:744] == parse_csv(JAN_2022.read_bytes(), "BTCUSDT", "1h")


def _zip(csv: bytes, inner: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(inner, csv)
    return buf.getvalue()


def test_zip_with_checksum_microseconds_and_1mo(tmp_path: Path) -> None:
    # A 2025 dump row: µs timestamps, no header (fact sheet §10).
    csv = (
        b"1735689600000000,4.15070000,4.16000000,4.10000000,4.12000000,10.00000000,"
        b"1735693199999999,41.50000000,3,5.00000000,20.75000000,0\n"
    )
    data = _zip(csv, "XRPUSDT-1h-2025-01.csv")
    deep = tmp_path / "spot" / "monthly"
    deep.mkdir(parents=True)
    (deep / "XRPUSDT-1h-2025-01.zip").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    (deep / "XRPUSDT-1h-2025-01.zip.CHECKSUM").write_text(f"{sha}  XRPUSDT-1h-2025-01.zip\n")
    (deep / "XRPUSDT-1mo-2025-01.csv").write_bytes(
        b"1735689600000,4.15070000,4.16000000,4.10000000,4.12000000,10.00000000,"
        b"1738367999999,41.50000000,3,5.00000000,20.75000000,0\r\n"
    )
    series = load_dir(tmp_path)
    row = series[("XRPUSDT", "1h")].rows[0]
    assert (row.open_time, row.close_time, row.open) == (1735689600000, 1735693199999, "4.15070000")
    assert series[("XRPUSDT", "1M")].rows[0].close_time == 1738367999999


def test_zip_with_a_bad_checksum_is_refused(tmp_path: Path) -> None:
    (tmp_path / "XRPUSDT-1h-2025-01.zip").write_bytes(_zip(b"", "XRPUSDT-1h-2025-01.csv"))
    (tmp_path / "XRPUSDT-1h-2025-01.zip.CHECKSUM").write_text("0" * 64 + "  x.zip\n")
    with pytest.raises(DataFileError, match="does not match"):
        load_dir(tmp_path)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(INTERVALS),
    st.integers(min_value=1_502_928_000_000, max_value=4_000_000_000_000),
    st.integers(min_value=0, max_value=3),
)
def test_synthetic_rows_are_valid_and_deterministic(interval: str, t: int, seed: int) -> None:
    t = align_down(t, interval)
    k = synthetic_kline(seed, "ETHUSDT", interval, t)
    validate_kline(k)  # built unchecked for speed: the contract's validation must pass
    assert k == synthetic_kline.__wrapped__(seed, "ETHUSDT", interval, t)
    assert k.close_time == close_time(t, interval)
    o, h, lo, c = (float(x) for x in (k.open, k.high, k.low, k.close))
    assert h >= max(o, c) and lo <= min(o, c) and lo > 0
    assert float(k.taker_buy_base_volume) <= float(k.volume)
    assert (k.trades == 0) == (float(k.volume) == 0)
    assert all(len(x.partition(".")[2]) == 8 for x in (k.open, k.high, k.low, k.close, k.volume))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=HOUR + 10), st.integers(min_value=0, max_value=743))
def test_partial_klines_are_valid_and_end_at_the_final_row(elapsed: int, i: int) -> None:
    final = parse_csv(JAN_2022.read_bytes(), "BTCUSDT", "1h")[i]
    k = partial_kline(final, final.open_time + elapsed)
    assert float(k.high) >= max(float(k.open), float(k.close))
    assert float(k.low) <= min(float(k.open), float(k.close))
    assert k.trades <= final.trades and float(k.volume) <= float(final.volume)
    assert k.open == final.open and k.open_time == final.open_time
    if elapsed >= HOUR:
        assert (k.close, k.volume, k.trades) == (final.close, final.volume, final.trades)


def _market() -> Market:
    return Market(load_dir(BUNDLED), [SyntheticSpec.parse("ETHUSDT:1m:2022-01-01")], seed=0)


def test_selection_follows_the_fact_sheet() -> None:
    m = _market()
    now = FEB_START + 10 * 24 * HOUR
    sel = m.select
    # No times: the newest `limit` bars (the file ended on Jan 31 23:00).
    assert [k.open_time for k in sel("BTCUSDT", "1h", now, start=None, end=None, limit=2)] == [
        FEB_START - 2 * HOUR,
        FEB_START - HOUR,
    ]
    # startTime only: the oldest from it on; a start inside a candle skips that candle.
    rows = sel("BTCUSDT", "1h", now, start=JAN_START + 1, end=None, limit=3)
    assert [k.open_time for k in rows] == [JAN_START + HOUR * i for i in (1, 2, 3)]
    # endTime only: the newest up to it.
    rows = sel("BTCUSDT", "1h", now, start=None, end=JAN_START + 5 * HOUR, limit=2)
    assert [k.open_time for k in rows] == [JAN_START + 4 * HOUR, JAN_START + 5 * HOUR]
    # both: from start, capped at end and limit.
    assert len(sel("BTCUSDT", "1h", now, start=JAN_START, end=JAN_START + HOUR, limit=9)) == 2
    assert sel("BTCUSDT", "1h", now, start=now, end=None, limit=9) == []


def test_the_forming_kline_is_last_and_nothing_after_now() -> None:
    m = _market()
    now = JAN_START + 10 * HOUR + 600_000  # 10:10 on Jan 1
    rows = m.select("BTCUSDT", "1h", now, start=None, end=None, limit=3)
    assert rows[-1].open_time == JAN_START + 10 * HOUR and rows[-1].close_time > now
    assert rows[-1].trades < m.kline_at("BTCUSDT", "1h", rows[-1].open_time).trades  # type: ignore[union-attr]
    eth = m.select("ETHUSDT", "1m", now, start=None, end=None, limit=1000)
    assert eth[-1].open_time == align_down(now, "1m")
    assert len(eth) == (now - JAN_START) // 60_000 + 1  # the synthetic stream starts Jan 1
    assert all(next_open_time(a.open_time, "1m") == b.open_time for a, b in itertools.pairwise(eth))
    assert [k.open_time for k in m.closed("ETHUSDT", "1m", now, now - 180_000, now)] == [
        align_down(now, "1m") - 180_000 + 60_000 * i for i in range(3)
    ]


def test_halts_remove_klines_everywhere() -> None:
    m = _market()
    now = FEB_START
    m.add_halt(Halt("ETHUSDT", "1m", JAN_START + 120_000, JAN_START + 300_000))
    m.add_halt(Halt("BTCUSDT", "1h", JAN_START + HOUR, JAN_START + 2 * HOUR))
    fwd = [k.open_time for k in m.iter_forward("ETHUSDT", "1m", JAN_START, JAN_START + 600_000)]
    assert fwd == [JAN_START + 60_000 * i for i in (0, 1, 6, 7, 8, 9, 10)]
    back = [k.open_time for k in m.iter_backward("ETHUSDT", "1m", JAN_START, JAN_START + 600_000)]
    assert back == fwd[::-1]
    rows = m.select("BTCUSDT", "1h", now, start=JAN_START, end=None, limit=3)
    assert [k.open_time for k in rows] == [JAN_START, JAN_START + 3 * HOUR, JAN_START + 4 * HOUR]
    assert m.kline_at("ETHUSDT", "1m", JAN_START + 180_000) is None
