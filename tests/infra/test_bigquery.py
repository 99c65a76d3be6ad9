"""infra/bigquery.sh and its SQL, checked offline: the --dry-run commands, each accepted by the
real `bq` in the request recorder; the views parsed with sqlglot's BigQuery dialect and run,
transpiled to DuckDB, over a local lake with exact decimal results; re-runs change nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from klinelake.backends.local_store import LocalStore
from klinelake.core.contract import KlineBatch
from klinelake.core.row import parse_csv
from klinelake.core.writer import LakeWriter
from tests.recorded import recorded_csv

from .conftest import INFRA, VENV_BIN
from .test_infra import _can_isolate_network, checks, commands, no_gcloud_env, run_script

SCHEMA = json.loads((INFRA / "bigquery" / "klines.table.json").read_text())
DECIMALS = [f["name"] for f in SCHEMA if f["type"] == "STRING" and f["name"] not in
            ("symbol", "interval")]  # fmt: skip


def dry_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """--dry-run must call neither gcloud nor bq: both fail loudly if called."""
    out = no_gcloud_env(env, tmp_path)
    stub = tmp_path / "fake-bin" / "bq"
    stub.write_text("#!/bin/sh\necho 'bq was called under --dry-run' >&2\nexit 99\n")
    stub.chmod(0o755)
    return out


def dry_run(config: Path, env: dict[str, str], tmp_path: Path) -> str:
    return run_script("bigquery.sh", "--config", config, "--dry-run",
                      env=dry_env(env, tmp_path)).stdout  # fmt: skip


def view_sql(cmds: list[list[str]], name: str) -> str:
    (cmd,) = [c for c in cmds if c[-1] == f"test-project:klines.{name}" and "mk" in c]
    (flag,) = [a for a in cmd if a.startswith("--view=")]
    return flag.removeprefix("--view=")


def test_dry_run_prints_every_command_a_first_run_issues(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    out = dry_run(config, gcloud_env, tmp_path)
    cmds = commands(out)
    assert [c[-1] for c in cmds] == [
        "test-project:klines", "test-project:klines.klines_raw", "test-project:klines.halts_raw",
        "test-project:klines.klines", "test-project:klines.halts",
    ]  # fmt: skip
    assert "--location=us-central1" in cmds[0] and "--dataset" in cmds[0]
    schema = INFRA / "bigquery" / "klines.table.json"
    assert (f"--external_table_definition={schema}@NEWLINE_DELIMITED_JSON="
            "gs://test-lake/raw/binance_*.jsonl") in cmds[1]  # fmt: skip
    assert cmds[2][-2].endswith("@NEWLINE_DELIMITED_JSON=gs://test-lake/meta/binance_*.empty.jsonl")
    assert len(checks(out)) == 5  # one describe per resource, not run under --dry-run


def test_views_parse_as_bigquery_and_never_use_floats(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    cmds = commands(dry_run(config, gcloud_env, tmp_path))
    klines = sqlglot.parse_one(view_sql(cmds, "klines"), read="bigquery")
    halts = sqlglot.parse_one(view_sql(cmds, "halts"), read="bigquery")
    types = {t.sql("bigquery") for t in klines.find_all(exp.DataType)}
    assert types == {"NUMERIC(38, 9)"}  # exact decimals, no FLOAT64 anywhere
    casts = {c.this.name: c.to.sql("bigquery") for c in klines.find_all(exp.Cast)}
    assert casts == {name: "NUMERIC(38, 9)" for name in DECIMALS}
    names = [s.alias_or_name for s in klines.selects]
    assert set(names) == {f["name"] for f in SCHEMA} | {"open_ts", "close_ts"}
    assert [t.sql("bigquery") for t in klines.find_all(exp.Table)] == [
        "`test-project.klines.klines_raw`"
    ]
    assert [s.alias_or_name for s in halts.selects] == [
        "symbol_lower", "interval", "from_open_time", "to_open_time", "from_ts", "to_ts"
    ]  # fmt: skip


def test_views_run_over_a_local_lake_with_exact_decimals(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    """The views' own SQL, transpiled to DuckDB, over raw/meta tables read from a local lake
    exactly as the external tables declare them (the schema file's types)."""
    cmds = commands(dry_run(config, gcloud_env, tmp_path))
    lake = tmp_path / "lake"
    writer = LakeWriter(LocalStore(lake))
    rows = parse_csv(recorded_csv("BTCUSDT-1h-2022-01.csv"), "BTCUSDT", "1h")
    writer.write_rows("BTCUSDT", "1h", rows)
    halt = (rows[-1].open_time + 3_600_000, rows[-1].open_time + 3 * 3_600_000)
    writer.write_batch(KlineBatch("BTCUSDT", "1h", (), (halt,)))
    bq_to_duck = {"INTEGER": "BIGINT", "STRING": "VARCHAR"}
    columns = ", ".join(f"'{f['name']}': '{bq_to_duck[f['type']]}'" for f in SCHEMA)
    db = duckdb.connect()
    db.execute(f"""CREATE VIEW klines_raw AS SELECT * FROM read_json(
        '{lake}/raw/binance_*.jsonl', format = 'newline_delimited', columns = {{{columns}}})""")
    db.execute(f"""CREATE VIEW halts_raw AS SELECT "from", "to", filename AS _FILE_NAME
        FROM read_json('{lake}/meta/binance_*.empty.jsonl', format = 'newline_delimited',
                       columns = {{'from': 'BIGINT', 'to': 'BIGINT'}}, filename = true)""")

    def duck(name: str) -> str:
        tree = sqlglot.parse_one(view_sql(cmds, name), read="bigquery")
        for table in tree.find_all(exp.Table):
            table.replace(exp.to_table(table.name))
        return tree.sql("duckdb")

    got = db.execute(f"SELECT * FROM ({duck('klines')}) ORDER BY open_time").fetchall()
    cols = [d[0] for d in db.description]
    assert len(got) == len(rows) == 744
    for row, kline in zip(got, rows, strict=True):
        r = dict(zip(cols, row, strict=True))
        for name in DECIMALS:
            assert r[name] == Decimal(getattr(kline, name)), name  # exact, digit for digit
        assert r["open_ts"].timestamp() == kline.open_time / 1000  # UTC from the ms
    total = db.execute(f"SELECT sum(quote_volume) FROM ({duck('klines')})").fetchone()
    assert total is not None and total[0] == sum(Decimal(k.quote_volume) for k in rows)
    (h,) = db.execute(duck("halts")).fetchall()
    assert h[:4] == ("btcusdt", "1h", halt[0], halt[1])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bq") is None, reason="bq (gcloud SDK) not installed")
def test_every_dry_run_command_is_accepted_by_bq(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    """Like test_infra's gcloud check: the real bq, offline, against the request recorder."""
    if not _can_isolate_network():
        pytest.skip("cannot create a network namespace (unshare -n) here")
    out = dry_run(config, gcloud_env, tmp_path)
    cmds = commands(out) + checks(out)
    listing = tmp_path / "commands.jsonl"
    listing.write_text("".join(json.dumps(c) + "\n" for c in cmds))
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$1" "$2"',
         str(VENV_BIN / "python"), str(Path(__file__).with_name("gcloud_offline.py")),
         str(listing)],
        env=gcloud_env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(cmds) == 10
    for r in results:
        shown = " ".join(r["cmd"])
        assert "Flags parsing error" not in r["stderr"], shown + r["stderr"]
        assert r["requests"], f"no API request from: {shown}\n{r['stderr']}"

    def insert(ref: str) -> dict[str, object]:
        (r,) = [r for r in results if r["cmd"][-1] == ref and "mk" in r["cmd"]]
        (post,) = [q for q in r["requests"] if q["method"] == "POST"]
        return dict(json.loads(post["body"]))

    dataset = insert("test-project:klines")
    assert dataset["location"] == "us-central1"
    raw = insert("test-project:klines.klines_raw")
    ext = raw["externalDataConfiguration"]
    assert isinstance(ext, dict) and ext["sourceUris"] == ["gs://test-lake/raw/binance_*.jsonl"]
    assert ext["sourceFormat"] == "NEWLINE_DELIMITED_JSON"
    # bq sends autodetect with an inline definition; the explicit schema is honoured over it
    fields = ext["schema"]["fields"]
    assert [(f["name"], f["type"]) for f in fields] == [(f["name"], f["type"]) for f in SCHEMA]
    view = insert("test-project:klines.klines")
    assert view["view"] == {"query": view_sql(commands(out), "klines"), "useLegacySql": False}


def test_rerun_changes_nothing_and_a_changed_view_is_updated(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    state = tmp_path / "bq-state.json"
    env = {**no_gcloud_env(gcloud_env, tmp_path), "BQ": str(Path(__file__).with_name("fake_bq.py")),
           "FAKE_BQ_STATE": str(state)}  # fmt: skip
    first = commands(run_script("bigquery.sh", "--config", config, env=env).stdout)
    assert len(first) == 5
    second = run_script("bigquery.sh", "--config", config, env=env).stdout
    assert commands(second) == [] and second.count("exists, unchanged") == 5
    tables = json.loads(state.read_text())
    tables["test-project:klines.klines"]["view"]["query"] = "SELECT 1"
    state.write_text(json.dumps(tables))
    third = commands(run_script("bigquery.sh", "--config", config, env=env).stdout)
    assert [c[-1] for c in third] == ["test-project:klines.klines"] and "update" in third[0]
    assert commands(run_script("bigquery.sh", "--config", config, env=env).stdout) == []
