"""End to end through the cloud path: backfill → Pub/Sub emulator (ordering key per stream) →
ingest function → fake-gcs lake, byte for byte against the fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from backfill.__main__ import parse_time
from binance_sim.testing import SimProcess
from klinelake.core.row import parse_lake_line
from localcloud import Stack, wait_for

from .conftest import fixture_lines, run_cli

pytestmark = pytest.mark.stack


def test_backfill_through_pubsub_function_and_fake_gcs(
    stack: Stack, sim: SimProcess, tmp_path: Path
) -> None:
    env = stack.env()
    done = run_cli(
        sim, tmp_path, "--symbols", "BTCUSDT,BTCUSDC", "--start", "2023-05-01", "--end",
        "2023-05-31", "--page-limit", "100", "--batch-rows", "300",
        "--topic", env["KLINES_TOPIC"], env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "lake").exists()  # nothing went to the local lake
    usdt = fixture_lines("2023-05")
    usdc = sim.truth("BTCUSDC", "1h", parse_time("2023-05-01"), parse_time("2023-05-31", end=True))

    # the session's stack is shared: other suites may add rows of other months to the objects
    def may(name: str) -> bytes:
        lo, hi = parse_time("2023-05-01"), parse_time("2023-05-31", end=True)
        lines = (stack.read_object(name) or b"").splitlines(keepends=True)
        return b"".join(ln for ln in lines if lo <= parse_lake_line(ln).open_time <= hi)

    wait_for(lambda: may("raw/binance_btcusdt_1h.jsonl") == usdt, timeout=90,
             what="BTCUSDT object in fake-gcs")  # fmt: skip
    wait_for(lambda: may("raw/binance_btcusdc_1h.jsonl") == usdc, timeout=90,
             what="BTCUSDC object in fake-gcs")  # fmt: skip
