"""`python -m klinelake status|verify` on a local lake built from the real fixture rows."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from klinelake.backends.local_store import LocalStore
from klinelake.core.errors import ObjectNotFound
from klinelake.core.row import Kline, parse_csv
from klinelake.core.symbols import object_name
from klinelake.core.writer import LakeWriter
from localcloud import Stack
from tests.recorded import recorded_csv


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "klinelake", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_status_and_verify_clean_lake(tmp_path: Path) -> None:
    rows = parse_csv(recorded_csv("BTCUSDT-1h-2022-01.csv"), "BTCUSDT", "1h")
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
    rows = parse_csv(recorded_csv("BTCUSDT-1h-2023-05.csv"), "BTCUSDT", "1h")
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
    from klinelake.backends.empty_ranges import EmptyRanges

    rows = parse_csv(recorded_csv("BTCUSDT-1h-2023-05.csv"), "BTCUSDT", "1h")
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


# --- verify fails what it should fail (issue 12.4, 12.1) -----------------------------------


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """A failure that cannot inspect anything says so in exactly one line, no traceback."""
    assert out.stdout == "" and "Traceback" not in out.stderr, out.stderr
    (line,) = out.stderr.strip().splitlines()
    return line


def test_verify_a_path_that_does_not_exist(tmp_path: Path) -> None:
    out = run_cli("verify", "--lake", str(tmp_path / "nowhere"))
    assert out.returncode == 2
    assert one_line(out) == f"verify: lake {tmp_path / 'nowhere'}: no such directory"
    assert run_cli("status", "--lake", str(tmp_path / "nowhere")).returncode == 2


def test_verify_an_empty_lake(tmp_path: Path) -> None:
    out = run_cli("verify", "--lake", str(tmp_path))
    assert out.returncode == 1
    assert one_line(out) == f"verify: no stream objects under raw/ in lake {tmp_path}"


def month_rows() -> list[Kline]:
    """Three real-looking 1M klines (calendar months): `1M` must not be taken for a stray."""
    starts = [1_640_995_200_000, 1_643_673_600_000, 1_646_092_800_000, 1_648_771_200_000]
    return [
        Kline(a, b - 1, "BTCUSDT", "1M", "1.0", "2.0", "0.5", "1.5", "10", "15", 7, "5", "7.5")
        for a, b in itertools.pairwise(starts)
    ]


def test_verify_reports_unknown_objects_under_raw(tmp_path: Path) -> None:
    rows = parse_csv(recorded_csv("BTCUSDT-1h-2022-01.csv"), "BTCUSDT", "1h")[:24]
    store = LocalStore(tmp_path)
    LakeWriter(store).write_rows("BTCUSDT", "1h", rows)
    LakeWriter(store).write_rows("BTCUSDT", "1M", month_rows())
    assert run_cli("verify", "--lake", str(tmp_path)).returncode == 0
    strays = [
        "raw/notes.txt",
        "raw/binance_btcusdt_1H.jsonl",  # not an interval (1M is one, and is a stream above)
        "raw/binance_BTCUSDT_1h.jsonl",  # not the canonical (lowercase) name
        "raw/binance_ｂｔｃｕｓｄｔ_1h.jsonl",  # fullwidth: not a symbol
    ]
    for name in strays:
        store.write(name, b"x\n", if_generation_match=0)
    out = run_cli("verify", "--lake", str(tmp_path), "--json")
    assert out.returncode == 1
    assert [r["object"] for r in json.loads(out.stdout)] == [
        object_name("BTCUSDT", "1M"),
        object_name("BTCUSDT", "1h"),
    ]
    lines = out.stderr.strip().splitlines()
    assert sorted(lines[:-1]) == sorted(f"verify: unknown object under raw/: {n}" for n in strays)
    assert lines[-1] == (
        "verify: 0 of 2 stream(s) violate the lake invariants, 4 unknown object(s) under raw/"
    )


def test_verify_fails_a_row_of_another_stream_in_an_object(tmp_path: Path) -> None:
    rows = parse_csv(recorded_csv("BTCUSDT-1h-2022-01.csv"), "BTCUSDT", "1h")[:24]
    store = LocalStore(tmp_path)
    LakeWriter(store).write_rows("BTCUSDT", "1h", rows)
    name = object_name("BTCUSDT", "1h")
    # behind the writer's back: row 5 of ETHUSDT, row 9 of BTCUSDT 1m (aligned, canonical)
    foreign = [
        dataclasses.replace(r, symbol=s, interval=i, close_time=r.open_time + 59_999)
        if (s, i) != ("BTCUSDT", "1h")
        else r
        for r, (s, i) in zip(
            rows,
            [("ETHUSDT", "1h") if k == 5 else ("BTCUSDT", "1m") if k == 9 else ("BTCUSDT", "1h")
             for k in range(len(rows))],
            strict=True,
        )
    ]  # fmt: skip
    info = store.stat(name)
    assert info is not None
    store.write(name, b"".join(r.to_line() for r in foreign), if_generation_match=info.generation)
    out = run_cli("verify", "--lake", str(tmp_path))
    assert out.returncode == 1
    assert "line 6: row of ETHUSDT@1h in the object of BTCUSDT@1h" in out.stdout
    assert "line 10: row of BTCUSDT@1m in the object of BTCUSDT@1h" in out.stdout
    assert out.stderr.strip().splitlines()[-1].startswith("verify: 1 of 1 stream(s) violate")


def test_verify_fails_the_reported_kelvin_sign_row(tmp_path: Path) -> None:
    """Issue 12.1: a LIN\u212aUSDT row had replaced a LINKUSDT row and verify printed OK."""
    rows = parse_csv(recorded_csv("BTCUSDT-1h-2022-01.csv"), "LINKUSDT", "1h")[:5]
    store = LocalStore(tmp_path)
    LakeWriter(store).write_rows("LINKUSDT", "1h", rows)
    name = object_name("LINKUSDT", "1h")
    lines = [r.to_line() for r in rows]
    lines[2] = lines[2].replace(b'"LINKUSDT"', '"LIN\u212aUSDT"'.encode())
    info = store.stat(name)
    assert info is not None
    store.write(name, b"".join(lines), if_generation_match=info.generation)
    out = run_cli("verify", "--lake", str(tmp_path))
    assert out.returncode == 1
    assert "invalid row: line 3: field 'symbol'" in out.stdout and "NFKC" in out.stdout


class _NoBucket:
    """A store over a bucket that does not exist, as the GCS backend reports it."""

    def list(self, prefix: str) -> list[object]:
        raise ObjectNotFound(f"{prefix}: 404 The specified bucket does not exist.")


def test_verify_a_missing_bucket_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    from klinelake.commands import main as cli

    monkeypatch.setattr(cli, "open_lake", lambda uri: _NoBucket())
    out = CliRunner().invoke(cli.main, ["verify", "--lake", "gs://no-such-bucket"])
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        "verify: lake gs://no-such-bucket: no such bucket "
        "(raw/: 404 The specified bucket does not exist.)"
    ]


@pytest.mark.stack
def test_verify_a_missing_bucket_on_fake_gcs(stack: Stack) -> None:
    env = {**os.environ, **stack.env()}
    out = subprocess.run(
        [sys.executable, "-m", "klinelake", "verify", "--lake", "gs://no-such-bucket"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert one_line(out).startswith("verify: lake gs://no-such-bucket: no such bucket")


def test_verify_without_google_credentials_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.auth.exceptions import DefaultCredentialsError

    from klinelake.backends import gcs_store
    from klinelake.commands import main as cli

    def no_credentials() -> None:
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(gcs_store, "make_client", no_credentials)
    out = CliRunner().invoke(cli.main, ["verify", "--lake", "gs://some-bucket"])
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        "verify: lake gs://some-bucket: no Google credentials: "
        "Your default credentials were not found."
    ]
