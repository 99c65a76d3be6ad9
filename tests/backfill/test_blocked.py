"""Backfill against a Binance that refuses it (issue 13): HTTP 451 (restricted location) or 403
(WAF) exits EXIT_BLOCKED (4) with one line naming the status, the URL and what to do, after a
single request; an exchangeInfo that never answers exits 4 too. SYMBOLS/INTERVALS come from the
environment when no flag is given (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from binance_sim.testing import SimProcess
from klinelake.config import EXIT_BLOCKED

from .conftest import lake_bytes, run_cli

BTCUSDC = "binance_btcusdc_1h.jsonl"


@pytest.fixture(autouse=True)
def healthy(sim: SimProcess) -> object:
    yield None
    sim.admin({"rest_block": 0, "rest_5xx": 0})


@pytest.mark.parametrize("status", [451, 403])
def test_refused_backfill_exits_4_with_one_line(
    sim: SimProcess, tmp_path: Path, status: int
) -> None:
    before = sim.state()["counters"]["responses_blocked"]
    sim.admin({"rest_block": status})
    done = run_cli(sim, tmp_path, "--symbols", "BTCUSDT", "--start", "2023-05-01", timeout=60)
    assert done.returncode == EXIT_BLOCKED, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"backfill: error: blocked: Binance answered HTTP {status} (")
    assert f"to GET {sim.url}/api/v3/exchangeInfo" in lines[0]
    assert "BINANCE_REST_URL=https://data-api.binance.vision" in lines[0]
    assert sim.state()["counters"]["responses_blocked"] == before + 1  # no retry
    assert not (tmp_path / "lake").exists()


def test_exchange_info_that_never_answers_exits_4(sim: SimProcess, tmp_path: Path) -> None:
    sim.admin({"rest_5xx": 1_000_000})
    done = run_cli(sim, tmp_path, "--symbols", "BTCUSDT", "--start", "2023-05-01", timeout=120)
    assert done.returncode == EXIT_BLOCKED, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"backfill: error: blocked: exchangeInfo at {sim.url} did not answer")


def test_symbols_and_intervals_from_the_environment(sim: SimProcess, tmp_path: Path) -> None:
    done = run_cli(
        sim, tmp_path, "--start", "2023-05-30", "--end", "2023-05-31",
        env={"SYMBOLS": "BTCUSDT", "INTERVALS": "1h"},  # the flags' default is BTCUSDC
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert lake_bytes(tmp_path / "lake", "binance_btcusdt_1h.jsonl").count(b"\n") == 48
    assert not lake_bytes(tmp_path / "lake", BTCUSDC)
