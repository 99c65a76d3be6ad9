"""`python -m klinelake status|verify` on a local lake built from the real fixture rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from klinelake.local_store import LocalStore
from klinelake.row import parse_csv
from klinelake.symbols import object_name
from klinelake.writer import LakeWriter

DATA = Path(__file__).resolve().parents[1] / "data"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "klinelake", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_status_and_verify_clean_lake(tmp_path: Path) -> None:
    rows = parse_csv((DATA / "BTCUSDT-1h-2022-01.csv").read_bytes(), "BTCUSDT", "1h")
    LakeWriter(LocalStore(tmp_path)).write_rows("BTCUSDT", "1h", rows)
    now = rows[-1].close_time + 30 * 60_000
    out = run_cli("status", "--lake", str(tmp_path), "--json", "--now", str(now))
    assert out.returncode == 0, out.stderr
    (report,) = json.loads(out.stdout)
    assert report["rows"] == 744 and report["ok"] is True
    assert report["first_open_time"] == rows[0].open_time
    assert report["last_open_time"] == rows[-1].open_time
    assert report["freshness_lag_ms"] == 30 * 60_000
    assert report["object"] == object_name("BTCUSDT", "1h")
    verify = run_cli("verify", "--lake", str(tmp_path), "--now", str(now))
    assert verify.returncode == 0 and "1 stream(s) OK" in verify.stderr
    table = run_cli("status", "--lake", str(tmp_path))
    assert "BTCUSDT@1h" not in table.stdout or "744" in table.stdout


def test_verify_names_gaps_duplicates_and_disorder(tmp_path: Path) -> None:
    rows = parse_csv((DATA / "BTCUSDT-1h-2023-05.csv").read_bytes(), "BTCUSDT", "1h")
    LakeWriter(LocalStore(tmp_path)).write_rows("BTCUSDT", "1h", rows[:10] + rows[15:20])
    out = run_cli("verify", "--lake", str(tmp_path), "--json")
    assert out.returncode == 1
    (report,) = json.loads(out.stdout)
    assert report["collector_gaps"] == [[rows[10].open_time, rows[14].open_time]]
    assert report["missing_klines"] == 5
    # corrupt the object behind the writer's back: a duplicate and a row out of order
    path = tmp_path / "raw" / "binance_btcusdt_1h.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:3], lines[2], lines[1], *lines[3:]]))
    out = run_cli("verify", "--lake", str(tmp_path))
    assert out.returncode == 1
    assert "duplicate open_time" in out.stdout and "out of open_time order" in out.stdout
    assert "collector gap(s), 5 kline(s) missing" in out.stdout


def test_confirmed_empty_ranges_are_halts_not_collector_gaps(tmp_path: Path) -> None:
    from klinelake.empty_ranges import EmptyRanges

    rows = parse_csv((DATA / "BTCUSDT-1h-2023-05.csv").read_bytes(), "BTCUSDT", "1h")
    lake, state = tmp_path / "lake", tmp_path / "state"
    LakeWriter(LocalStore(lake)).write_rows("BTCUSDT", "1h", rows[:10] + rows[15:20])
    state.mkdir()
    (state / "confirmed_empty.json").write_text(
        json.dumps({"BTCUSDT@1h": [[rows[10].open_time, rows[14].open_time]]})
    )
    assert EmptyRanges(state).load()
    out = run_cli("verify", "--lake", str(lake), "--state-dir", str(state), "--json")
    assert out.returncode == 0, out.stdout
    (report,) = json.loads(out.stdout)
    assert report["collector_gaps"] == [] and len(report["exchange_gaps"]) == 1
