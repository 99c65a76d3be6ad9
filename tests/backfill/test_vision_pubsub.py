"""`--source vision` through the local cloud: backfill → Pub/Sub emulator → function → fake-gcs.

The message source `vision` must be accepted end to end (it once crashed the first batch), and a
halt the archive lacks lands in the stream's meta object (DESIGN.md, contract 4)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill.__main__ import parse_time
from binance_sim.testing import SimProcess
from localcloud import Stack, wait_for

from .conftest import halted_simulator, run_cli

pytestmark = pytest.mark.stack

SYMBOL = "VISUSDT"  # a symbol of its own: the session's stack is shared with other suites
START, END = parse_time("2024-11-20"), parse_time("2025-03-05", end=True)
HALT = (parse_time("2025-01-10"), parse_time("2025-01-12", end=True) - 3_599_999)


@pytest.fixture(scope="module")
def vsim() -> Iterator[SimProcess]:
    with halted_simulator("2025-03-10T00:00:00", SYMBOL, "2024-11-01", HALT) as running:
        yield running


def test_vision_backfill_lands_rows_and_halt_in_fake_gcs(
    stack: Stack, vsim: SimProcess, tmp_path: Path
) -> None:
    env = stack.env()
    done = run_cli(
        vsim, tmp_path, "--symbols", SYMBOL, "--intervals", "1h", "--start", "2024-11-20",
        "--end", "2025-03-05", "--source", "vision", "--vision-url", vsim.url,
        "--topic", env["KLINES_TOPIC"], env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "lake").exists()  # nothing went to the local lake
    truth = vsim.truth(SYMBOL, "1h", START, END)
    wait_for(lambda: stack.read_object("raw/binance_visusdt_1h.jsonl") == truth, timeout=90,
             what="VISUSDT rows in fake-gcs")  # fmt: skip
    meta = b'{"from":%d,"to":%d}\n' % HALT
    wait_for(lambda: stack.read_object("meta/binance_visusdt_1h.empty.jsonl") == meta,
             timeout=60, what="VISUSDT halt in the meta object")  # fmt: skip
