"""`--source vision` against the simulator's data.binance.vision layout: whole months from the
monthly zips (ms before 2025, µs from 2025-01), whole days of partial months from the daily zips,
only partial days over REST, byte-identical to the truth; a CHECKSUM that does not match stops
the run before that archive is written."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from backfill.__main__ import parse_time
from backfill.plan import plan_ranges
from backfill.run import run_backfill
from backfill.settings import Settings
from binance_sim.testing import SimProcess, run_simulator

from .conftest import Quiet, lake_bytes, run_cli

SYMBOL = "ETHUSDT"
LAKE_NAME = "binance_ethusdt_1h.jsonl"
START = parse_time("2024-11-20")
END = parse_time("2025-03-05", end=True)
DEC_1 = parse_time("2024-12-01")
MAR_1 = parse_time("2025-03-01")


@pytest.fixture(scope="module")
def vsim() -> Iterator[SimProcess]:
    args = ("--start", "2025-03-10T00:00:00", "--synthetic", f"{SYMBOL}:1h:2024-11-01",
            "--synthetic", "SOLUSDT:1h:2024-11-01")  # fmt: skip
    with run_simulator(None, *args) as running:
        yield running


def weight(sim: SimProcess) -> int:
    return int(sim.state()["counters"]["weight"])


def counters(sim: SimProcess) -> tuple[int, int, int]:
    """(REST kline requests, monthly zips served, daily zips served) so far."""
    c = sim.state()["counters"]
    served = c["archives_served"]
    return (
        c["rest_requests"].get("/api/v3/klines", 0),
        served.get("monthly", 0),
        served.get("daily", 0),
    )


async def run(sim: SimProcess, tmp: Path, source: str) -> tuple[int, int]:
    """(weight the simulator charged, REST requests) for one run into tmp."""
    settings = Settings(
        symbols=(SYMBOL,), intervals=("1h",), start_ms=START, end_ms=END, rest_url=sim.url,
        lake=str(tmp / "lake"), state_dir=tmp / "state", source=source, vision_url=sim.url,
        page_limit=100,
    )  # fmt: skip
    before = weight(sim)
    result = await run_backfill(settings, Quiet())
    return weight(sim) - before, result.requests


def test_dumps_are_ms_before_2025_and_us_after(vsim: SimProcess) -> None:
    base = f"{vsim.url}/data/spot/monthly/klines/{SYMBOL}/1h/{SYMBOL}-1h-"
    firsts = {}
    for month in ("2024-12", "2025-01"):
        body = httpx.get(f"{base}{month}.zip").content
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            assert zf.namelist() == [f"{SYMBOL}-1h-{month}.csv"]
            firsts[month] = zf.read(zf.namelist()[0]).split(b"\n")[0].split(b",")
        check = httpx.get(f"{base}{month}.zip.CHECKSUM").text
        assert check.endswith(f"  {SYMBOL}-1h-{month}.zip\n")
        assert httpx.get(f"{base}{month}.zip").content == body  # deterministic bytes
    assert len(firsts["2024-12"][0]) == 13 and len(firsts["2025-01"][0]) == 16
    assert firsts["2025-01"][-1] == b"0" and len(firsts["2025-01"]) == 12
    # the current (incomplete) month is not published yet; its closed days are
    before = weight(vsim)
    assert httpx.get(f"{base}2025-03.zip").status_code == 404
    daily = f"{vsim.url}/data/spot/daily/klines/{SYMBOL}/1h/{SYMBOL}-1h-2025-03-"
    day = httpx.get(f"{daily}09.zip").content
    with zipfile.ZipFile(io.BytesIO(day)) as zf:
        assert zf.namelist() == [f"{SYMBOL}-1h-2025-03-09.csv"]
        assert len(zf.read(zf.namelist()[0]).splitlines()) == 24
    assert httpx.get(f"{daily}09.zip.CHECKSUM").text.endswith(f"  {SYMBOL}-1h-2025-03-09.zip\n")
    assert httpx.get(f"{daily}10.zip").status_code == 404  # today: not closed yet
    assert weight(vsim) == before  # archives cost no weight


async def test_vision_run_equals_truth_with_rest_only_for_the_edges(
    vsim: SimProcess, tmp_path: Path
) -> None:
    truth = vsim.truth(SYMBOL, "1h", START, END)
    v_weight, v_requests = await run(vsim, tmp_path / "v", "vision")
    assert lake_bytes(tmp_path / "v" / "lake", LAKE_NAME) == truth
    r_weight, r_requests = await run(vsim, tmp_path / "r", "rest")
    assert lake_bytes(tmp_path / "r" / "lake", LAKE_NAME) == truth
    # edges: Nov 20-30 and Mar 1-5 are whole days: daily zips, so only exchangeInfo over REST
    assert v_requests == 1 and r_requests >= 1 + 25
    # a re-run skips every finished page (months included): only exchangeInfo is charged
    info_weight, again_requests = await run(vsim, tmp_path / "v", "vision")
    assert lake_bytes(tmp_path / "v" / "lake", LAKE_NAME) == truth and again_requests == 1
    # the archives cost nothing: the vision run paid for exchangeInfo only
    assert v_weight == info_weight
    assert r_weight - info_weight >= 25 * 2


async def test_two_closed_months_and_ten_days_cost_no_rest_kline_request(
    vsim: SimProcess, tmp_path: Path
) -> None:
    start, end = parse_time("2024-12-01"), parse_time("2025-02-10", end=True)
    settings = Settings(
        symbols=(SYMBOL,), intervals=("1h",), start_ms=start, end_ms=end, rest_url=vsim.url,
        lake=str(tmp_path / "lake"), state_dir=tmp_path / "state", source="vision",
        vision_url=vsim.url,
    )  # fmt: skip
    klines0, monthly0, daily0 = counters(vsim)
    await run_backfill(settings, Quiet())
    klines1, monthly1, daily1 = counters(vsim)
    assert lake_bytes(tmp_path / "lake", LAKE_NAME) == vsim.truth(SYMBOL, "1h", start, end)
    assert (klines1 - klines0, monthly1 - monthly0, daily1 - daily0) == (0, 2, 10)
    # a start inside a day leaves that partial day (and only it) to REST
    settings = replace(settings, start_ms=start + 5 * 3_600_000, state_dir=tmp_path / "s2",
                       lake=str(tmp_path / "lake2"))  # fmt: skip
    await run_backfill(settings, Quiet())
    assert counters(vsim)[0] - klines1 == 1
    assert lake_bytes(tmp_path / "lake2", LAKE_NAME) == vsim.truth(
        SYMBOL, "1h", settings.start_ms or 0, end
    )


def test_checksum_mismatch_fails_and_writes_nothing_of_that_month(
    vsim: SimProcess, tmp_path: Path
) -> None:
    r = httpx.post(f"{vsim.url}/_sim/vision", json={"corrupt": True})
    assert r.status_code == 200
    try:
        out = run_cli(
            vsim, tmp_path, "--symbols", SYMBOL, "--intervals", "1h", "--start", "2024-11-20",
            "--end", "2025-03-05", "--source", "vision", "--vision-url", vsim.url,
            timeout=60,
        )  # fmt: skip
    finally:
        httpx.post(f"{vsim.url}/_sim/vision", json={"corrupt": False}).raise_for_status()
    assert out.returncode == 1, out.stderr
    assert "ChecksumMismatch" in out.stderr and "does not match" in out.stderr
    assert re.search(r"ETHUSDT-1h-[0-9-]+\.zip: sha256", out.stderr)
    # every page of this range is an archive: none may have been written
    assert lake_bytes(tmp_path / "lake", LAKE_NAME) == b""


async def test_halts_are_left_out_of_dumps_and_a_404_month_falls_back_to_rest(
    vsim: SimProcess, tmp_path: Path
) -> None:
    jan_10, jan_12 = parse_time("2025-01-10"), parse_time("2025-01-12", end=True)
    feb_1, feb_end = parse_time("2025-02-01"), parse_time("2025-02-28", end=True)
    for lo, hi in ((jan_10, jan_12), (feb_1, feb_end)):  # Feb wholly halted: its zip is a 404
        vsim.admin({"halt": {"symbol": "SOLUSDT", "interval": "1h", "start": lo, "end": hi}})
    settings = Settings(
        symbols=("SOLUSDT",), intervals=("1h",), start_ms=START, end_ms=END, rest_url=vsim.url,
        lake=str(tmp_path / "lake"), state_dir=tmp_path / "state", source="vision",
        vision_url=vsim.url, page_limit=100,
    )  # fmt: skip
    result = await run_backfill(settings, Quiet())
    got = lake_bytes(tmp_path / "lake", "binance_solusdt_1h.jsonl")
    assert got == vsim.truth("SOLUSDT", "1h", START, END)
    # exchangeInfo + Feb over REST (672 h on the 100-hour page grid); the edges are daily zips
    feb_pages = plan_ranges("SOLUSDT", "1h", [(feb_1, feb_end)], 100)
    assert len(feb_pages) == 8 and result.requests == 1 + len(feb_pages)
    empties = sorted(gap for _, gap in result.empty_ranges)
    assert empties == [(jan_10, jan_12 - 3_599_999), (feb_1, feb_end - 3_599_999)]
