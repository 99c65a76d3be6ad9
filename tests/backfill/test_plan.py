"""The plan (pure): pages on a fixed grid per stream, clipped to the wanted ranges; and the
checkpoint file."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.checkpoint import Checkpoint
from backfill.plan import Plan, first_open_at_or_after, plan_ranges, plan_stream
from klinelake.core.intervals import DAY, HOUR, MINUTE, WEEK, align_down, count_between

T0 = 1_640_995_200_000  # 2022-01-01 00:00 UTC (a Saturday)


def test_pages_sit_on_the_grid_and_cover_the_range_exactly() -> None:
    pages = plan_ranges("BTCUSDT", "1h", [(T0 + 5 * HOUR, T0 + 60 * HOUR)], page_limit=24)
    assert [(p.start, p.end, p.expected) for p in pages] == [
        (T0 + 5 * HOUR, T0 + 24 * HOUR - 1, 19),
        (T0 + 24 * HOUR, T0 + 48 * HOUR - 1, 24),
        (T0 + 48 * HOUR, T0 + 60 * HOUR, 13),
    ]
    assert pages[1].key == f"BTCUSDT@1h:{T0 + 24 * HOUR}:{T0 + 48 * HOUR - 1}"


def test_a_longer_range_reuses_the_same_page_keys() -> None:
    short = plan_stream("BTCUSDT", "1m", T0, T0 + 2999 * MINUTE)
    longer = plan_stream("BTCUSDT", "1m", T0, T0 + 9999 * MINUTE)
    assert {p.key for p in short.pages[:-1]} <= {p.key for p in longer.pages}


@given(
    interval=st.sampled_from(["1m", "1h", "4h", "1d", "3d", "1w", "1M"]),
    start=st.integers(T0, T0 + 400 * DAY),
    length=st.integers(0, 3000),
    limit=st.sampled_from([1, 7, 100, 1000]),
)
def test_pages_partition_the_open_times(interval: str, start: int, length: int, limit: int) -> None:
    first = first_open_at_or_after(start, interval)
    step = DAY if interval in ("3d", "1w", "1M") else 7 * MINUTE
    last = max(first, align_down(first + length * step, interval))
    pages = plan_ranges("BTCUSDT", interval, [(first, last)], page_limit=limit)
    assert pages[0].start == first and align_down(pages[-1].end, interval) == last
    for a, b in itertools.pairwise(pages):
        assert b.start == a.end + 1
    assert all(1 <= p.expected <= limit for p in pages)
    assert sum(p.expected for p in pages) == count_between(first, last, interval)


def test_weeks_open_on_monday_and_months_on_the_first() -> None:
    monday = T0 + 2 * DAY  # 2022-01-03
    pages = plan_ranges("BTCUSDT", "1w", [(monday, monday + 20 * WEEK)], page_limit=10)
    assert sum(p.expected for p in pages) == 21
    months = plan_ranges("BTCUSDT", "1M", [(T0, 1_672_531_200_000)], page_limit=5)  # to 2023-01
    assert sum(p.expected for p in months) == 13


def test_plan_interleaves_streams_and_counts_weight() -> None:
    a = plan_stream("BTCUSDT", "1h", T0, T0 + 2999 * HOUR)
    b = plan_stream("ETHUSDT", "1h", T0, T0 + 999 * HOUR)
    plan = Plan((a, b), 1000)
    assert [p.symbol for p in plan.pages[:3]] == ["BTCUSDT", "ETHUSDT", "BTCUSDT"]
    assert plan.page_count == len(a.pages) + len(b.pages) and plan.weight == 2 * plan.page_count
    with pytest.raises(ValueError, match="page limit"):
        plan_ranges("BTCUSDT", "1h", [(T0, T0)], page_limit=1001)


def test_missing_only_plans_just_the_gaps() -> None:
    s = plan_stream("BTCUSDT", "1h", T0, T0 + 99 * HOUR, missing=[(T0 + 10 * HOUR, T0 + 12 * HOUR)])
    assert [(p.start, p.end) for p in s.pages] == [(T0 + 10 * HOUR, T0 + 12 * HOUR)]


def test_checkpoint_survives_a_torn_last_line(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path, "abc")
    cp.mark(["p1", "p2"])
    cp.close()
    with open(cp.path, "ab") as f:
        f.write(b'{"page":"p3')  # a crash in the middle of an append
    again = Checkpoint(tmp_path, "abc")
    assert again.load() == {"p1", "p2"}
    again.mark(["p4"])
    again.close()
    assert Checkpoint(tmp_path, "abc").load() == {"p1", "p2", "p4"}


def test_pure_modules_import_no_network_client() -> None:
    code = (
        "import sys\n"
        "import klinelake.binance.weight, klinelake.backends.empty_ranges, backfill.plan, "
        "backfill.checkpoint\n"
        "print(sorted(m for m in sys.modules if m.startswith(('httpx', 'aiohttp', 'requests', "
        "'websockets', 'google.cloud.storage', 'google.cloud.pubsub', 'google.api_core'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_times_are_utc_dates_datetimes_or_epoch_ms() -> None:
    from backfill.__main__ import parse_time

    assert parse_time("2022-01-01") == T0
    assert parse_time("2022-01-01", end=True) == T0 + DAY - 1  # an end date means the whole day
    assert parse_time("2022-01-01T05:00:00") == T0 + 5 * HOUR
    assert parse_time("2022-01-01T06:00:00+01:00") == T0 + 5 * HOUR
    assert parse_time("2022-01-01T05:00:00Z") == T0 + 5 * HOUR
    assert parse_time(str(T0)) == T0
