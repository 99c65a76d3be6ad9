"""History newest first where the lake prepends cheaply (issue 15): each batch is ascending and
lies wholly before what was sent, every row arrives once, and a crash resumes from the checkpoint
in the same order."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest

from backfill.run import run_backfill
from klinelake.core.contract import MAX_ROWS, KlineBatch
from klinelake.core.intervals import HOUR
from tests.http_stub import http_stub

from .conftest import Quiet
from .test_run_unit import T0, exchange, settings


class RecordingSink:
    """A sink over a lake that prepends cheaply; optionally fails after `fail_after` batches."""

    history_newest_first = True
    description = "recording"
    rows_per_send = MAX_ROWS  # one contract batch per write, as Pub/Sub

    def __init__(self, fail_after: int | None = None) -> None:
        self.batches: list[KlineBatch] = []
        self.fail_after = fail_after

    async def send(self, batch: KlineBatch, source: str) -> None:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise RuntimeError("sink crashed")
        self.batches.append(batch)

    async def send_all(self, batches: Sequence[KlineBatch], source: str) -> None:
        for batch in batches:
            await self.send(batch, source)

    async def close(self) -> None:
        return None


def times(sink: RecordingSink) -> list[list[int]]:
    return [[r.open_time for r in b.rows] for b in sink.batches]


@pytest.mark.parametrize("batch_rows", [48, 30])  # 30: batches cut through 24-row pages
async def test_history_goes_newest_first_in_ascending_batches(
    tmp_path: Path, batch_rows: int
) -> None:
    delays = {T0 + 24 * HOUR: 0.05, T0 + 96 * HOUR: 0.03}  # pages complete out of order
    sink = RecordingSink()
    async with http_stub(exchange(None, delays)) as url:
        await run_backfill(settings(tmp_path, url, batch_rows=batch_rows), Quiet(), sink=sink)
    sent = times(sink)
    assert all(b == sorted(b) for b in sent)  # each batch ascending
    assert all(later[-1] < earlier[0] for earlier, later in itertools.pairwise(sent))
    assert sorted(t for b in sent for t in b) == list(range(T0, T0 + 240 * HOUR, HOUR))


async def test_a_crash_resumes_newest_first_without_repeats(tmp_path: Path) -> None:
    first = RecordingSink(fail_after=2)
    async with http_stub(exchange(None, {})) as url:
        with pytest.raises(RuntimeError):
            await run_backfill(settings(tmp_path, url), Quiet(), sink=first)
        second = RecordingSink()
        await run_backfill(settings(tmp_path, url), Quiet(), sink=second)
    done, rest = times(first), times(second)
    assert rest and all(b[-1] < done[-1][0] for b in rest)  # resumed below what was sent
    everything = sorted(t for b in done + rest for t in b)
    assert everything == list(range(T0, T0 + 240 * HOUR, HOUR))  # each row exactly once
