"""The local lake takes several contract batches per write (`LakeSink.rows_per_send`): history
written in front of newer rows rewrites those rows once per write, so fewer, larger writes
rewrite them less (issue 15). The lake ends up as with one write per batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from backfill.run import run_backfill
from backfill.settings import Settings
from binance_sim.testing import SimProcess
from klinelake.backends.lake import open_store, read_object
from klinelake.backends.sink import LOCAL_ROWS_PER_WRITE, LakeSink
from klinelake.core.contract import MAX_ROWS, KlineBatch, Source, make_batches
from klinelake.core.errors import InvalidData
from klinelake.core.markets import Market
from klinelake.core.writer import LakeWriter
from tests.backfill.conftest import Quiet
from tests.core.test_merge_property import NAME, row

JANUARY = (1_672_531_200_000, 1_675_209_600_000 - 1)  # 2023-01, 1h: 744 klines


class CountingSink(LakeSink):
    def __init__(self, lake: str) -> None:
        super().__init__(lake)
        self.writes: list[int] = []

    async def send_all(self, batches: Sequence[KlineBatch], source: Source) -> None:
        self.writes.append(len(batches))
        await super().send_all(batches, source)


class OneByOne(CountingSink):
    """What Pub/Sub and GCS take: a batch per write."""

    @property
    def rows_per_send(self) -> int:
        return MAX_ROWS


async def test_a_backfill_into_the_local_lake_writes_several_batches_at_once(
    sim: SimProcess, tmp_path: Path
) -> None:
    per_write = LOCAL_ROWS_PER_WRITE // MAX_ROWS
    results = {}
    for name, lake in (("local", tmp_path / "lake"), ("one by one", tmp_path / "plain")):
        settings = Settings(
            rest_url=sim.url, lake=str(lake), state_dir=lake.with_suffix(".state"),
            start_ms=JANUARY[0], end_ms=JANUARY[1], batch_rows=24,
        )  # fmt: skip
        sink = CountingSink(settings.lake) if name == "local" else OneByOne(settings.lake)
        result = await run_backfill(settings, Quiet(), sink=sink)
        assert result.batches_sent == 744 // 24 and result.rows_sent == 744
        results[name] = (
            sink.writes,
            read_object(open_store(str(lake)), "raw/binance_btcusdc_1h.jsonl"),
        )
    (local_writes, local_lake), (single_writes, single_lake) = (
        results["local"],
        results["one by one"],
    )
    assert local_lake == single_lake and local_lake.count(b"\n") == 744
    assert single_writes == [1] * 31
    assert sum(local_writes) == 31 and max(local_writes) == per_write and len(local_writes) == 2


def test_write_batches_refuses_batches_that_are_not_one_ascending_stream(tmp_path: Path) -> None:
    writer = LakeWriter(open_store(str(tmp_path)))
    rows = [row(k) for k in range(10)]
    low, high = list(make_batches(rows, 5))
    other = KlineBatch("ETHUSDT", "1m", (replace(row(20), market=Market.UM),), market=Market.UM)
    with pytest.raises(InvalidData, match="must ascend"):
        writer.write_batches((high, low))
    with pytest.raises(InvalidData, match="got a batch of"):
        writer.write_batches((low, other))
    assert open_store(str(tmp_path)).stat(NAME) is None  # nothing written
    result = writer.write_batches((low, high))
    assert result.action == "create" and result.rows_added == 10
    assert read_object(open_store(str(tmp_path)), NAME) == b"".join(r.to_line() for r in rows)
