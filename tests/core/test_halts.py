"""Confirmed-empty ranges: range algebra (klinelake.core.halts) and the publisher's local cache."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from klinelake.backends.empty_ranges import EmptyRanges
from klinelake.core.halts import coalesce, subtract
from klinelake.core.intervals import HOUR, open_times

T0 = 1_640_995_200_000  # 2022-01-01 00:00 UTC


def h(n: int) -> int:
    return T0 + n * HOUR


def test_merge_joins_overlapping_and_adjacent() -> None:
    assert coalesce(
        [(h(5), h(6)), (h(0), h(2)), (h(3), h(3)), (h(9), h(9)), (h(6), h(5))], "1h"
    ) == [
        (h(0), h(3)),
        (h(5), h(6)),
        (h(9), h(9)),
    ]


def test_subtract() -> None:
    assert subtract([(h(0), h(10))], [(h(2), h(3)), (h(7), h(12))], "1h") == [
        (h(0), h(1)),
        (h(4), h(6)),
    ]
    assert subtract([(h(0), h(3))], [(h(0), h(3))], "1h") == []
    assert subtract([(h(0), h(3))], [], "1h") == [(h(0), h(3))]


ranges = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8)), max_size=6)


@given(gaps=ranges, empty=ranges)
def test_subtract_is_set_difference(
    gaps: list[tuple[int, int]], empty: list[tuple[int, int]]
) -> None:
    def as_ranges(rs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(h(a), h(a + n)) for a, n in rs]

    def as_set(rs: list[tuple[int, int]]) -> set[int]:
        return {t for a, b in rs for t in open_times(a, b, "1h")}

    got = subtract(as_ranges(gaps), as_ranges(empty), "1h")
    assert as_set(got) == as_set(as_ranges(gaps)) - as_set(as_ranges(empty))
    assert got == coalesce(got, "1h")


def test_store_round_trip_and_merge(tmp_path: Path) -> None:
    store = EmptyRanges(tmp_path / "state")
    assert store.get("BTCUSDC", "1h") == []
    store.add("BTCUSDC", "1h", [(h(2), h(3))])
    store.add("BTCUSDC", "1h", [(h(4), h(4))])
    store.add("ETHUSDT", "1m", [])
    assert store.get("BTCUSDC", "1h") == [(h(2), h(4))]
    assert orjson.loads(store.path.read_bytes()) == {"BTCUSDC@1h": [[h(2), h(4)]]}
    assert [p.name for p in store.state_dir.iterdir() if p.name.startswith(".confirmed")] == []
