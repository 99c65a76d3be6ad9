"""Property tests of the merge: whatever the batches, the object is the sorted set of rows."""

from __future__ import annotations

import dataclasses
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.lake import read_object
from klinelake.local_store import LocalStore
from klinelake.merge import diff_batch, merge_lines
from klinelake.row import Kline
from klinelake.symbols import object_name
from klinelake.writer import LakeWriter

T0 = 1_700_000_040_000 - (1_700_000_040_000 % 60_000)
NAME = object_name("ETHUSDT", "1m")


def row(k: int, variant: int = 0) -> Kline:
    price = f"{2000 + k}.{variant:08d}"
    return Kline(
        open_time=T0 + k * 60_000, close_time=T0 + k * 60_000 + 59_999, symbol="ETHUSDT",
        interval="1m", open=price, high=price, low=price, close=price, volume="1.00000000",
        quote_volume=price, trades=k, taker_buy_base_volume="0.50000000",
        taker_buy_quote_volume="1000.00000000",
    )  # fmt: skip


batches_of_keys = st.lists(st.lists(st.integers(0, 60), min_size=1, max_size=25), max_size=12)


@settings(max_examples=80, deadline=None)
@given(batches_of_keys, st.randoms(use_true_random=False))
def test_any_split_any_order_any_duplication_gives_the_same_bytes(
    batches: list[list[int]], rnd: object
) -> None:
    keys = sorted({k for b in batches for k in b})
    expected = b"".join(row(k).to_line() for k in keys)
    shuffled = list(batches)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    results = []
    for order in (batches, shuffled, [keys] if keys else []):
        with tempfile.TemporaryDirectory() as d:
            store = LocalStore(d)
            w = LakeWriter(store)
            for b in order:
                w.write_rows("ETHUSDT", "1m", [row(k) for k in b])
            results.append(read_object(store, NAME))
            # appending or merging what is already there writes nothing
            info = store.stat(NAME)
            for b in order:
                assert w.write_rows("ETHUSDT", "1m", [row(k) for k in b]).action == "noop"
            assert store.stat(NAME) == info
    assert results[0] == results[1] == results[2] == expected


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2)), min_size=1,
                         max_size=20), min_size=1, max_size=10))  # fmt: skip
def test_batch_wins_on_conflicts(batches: list[list[tuple[int, int]]]) -> None:
    latest: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as d:
        store = LocalStore(d)
        w = LakeWriter(store)
        for b in batches:
            w.write_rows("ETHUSDT", "1m", [row(k, v) for k, v in b])
            for k, v in b:
                latest[k] = v
        got = read_object(store, NAME)
    assert got == b"".join(row(k, latest[k]).to_line() for k in sorted(latest))


def test_merge_lines_streams_and_diff_counts() -> None:
    existing = [row(k).to_line() for k in range(0, 20, 2)]
    batch = [(row(k).open_time, row(k, 1 if k == 4 else 0).to_line()) for k in (1, 2, 4, 25)]
    out = list(merge_lines(iter(existing), batch))
    assert [r for r in out] == sorted(set(out), key=out.index)
    assert len(out) == 12
    stats = diff_batch(iter(existing), batch)
    assert (stats.added, stats.replaced, stats.unchanged) == (2, 1, 1)


def test_writer_routes_append_merge_noop(tmp_path: object) -> None:
    store = LocalStore(str(tmp_path))
    w = LakeWriter(store)
    assert w.write_rows("ETHUSDT", "1m", [row(k) for k in range(10)]).action == "create"
    r = w.write_rows("ETHUSDT", "1m", [row(k) for k in range(10, 12)])
    assert r.action == "append" and "open_lines" not in r.storage_calls
    assert r.storage_calls["read_tail"] == 1
    r = w.write_rows("ETHUSDT", "1m", [row(5, 1)])
    assert (r.action, r.rows_replaced) == ("merge", 1)
    r = w.write_rows("ETHUSDT", "1m", [row(5, 1), row(11)])
    assert r.action == "noop" and r.generation_before == r.generation_after
    assert "write" not in r.storage_calls and "compose" not in r.storage_calls
    assert not store.list("staging/")  # parts are always removed


def test_rows_from_another_stream_are_refused(tmp_path: object) -> None:
    import pytest

    from klinelake.errors import InvalidData

    w = LakeWriter(LocalStore(str(tmp_path)))
    with pytest.raises(InvalidData):
        w.write_rows("BTCUSDT", "1m", [row(1)])
    with pytest.raises(InvalidData):
        w.write_rows("ETHUSDT", "1m", [dataclasses.replace(row(1), interval="1h")])
