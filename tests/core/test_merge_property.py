"""Property tests of the merge: whatever the batches, the object is the sorted set of rows."""

from __future__ import annotations

import dataclasses
import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.backends.lake import read_object
from klinelake.backends.local_store import LocalStore
from klinelake.core.merge import diff_batch, merge_lines
from klinelake.core.row import Kline
from klinelake.core.symbols import object_name
from klinelake.core.writer import LakeWriter

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
    assert w.write_rows("ETHUSDT", "1m", [row(k) for k in range(10, 20)]).action == "create"
    r = w.write_rows("ETHUSDT", "1m", [row(k) for k in range(20, 22)])
    # the live path: the writer knows the generation and bounds it made; the local disk
    # appends in place, GCS (no append) uploads a part, composes it on and deletes it
    assert r.action == "append"
    assert r.storage_calls == {"append": 1}
    from .memory_store import MemoryStore

    gcs = LakeWriter(MemoryStore())
    gcs.write_rows("ETHUSDT", "1m", [row(k) for k in range(10, 20)])
    on_gcs = gcs.write_rows("ETHUSDT", "1m", [row(k) for k in range(20, 22)])
    assert on_gcs.action == "append"
    assert on_gcs.storage_calls == {"write": 1, "compose": 1, "delete": 1}
    r = LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in range(22, 24)])
    # a cold writer on a backend without metadata: a stat and two small reads more, no pass
    assert r.action == "append" and r.storage_calls == {"stat": 1, "read_range": 2, "append": 1}
    r = w.write_rows("ETHUSDT", "1m", [row(k) for k in range(0, 10)])
    assert r.action == "prepend" and "open_lines" not in r.storage_calls
    assert "replace_from" not in r.storage_calls
    r = w.write_rows("ETHUSDT", "1m", [row(5, 1)])
    assert (r.action, r.rows_replaced) == ("merge", 1)
    r = w.write_rows("ETHUSDT", "1m", [row(5, 1), row(11)])
    assert r.action == "noop" and r.generation_before == r.generation_after
    assert "write" not in r.storage_calls and "compose" not in r.storage_calls
    assert not store.list("staging/")  # parts are always removed


def test_rows_from_another_stream_are_refused(tmp_path: object) -> None:
    import pytest

    from klinelake.core.errors import InvalidData

    w = LakeWriter(LocalStore(str(tmp_path)))
    with pytest.raises(InvalidData):
        w.write_rows("BTCUSDT", "1m", [row(1)])
    with pytest.raises(InvalidData):
        w.write_rows("ETHUSDT", "1m", [dataclasses.replace(row(1), interval="1h")])


# --- the routes behind and ahead of an object (issue 15), on both storage semantics ---------

# (first key, length) of each batch; writer: which of three writers sends it (each keeps its
# own cache of what it last made of the object, so the others' writes leave it stale)
routed_batches = st.lists(
    st.tuples(st.integers(0, 400), st.integers(1, 40), st.integers(0, 2), st.integers(0, 1)),
    min_size=1,
    max_size=14,
)


def _check_routes(store: object, batches: list[tuple[int, int, int, int]]) -> None:
    writers = [LakeWriter(store, sleep=lambda _s: None) for _ in range(3)]  # type: ignore[arg-type]
    latest: dict[int, int] = {}
    for first, length, who, variant in batches:
        keys = range(first, first + length)
        before = store.stat(NAME)  # type: ignore[attr-defined]
        # a gap: rows on both sides of the batch, none within it (history behind newer rows)
        in_gap = (
            not any(k in latest for k in keys)
            and any(k < first for k in latest)
            and any(k >= first + length for k in latest)
        )
        r = writers[who].write_rows("ETHUSDT", "1m", [row(k, variant) for k in keys])
        if in_gap:  # inserted: the rows after the gap are copied as bytes, not line by line
            assert r.action == "merge" and r.storage_calls.get("open_lines") == 1, r
        changed = any(latest.get(k) != variant for k in keys)
        for k in keys:
            latest[k] = variant
        if not changed:  # a batch that changes nothing writes nothing
            assert r.action == "noop" and store.stat(NAME) == before  # type: ignore[attr-defined]
        if before is not None and r.action in ("append", "prepend"):
            assert "open_lines" not in r.storage_calls  # O(batch): the object is never read
        assert read_object(store, NAME) == b"".join(  # type: ignore[arg-type]
            row(k, latest[k]).to_line() for k in sorted(latest)
        )
    assert not store.list("staging/")  # type: ignore[attr-defined]


