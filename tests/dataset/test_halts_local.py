"""Halts in the local lake (the embedded default): the backfill records them in the meta object,
and the publisher's state is a cache that can be lost without harm: `verify` with no state
passes, and `--missing-only` after deleting the state fetches nothing."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from backfill.__main__ import parse_time
from backfill.run import run_backfill
from backfill.settings import Settings
from klinelake.backends.lake import read_object
from klinelake.backends.local_store import LocalStore
from klinelake.core.halts import encode_meta, meta_object_name
from tests.backfill.conftest import Quiet, halted_simulator

H = 3_600_000
DAY = parse_time("2023-04-10")
HALT = (DAY + 5 * H, DAY + 9 * H)


def test_backfill_halts_live_in_the_lake_and_the_state_is_only_a_cache(tmp_path: Path) -> None:
    end = DAY + 3 * 24 * H - 1
    settings = Settings(symbols=("HLTUSDT",), intervals=("1h",), start_ms=DAY, end_ms=end,
                        lake=str(tmp_path / "lake"), state_dir=tmp_path / "state",
                        page_limit=24, batch_rows=30)  # fmt: skip
    with halted_simulator("2023-06-02T00:00:00", "HLTUSDT", "2023-01-01", HALT) as sim:
        settings = replace(settings, rest_url=sim.url)
        asyncio.run(run_backfill(settings, Quiet()))
        store = LocalStore(tmp_path / "lake")
        meta = read_object(store, meta_object_name("binance", "HLTUSDT", "1h"))
        assert meta == encode_meta([HALT])
        shutil.rmtree(tmp_path / "state")  # the cache is gone
        out = subprocess.run(
            [sys.executable, "-m", "klinelake", "verify", "--lake", str(tmp_path / "lake")],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        before = sim.state()["counters"]["rest_requests"].get("/api/v3/klines", 0)
        result = asyncio.run(run_backfill(replace(settings, missing_only=True), Quiet()))
        after = sim.state()["counters"]["rest_requests"].get("/api/v3/klines", 0)
    assert result.plan.page_count == 0 and after == before  # the lake knew the halt
