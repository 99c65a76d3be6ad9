from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klinelake.core.errors import InvalidInterval
from klinelake.core.intervals import (
    INTERVALS,
    align_down,
    close_time,
    count_between,
    find_gaps,
    interval_ms,
    is_aligned,
    last_closed_open_time,
    next_open_time,
    open_times,
    prev_open_time,
)


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def test_all_sixteen_intervals() -> None:
    assert len(INTERVALS) == 16
    t = ms(2024, 3, 1)
    for iv in INTERVALS:
        a = align_down(t + 12_345, iv)
        assert is_aligned(a, iv)
        assert next_open_time(a, iv) > a
        assert prev_open_time(next_open_time(a, iv), iv) == a


def test_week_opens_monday_and_month_is_calendar() -> None:
    assert align_down(ms(2017, 7, 5, 13), "1w") == 1499040000000  # the REST doc example
    assert close_time(1499040000000, "1w") == 1499644799999
    assert datetime.fromtimestamp(align_down(ms(2024, 2, 29, 23), "1M") / 1000, UTC).day == 1
    assert next_open_time(ms(2024, 1, 1), "1M") == ms(2024, 2, 1)
    assert next_open_time(ms(2024, 2, 1), "1M") == ms(2024, 3, 1)  # leap February
    assert next_open_time(ms(2024, 12, 1), "1M") == ms(2025, 1, 1)
    assert count_between(ms(2024, 1, 1), ms(2024, 12, 1), "1M") == 12


def test_case_sensitive_names() -> None:
    assert interval_ms("1m") == 60_000
    with pytest.raises(InvalidInterval):
        interval_ms("1M")
    for bad in ("1H", "2m", "", "1mo"):
        with pytest.raises(InvalidInterval):
            align_down(0, bad)


def test_last_closed() -> None:
    assert last_closed_open_time(ms(2024, 1, 1, 10, 30), "1h") == ms(2024, 1, 1, 9)
    assert last_closed_open_time(ms(2024, 1, 1, 10), "1h") == ms(2024, 1, 1, 9)


def test_find_gaps() -> None:
    h = 3_600_000
    base = ms(2024, 1, 1)
    present = [base, base + h, base + 4 * h, base + 5 * h]
    assert find_gaps(present, base, base + 7 * h, "1h") == [
        (base + 2 * h, base + 3 * h),
        (base + 6 * h, base + 7 * h),
    ]
    assert find_gaps([], base, base + h, "1h") == [(base, base + h)]
    assert find_gaps(present, base, base + 1 * h, "1h") == []


@given(
    st.sets(st.integers(0, 300), max_size=120),
    st.sampled_from(["1m", "1h", "1d", "1w", "1M", "3d"]),
)
def test_gaps_and_present_partition_the_range(offsets: set[int], iv: str) -> None:
    first = align_down(ms(2023, 1, 1), iv) if iv != "3d" else ms(2023, 1, 1)
    grid = [first]
    for _ in range(300):
        grid.append(next_open_time(grid[-1], iv))
    present = sorted(grid[i] for i in offsets)
    last = grid[300]
    gaps = find_gaps(present, first, last, iv)
    missing = {t for a, b in gaps for t in open_times(a, b, iv)}
    assert missing.isdisjoint(present)
    assert missing | set(present) == set(grid)
    assert count_between(first, last, iv) == 301


@given(
    st.sampled_from(["1s", "1m", "1h", "1d", "1w", "1M", "3d"]),
    st.integers(0, 40),
    st.lists(st.tuples(st.sampled_from(["drop", "dup", "shift", "outside"]), st.integers(0, 40))),
)
def test_the_complete_answer_fast_path_agrees_with_the_walk(
    iv: str, n: int, edits: list[tuple[str, int]]
) -> None:
    """find_gaps answers a list that is exactly the grid without walking it; any other list
    (a hole, a repeat, an off-grid or out-of-range time) gets what the walk gives."""
    first = align_down(ms(2023, 1, 1), iv) if iv != "3d" else ms(2023, 1, 1)
    grid = [first]
    for _ in range(n):
        grid.append(next_open_time(grid[-1], iv))
    present = list(grid)
    for kind, i in edits:
        if not present:
            break
        i %= len(present)
        if kind == "drop":
            del present[i]
        elif kind == "dup":
            present.insert(i, present[i])
        elif kind == "shift":  # off the grid, order kept
            if i + 1 < len(present) and present[i] + 1 < present[i + 1]:
                present[i] += 1
        else:
            present.append(present[-1] + 10**12)
    last = grid[-1]
    assert find_gaps(present, first, last, iv) == find_gaps(iter(present), first, last, iv)
    if present == grid:
        assert find_gaps(present, first, last, iv) == []