@settings(max_examples=120, deadline=None, derandomize=True)
@given(routed_batches)
def test_prepend_append_merge_on_gcs_semantics(batches: list[tuple[int, int, int, int]]) -> None:
    from .memory_store import MemoryStore

    _check_routes(MemoryStore(), batches)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(routed_batches)
def test_prepend_append_merge_on_the_local_disk(batches: list[tuple[int, int, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        _check_routes(LocalStore(d), batches)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.sets(st.integers(0, 3000), min_size=1, max_size=600), st.integers(-5, 3005))
def test_offset_search_finds_the_first_row_at_or_after(keys: set[int], probe: int) -> None:
    from klinelake.core.writer import _offset_of

    from .memory_store import MemoryStore

    store = MemoryStore()
    lines = [row(k).to_line() for k in sorted(keys)]
    info = store.write(NAME, b"".join(lines), if_generation_match=0)
    want = sum(len(ln) for k, ln in zip(sorted(keys), lines, strict=True) if k < probe)
    assert _offset_of(store, info, T0 + probe * 60_000) == want  # type: ignore[arg-type]


def test_history_behind_a_week_is_prepended_then_inserted_cheaply(tmp_path: object) -> None:
    """Backfill behind live rows: on GCS semantics each batch before the first row is a compose
    (never a read of the object); on the local disk, ascending batches before the recent rows
    rewrite only the recent rows, never the history already written."""
    from .memory_store import MemoryStore

    week = [row(k) for k in range(1000, 1010)]
    gcs = MemoryStore()
    w = LakeWriter(gcs)
    w.write_rows("ETHUSDT", "1m", week)
    for start in range(900, -1, -100):  # newest history first: every batch is a prepend
        r = LakeWriter(gcs).write_rows("ETHUSDT", "1m", [row(k) for k in range(start, start + 100)])
        assert r.action == "prepend"
        assert r.storage_calls == {"stat": 1, "write": 1, "compose": 1, "delete": 1}
    local = LocalStore(str(tmp_path))
    lw = LakeWriter(local)
    lw.write_rows("ETHUSDT", "1m", week)
    assert lw.write_rows("ETHUSDT", "1m", [row(k) for k in range(0, 100)]).action == "prepend"
    inode = os.stat(local._path(NAME)).st_ino
    for start in range(100, 1000, 100):  # oldest first: each lands just before the week
        r = lw.write_rows("ETHUSDT", "1m", [row(k) for k in range(start, start + 100)])
        assert r.action == "merge" and r.storage_calls["replace_from"] == 1
        assert os.stat(local._path(NAME)).st_ino == inode  # rewritten from the week on, in place
    assert read_object(local, NAME) == read_object(gcs, NAME)  # type: ignore[arg-type]


def test_a_redelivered_append_is_a_cheap_noop() -> None:
    """After a crash (or a slow ack) Pub/Sub redelivers a batch that was already appended: the
    writer finds it a no-op by reading about the batch's span, never passing over the object
    (issue 12 item 8), and a redelivery racing the first delivery is refused by the generation
    precondition, then finds the same no-op (item 6)."""
    from .memory_store import MemoryStore

    store = MemoryStore()
    w = LakeWriter(store)
    w.write_rows("ETHUSDT", "1m", [row(k) for k in range(0, 3000)])
    size = store.stat(NAME).size  # type: ignore[union-attr]
    batch = [row(k) for k in range(2990, 3005)]
    assert w.write_rows("ETHUSDT", "1m", [row(k) for k in range(3000, 3005)]).action == "append"
    store.bytes_read = 0
    r = LakeWriter(store).write_rows("ETHUSDT", "1m", batch)  # a fresh instance: cold cache
    assert r.action == "noop" and "write" not in r.storage_calls
    assert store.bytes_read < 40 * 1024 < size // 10  # probes and the span, not the object
    store.bytes_read = 0
    r = w.write_rows("ETHUSDT", "1m", [row(k) for k in range(1500, 1510)])  # middle: same
    assert r.action == "noop" and store.bytes_read < 40 * 1024
