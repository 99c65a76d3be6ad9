"""`python -m backfill` against the simulator serving the real fixture months: byte-for-byte lake,
several streams, halts, --missing-only, bad input, the default range, dry run."""

from __future__ import annotations

from pathlib import Path

import orjson

from backfill.__main__ import parse_time
from binance_sim.testing import SimProcess
from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.commands.main import load_confirmed_empty
from klinelake.core.intervals import HOUR

from .conftest import backfill, fixture_lines, lake_bytes, run_cli

BTCUSDT = "binance_btcusdt_1h.jsonl"
BTCUSDC = "binance_btcusdc_1h.jsonl"
MAY_1 = parse_time("2023-05-01")
MAY_31_END = parse_time("2023-05-31", end=True)


def requests(sim: SimProcess) -> int:
    return int(sim.state()["counters"]["requests"])


async def test_multi_page_streams_equal_the_fixture_byte_for_byte(
    sim: SimProcess, tmp_path: Path
) -> None:
    headers: list[int] = []
    result = await backfill(
        sim, tmp_path, headers, symbols=("BTCUSDT", "BTCUSDC"), intervals=("1h",),
        start_ms=MAY_1, end_ms=MAY_31_END, page_limit=50, batch_rows=120, concurrency=6,
    )  # fmt: skip
    # 744 hours on a 50-hour page grid: 16 pages per stream, fetched out of order
    assert result.plan.page_count == 32 and result.pages_fetched == 32
    assert lake_bytes(tmp_path / "lake", BTCUSDT) == fixture_lines("2023-05")
    assert lake_bytes(tmp_path / "lake", BTCUSDC) == sim.truth("BTCUSDC", "1h", MAY_1, MAY_31_END)
    assert result.rows_sent == 2 * 744 and result.empty_ranges == []
    assert headers and max(headers) <= result.budget

    # An older month into the same lake (a merge before the existing rows), through the CLI.
    done = run_cli(
        sim, tmp_path, "--symbols", "BTCUSDT", "--start", "2022-01-01", "--end", "2022-01-31",
        "--page-limit", "200",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert lake_bytes(tmp_path / "lake", BTCUSDT) == fixture_lines("2022-01") + fixture_lines(
        "2023-05"
    )
    last = orjson.loads(done.stderr.strip().splitlines()[-1])
    assert last["message"] == "done" and last["rows_sent"] == 744
    assert last["row_path"] == "compiled"  # `make venv` builds it (setup.py)


async def test_halts_are_confirmed_empty_and_missing_only_fetches_only_gaps(
    sim: SimProcess, tmp_path: Path
) -> None:
    day = parse_time("2023-04-10")
    # a halt inside a page (05:00..09:00 on day 0) and one covering whole pages (days 2 and 3)
    sim.admin({"halt": {"symbol": "BTCUSDC", "interval": "1h", "start": day + 5 * HOUR,
                        "end": day + 9 * HOUR}})  # fmt: skip
    sim.admin({"halt": {"symbol": "BTCUSDC", "interval": "1h", "start": day + 48 * HOUR,
                        "end": day + 96 * HOUR - 1}})  # fmt: skip
    end = day + 5 * 24 * HOUR - 1
    kw = dict(symbols=("BTCUSDC",), start_ms=day, end_ms=end, page_limit=24, batch_rows=48)
    result = await backfill(sim, tmp_path, **kw)  # type: ignore[arg-type]
    lake = tmp_path / "lake"
    assert lake_bytes(lake, BTCUSDC) == sim.truth("BTCUSDC", "1h", day, end)
    assert lake_bytes(lake, BTCUSDC).count(b"\n") == 120 - 5 - 48
    halts = [(day + 5 * HOUR, day + 9 * HOUR), (day + 48 * HOUR, day + 95 * HOUR)]
    assert EmptyRanges(tmp_path / "state").get("BTCUSDC", "1h") == halts
    # what `klinelake status` reads, so it reports exchange halts, not collector gaps
    assert load_confirmed_empty(tmp_path / "state") == {"btcusdc@1h": halts}
    assert sorted(g for _, g in result.empty_ranges) == [
        halts[0],
        (day + 48 * HOUR, day + 71 * HOUR),
        (day + 72 * HOUR, day + 95 * HOUR),
    ]

    # --missing-only: nothing is missing but the halts, which are not refetched
    before = requests(sim)
    again = await backfill(sim, tmp_path, missing_only=True, **kw)  # type: ignore[arg-type]
    assert again.plan.page_count == 0 and requests(sim) - before == 1  # exchangeInfo only

    # lose a stretch of the lake: --missing-only fetches exactly the pages holding it
    lines = lake_bytes(lake, BTCUSDC).splitlines(keepends=True)
    (lake / "raw" / BTCUSDC).write_bytes(b"".join(lines[:30] + lines[40:]))
    before = requests(sim)
    repaired = await backfill(sim, tmp_path, missing_only=True, **kw)  # type: ignore[arg-type]
    assert lake_bytes(lake, BTCUSDC) == sim.truth("BTCUSDC", "1h", day, end)
    assert repaired.pages_fetched == repaired.plan.page_count == 1
    assert requests(sim) - before == 2


def test_default_range_is_the_last_days_up_to_the_last_closed_kline(
    sim: SimProcess, tmp_path: Path
) -> None:
    done = run_cli(sim, tmp_path, "--days", "2")  # default symbol BTCUSDC, interval 1h
    assert done.returncode == 0, done.stderr
    rows = [orjson.loads(x) for x in lake_bytes(tmp_path / "lake", BTCUSDC).splitlines()]
    now = int(sim.state()["now"])
    assert len(rows) in (47, 48)  # 2 days back from the server's now, closed klines only
    assert rows[-1]["close_time"] < now and now - rows[-1]["close_time"] <= HOUR + 60_000
    assert lake_bytes(tmp_path / "lake", BTCUSDC) == sim.truth(
        "BTCUSDC", "1h", rows[0]["open_time"], rows[-1]["open_time"]
    )


def test_dry_run_prints_the_plan_and_fetches_nothing(sim: SimProcess, tmp_path: Path) -> None:
    before = requests(sim)
    done = run_cli(
        sim, tmp_path, "--symbols", "BTCUSDT,BTCUSDC", "--intervals", "1h", "--start",
        "2023-01-01", "--end", "2023-05-31", "--dry-run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = orjson.loads(done.stderr.strip().splitlines()[0])
    assert plan["message"] == "dry run: plan"
    # 3624 hours: 4 pages of 1000 if they started at the range, 5 on the 1000-hour grid
    assert plan["pages"] == 2 * 5 and plan["weight"] == 20
    assert requests(sim) - before == 1  # exchangeInfo: symbols and the server's time
    assert not (tmp_path / "lake").exists()


def bad(sim: SimProcess, tmp_path: Path, *args: str) -> tuple[str, int]:
    before = requests(sim)
    done = run_cli(sim, tmp_path, *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0], requests(sim) - before


def test_bad_input_one_clear_line_and_exit_2(sim: SimProcess, tmp_path: Path) -> None:
    line, sent = bad(sim, tmp_path, "--intervals", "1h,2m")
    assert "invalid interval '2m'" in line and sent == 0
    line, sent = bad(sim, tmp_path, "--start", "2023-05-10", "--end", "2023-05-01")
    assert "start 2023-05-10T00:00:00Z is after end" in line and sent == 0
    line, sent = bad(sim, tmp_path, "--start", "yesterday")
    assert "expected epoch ms, YYYY-MM-DD" in line and sent == 0
    line, sent = bad(sim, tmp_path, "--end", "2023-05-01", "--days", "3")
    assert "mutually exclusive" in line and sent == 0
    line, sent = bad(sim, tmp_path, "--symbols", "BTC/USDT")
    assert "BTC/USDT" in line and sent == 0
    line, sent = bad(sim, tmp_path, "--symbols", "NOPEUSDT")
    assert line == "backfill: error: unknown symbol NOPEUSDT" and sent == 1
    line, sent = bad(sim, tmp_path, "--symbols", "BTCUSDT,NOPEUSDT")
    assert line == "backfill: error: unknown symbol NOPEUSDT" and sent <= 3
    line, sent = bad(sim, tmp_path, "--start", "2030-01-01")
    assert "range in the future" in line and sent == 1
    assert not (tmp_path / "lake").exists()
