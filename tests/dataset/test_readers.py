"""The reader one-liners of docs/querying.md, run verbatim against real lakes: the bundled real
fixtures (two Binance 1h months, a REST 1m page, a WS recording of three symbols) and a demo lake
written by the backfill against the simulator. DuckDB's and polars' sums of `volume` and
`quote_volume` equal Python `Decimal` sums to the last digit; times are the ms as UTC."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from backfill.__main__ import parse_time
from backfill.run import run_backfill
from backfill.settings import Settings
from binance_sim.testing import run_simulator
from klinelake.backends.lake import read_lines
from klinelake.backends.local_store import LocalStore
from klinelake.core.binance_ws import KlineEvent, parse_ws_frame
from klinelake.core.contract import KlineBatch
from klinelake.core.row import Kline, parse_csv, parse_lake_line, parse_rest_page
from klinelake.core.symbols import OBJECT_PREFIX
from klinelake.core.writer import LakeWriter
from tests.backfill.conftest import Quiet
from tests.recorded import DATA, WS_FIXTURE, recorded_csv

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "querying.md"
H = 3_600_000


def doc_block(name: str) -> str:
    """The python block that follows `<!-- tested: NAME -->` in docs/querying.md."""
    m = re.search(rf"<!-- tested: {name} -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"no tested block {name!r} in {DOC}"
    return m.group(1)


def run_block(name: str, lake_parent: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(lake_parent)
    namespace: dict[str, Any] = {}
    exec(doc_block(name), namespace)
    return namespace


def fixture_rows() -> Iterator[list[Kline]]:
    for month in ("2022-01", "2023-05"):
        yield parse_csv(recorded_csv(f"BTCUSDT-1h-{month}.csv"), "BTCUSDT", "1h")
    rest = DATA / "BTCUSDT-1m-2021-10-22.api_v3_klines.json"
    yield parse_rest_page(rest.read_bytes(), "BTCUSDT", "1m")
    ws = WS_FIXTURE
    for symbol in ("BTCUSDT", "ETHUSDT", "DOTUSDT"):
        events = [parse_ws_frame(line) for line in ws.read_bytes().splitlines() if line.strip()]
        yield [
            e.kline for e in events
            if isinstance(e, KlineEvent) and e.closed and e.kline.symbol == symbol
        ]  # fmt: skip


@pytest.fixture(scope="module")
def fixture_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled real data written by the lake writer, with one halt recorded."""
    parent = tmp_path_factory.mktemp("fixtures")
    writer = LakeWriter(LocalStore(parent / "lake"))
    for rows in fixture_rows():
        if rows:
            writer.write_rows(rows[0].symbol, rows[0].interval, rows)
    # Binance had no klines between the two bundled months as far as this lake knows: say so
    gap = (parse_time("2022-02-01"), parse_time("2023-04-30", end=True) - H + 1)
    writer.write_batch(KlineBatch("BTCUSDT", "1h", (), (gap,)))
    return parent


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make demo` backfills: 30 days of BTCUSDT 1h from the simulator, here with a halt."""
    parent = tmp_path_factory.mktemp("demo")
    with run_simulator(None, "--start", "2022-02-01T00:00:00") as sim:
        halt = {"symbol": "BTCUSDT", "interval": "1h", "start": parse_time("2022-01-20"),
                "end": parse_time("2022-01-20") + 3 * H - 1}  # fmt: skip
        sim.admin({"halt": halt})
        settings = Settings(symbols=("BTCUSDT",), intervals=("1h",), days=30, rest_url=sim.url,
                            lake=str(parent / "lake"), state_dir=parent / "state")  # fmt: skip
        asyncio.run(run_backfill(settings, Quiet()))
    return parent


def decimal_totals(lake: Path) -> list[tuple[Any, ...]]:
    """(symbol, interval, klines, first open, last open, Σ volume, Σ quote_volume) per stream,
    from the lake rows with Python's Decimal."""
    store = LocalStore(lake)
    out = []
    for info in store.list(OBJECT_PREFIX):
        rows = [parse_lake_line(line) for line in read_lines(store, info.name)]
        out.append((
            rows[0].symbol, rows[0].interval, len(rows), utc(rows[0].open_time),
            utc(rows[-1].open_time), sum(Decimal(r.volume) for r in rows),
            sum(Decimal(r.quote_volume) for r in rows),
        ))  # fmt: skip
    return sorted(out)


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


@pytest.fixture(params=["fixture_lake", "demo_lake"])
def lake(request: pytest.FixtureRequest) -> Path:
    parent: Path = request.getfixturevalue(request.param)
    return parent


def test_duckdb_sums_equal_decimal_sums(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    want = decimal_totals(lake / "lake")
    got = run_block("duckdb", lake, monkeypatch)["totals"]
    assert [tuple(r) for r in got] == want
    assert all(isinstance(r[5], Decimal) and isinstance(r[6], Decimal) for r in got)


def test_polars_sums_equal_decimal_sums(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    want = decimal_totals(lake / "lake")
    got = run_block("polars", lake, monkeypatch)["totals"]
    assert [tuple(r.values()) for r in got.iter_rows(named=True)] == want


def test_pandas_keeps_strings_and_the_float_warning_is_true(
    fixture_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = run_block("pandas", fixture_lake, monkeypatch)
    rows = [parse_lake_line(x) for x in read_lines(LocalStore(fixture_lake / "lake"),
                                                   "raw/binance_btcusdt_1h.jsonl")]  # fmt: skip
    assert ns["volume"] == sum(Decimal(r.volume) for r in rows)
    assert ns["quote_volume"] == sum(Decimal(r.quote_volume) for r in rows)
    assert list(ns["df"]["quote_volume"]) == [r.quote_volume for r in rows]  # the exact strings
    assert ns["df"]["open_ts"][0] == pd.Timestamp(rows[0].open_time, unit="ms", tz="UTC")
    # what the doc warns about: the default read turns decimals into floats that differ
    floats = pd.read_json(fixture_lake / "lake/raw/binance_btcusdt_1h.jsonl", lines=True)
    changed = sum(Decimal(repr(f)) != Decimal(r.quote_volume)
                  for f, r in zip(floats["quote_volume"], rows, strict=True))  # fmt: skip
    assert floats["quote_volume"].dtype == "float64" and changed > 0


def test_the_halts_block_lists_the_recorded_halts(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    halts = run_block("halts", lake, monkeypatch)["halts"]
    if lake.name.startswith("fixtures"):
        assert halts == [("btcusdt", "1h", utc(parse_time("2022-02-01")),
                          utc(parse_time("2023-04-30", end=True) - H + 1))]  # fmt: skip
    else:
        day = parse_time("2022-01-20")
        assert halts == [("btcusdt", "1h", utc(day), utc(day + 2 * H))]
