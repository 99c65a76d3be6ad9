"""`klinelake verify-vision` against the simulator's data.binance.vision layout (monthly and
daily zips): passes on an intact lake with a halt; finds a corrupted row, a missing row, a row
the archive lacks and an archive that fails its CHECKSUM, each by open time, and exits 1."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backfill.__main__ import parse_time
from backfill.run import run_backfill
from backfill.settings import Settings
from binance_sim.testing import SimProcess
from klinelake.backends.lake import read_rows
from klinelake.backends.local_store import LocalStore
from klinelake.core.symbols import object_name
from tests.backfill.conftest import Quiet, halted_simulator

SYMBOL = "VFYUSDT"
H = 3_600_000
START, END = parse_time("2025-01-25"), parse_time("2025-03-05", end=True)
HALT = (parse_time("2025-02-10"), parse_time("2025-02-10") + 5 * H)


@pytest.fixture(scope="module")
def vsim() -> Iterator[SimProcess]:
    with halted_simulator("2025-03-10T00:00:00", SYMBOL, "2025-01-01", HALT) as running:
        yield running


@pytest.fixture(scope="module")
def lake(vsim: SimProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake built by the backfill (REST, so the archives are not what wrote it)."""
    tmp = tmp_path_factory.mktemp("lake")
    settings = Settings(
        symbols=(SYMBOL,), intervals=("1h",), start_ms=START, end_ms=END, rest_url=vsim.url,
        lake=str(tmp / "lake"), state_dir=tmp / "state",
    )  # fmt: skip
    import asyncio

    asyncio.run(run_backfill(settings, Quiet()))
    return tmp / "lake"


def verify(lake: Path, sim: SimProcess) -> tuple[int, list[dict[str, object]], str]:
    out = subprocess.run(
        [sys.executable, "-m", "klinelake", "verify-vision", "--lake", str(lake),
         "--vision-url", sim.url, "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    (check,) = json.loads(out.stdout)
    return out.returncode, check["differences"], out.stderr


def test_an_intact_lake_with_a_halt_matches_the_archives(vsim: SimProcess, lake: Path) -> None:
    code, diffs, err = verify(lake, vsim)
    assert code == 0, err
    # the newest day is covered by its daily zip: nothing is left unchecked
    assert diffs == []
    assert f"{SYMBOL}@1h: {len(vsim.truth(SYMBOL, '1h', START, END).splitlines())} lake rows" in err


def test_every_injected_difference_is_reported(
    vsim: SimProcess, lake: Path, tmp_path: Path
) -> None:
    rows = list(read_rows(LocalStore(lake), SYMBOL, "1h"))
    corrupt_at, missing_at = rows[100].open_time, rows[900].open_time  # Jan 29, Mar 3
    extra_at = HALT[0] + H  # inside the halt: the archive has no row there
    rows[100] = dataclasses.replace(rows[100], volume="123.45600000")
    del rows[900]
    rows.append(dataclasses.replace(rows[400], open_time=extra_at, close_time=extra_at + H - 1))
    rows.sort(key=lambda r: r.open_time)
    bad = LocalStore(tmp_path)
    bad.write(object_name(SYMBOL, "1h"), b"".join(r.to_line() for r in rows), 0)
    code, diffs, err = verify(tmp_path, vsim)
    assert code == 1, err
    got = sorted((d["kind"], d["open_time"]) for d in diffs)
    assert got == sorted([("differs", corrupt_at), ("missing_from_lake", missing_at),
                          ("not_in_archive", extra_at)])  # fmt: skip
    detail = next(d["detail"] for d in diffs if d["kind"] == "differs")
    assert "volume: lake '123.45600000' != archive" in str(detail)


def test_an_archive_failing_its_checksum_is_a_difference(vsim: SimProcess, lake: Path) -> None:
    httpx.post(f"{vsim.url}/_sim/vision", json={"corrupt": True}).raise_for_status()
    try:
        code, diffs, err = verify(lake, vsim)
    finally:
        httpx.post(f"{vsim.url}/_sim/vision", json={"corrupt": False}).raise_for_status()
    assert code == 1, err
    kinds = {d["kind"] for d in diffs}
    assert kinds == {"bad_archive"}
    assert any("does not match" in str(d["detail"]) for d in diffs)
    # 7 days of January, February, 5 days of March: every archive was refused
    assert len(diffs) == 7 + 1 + 5
