"""Confirmed-empty ranges in the lake (DESIGN.md, contract 4): the message extension, the meta
object's union under generation preconditions, the no-op rule, and rows win."""

from __future__ import annotations

import tempfile
from typing import get_args

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.backends.lake import read_object
from klinelake.backends.local_store import LocalStore
from klinelake.core.contract import (
    SOURCES,
    KlineBatch,
    Source,
    decode_message,
    encode_batch,
    with_empty,
)
from klinelake.core.errors import InvalidData, InvalidMessage, PreconditionFailed
from klinelake.core.halts import coalesce, encode_meta, meta_object_name, subtract_rows
from klinelake.core.halts_writer import read_empty, rows_in_span
from klinelake.core.storage import ObjectInfo
from klinelake.core.symbols import object_name
from klinelake.core.writer import LakeWriter

from .test_merge_property import T0, row

M = 60_000
META = meta_object_name("binance", "ETHUSDT", "1m")


def t(k: int) -> int:
    return T0 + k * M


def test_meta_object_name_takes_the_market_token() -> None:
    assert META == "meta/binance_ethusdt_1m.empty.jsonl"
    assert meta_object_name("binance-um", "BTCUSD_PERP", "1h") == (
        "meta/binance-um_btcusd_perp_1h.empty.jsonl"
    )


@pytest.mark.parametrize("source", get_args(Source))
def test_every_source_round_trips(source: Source) -> None:
    """The class of the issue-14 crash: a source publishers may use that the contract refused."""
    batch = KlineBatch("ETHUSDT", "1m", (row(1),))
    msg = encode_batch(batch, source)
    assert msg.attributes["source"] == source
    assert decode_message(msg.data, msg.attributes) == batch
    assert {"ws", "rest", "vision", "replay"} == SOURCES


def test_empty_extension_round_trips_and_old_messages_keep_their_bytes() -> None:
    plain = encode_batch(KlineBatch("ETHUSDT", "1m", (row(1),)), "rest")
    assert b"empty" not in plain.data
    only = KlineBatch("ETHUSDT", "1m", (), ((t(5), t(7)),))
    msg = encode_batch(only, "rest")
    assert orjson.loads(msg.data)["empty"] == [{"from": t(5), "to": t(7)}]
    assert msg.attributes["count"] == "0" and msg.attributes["open_time"] == str(t(5))
    assert decode_message(msg.data, msg.attributes) == only
    both = with_empty("ETHUSDT", "1m", [KlineBatch("ETHUSDT", "1m", (row(1),))], [(t(3), t(3))])
    assert both == [KlineBatch("ETHUSDT", "1m", (row(1),), ((t(3), t(3)),))]


@pytest.mark.parametrize(
    ("empty", "why"),
    [
        ([{"from": t(2) + 1, "to": t(3)}], "not a 1m open time"),
        ([{"from": t(3), "to": t(2)}], "before 'from'"),
        ([{"from": str(t(2)), "to": t(3)}], "integer ms"),
        ([{"from": t(2), "to": t(3), "x": 1}], "exactly 'from' and 'to'"),
        ({"from": t(2), "to": t(3)}, "must be a JSON array"),
        ([], "holds 1 to 5000 rows"),
    ],
)
def test_bad_empty_ranges_are_poison(empty: object, why: str) -> None:
    data = orjson.dumps({"symbol": "ETHUSDT", "interval": "1m", "klines": [], "empty": empty})
    with pytest.raises(InvalidMessage, match=why):
        decode_message(data)


op = st.tuples(
    st.sampled_from(["rows", "empty"]),
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), min_size=1, max_size=4),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(op, min_size=1, max_size=8))
def test_meta_is_the_union_of_empties_minus_rows_present_when_written(
    ops: list[tuple[str, list[tuple[int, int]]]],
) -> None:
    """Whatever the order of row and halt batches: the meta object holds exactly the open times
    confirmed empty that had no row at that moment, coalesced and byte-stable."""
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(root)
        writer = LakeWriter(store)
        rows: set[int] = set()
        empty: set[int] = set()
        for kind, spans in ops:
            keys = {k for a, n in spans for k in range(a, a + n + 1)}
            if kind == "rows":
                writer.write_rows("ETHUSDT", "1m", [row(k) for k in keys])
                rows |= keys
            else:
                ranges = tuple((t(a), t(a + n)) for a, n in spans)
                writer.write_batch(KlineBatch("ETHUSDT", "1m", (), ranges))
                empty |= keys - rows
        want = coalesce([(t(k), t(k)) for k in empty], "1m")
        assert read_object(store, META) == encode_meta(want)
        assert read_empty(store, "ETHUSDT", "1m") == want


def test_a_batch_that_changes_nothing_writes_nothing(tmp_path: object) -> None:
    store = LocalStore(str(tmp_path))
    writer = LakeWriter(store)
    first = writer.write_batch(KlineBatch("ETHUSDT", "1m", (), ((t(1), t(4)),)))
    assert first.halts is not None and first.halts.action == "create"
    again = writer.write_batch(KlineBatch("ETHUSDT", "1m", (), ((t(2), t(3)),)))
    assert again.halts is not None and again.halts.action == "noop"
    assert again.halts.generation_after == first.halts.generation_after
    grown = writer.write_batch(KlineBatch("ETHUSDT", "1m", (), ((t(5), t(5)),)))
    assert grown.halts is not None and grown.halts.action == "merge"
    assert read_object(store, META) == encode_meta([(t(1), t(5))])


def test_rows_win_drops_the_part_under_rows_with_a_warning(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(str(tmp_path))
    writer = LakeWriter(store)
    # the same message: its rows are written first, so they win over its own range
    r = writer.write_batch(KlineBatch("ETHUSDT", "1m", (row(3), row(4)), ((t(1), t(6)),)))
    assert r.halts is not None and r.halts.dropped_under_rows == 2
    assert read_empty(store, "ETHUSDT", "1m") == [(t(1), t(2)), (t(5), t(6))]
    assert "rows win" in caplog.text
    assert r.log_fields()["halts_dropped_under_rows"] == 2


class ConflictOnce:
    """LocalStore whose first meta write loses a race: another writer's range lands first."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.raced = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def write(self, name: str, data: object, if_generation_match: int) -> ObjectInfo:
        if name == META and not self.raced:
            self.raced = True
            LakeWriter(self.inner).write_batch(KlineBatch("ETHUSDT", "1m", (), ((t(9), t(9)),)))
        return self.inner.write(name, data, if_generation_match)  # type: ignore[arg-type]


def test_a_precondition_conflict_is_retried_and_keeps_both_ranges(tmp_path: object) -> None:
    store = ConflictOnce(LocalStore(str(tmp_path)))
    writer = LakeWriter(store, backoff_s=0.0)  # type: ignore[arg-type]
    r = writer.write_batch(KlineBatch("ETHUSDT", "1m", (), ((t(1), t(2)),)))
    assert writer.precondition_retries == 1 and r.halts is not None
    assert read_empty(store.inner, "ETHUSDT", "1m") == [(t(1), t(2)), (t(9), t(9))]


def test_gives_up_as_transient_after_the_retry_budget(tmp_path: object) -> None:
    class AlwaysConflict(ConflictOnce):
        def write(self, name: str, data: object, if_generation_match: int) -> ObjectInfo:
            raise PreconditionFailed(name)

    writer = LakeWriter(AlwaysConflict(LocalStore(str(tmp_path))), max_attempts=3, backoff_s=0)  # type: ignore[arg-type]
    with pytest.raises(PreconditionFailed, match="gave up after 3"):
        writer.write_batch(KlineBatch("ETHUSDT", "1m", (), ((t(1), t(2)),)))


@pytest.mark.parametrize("probe", [64, 4096])
def test_rows_in_span_reads_exactly_the_rows_of_the_span(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, probe: int
) -> None:
    """Through the writer's binary search (small probes exercise it) and the bounds shortcut."""
    from klinelake.core import writer as writer_module

    monkeypatch.setattr(writer_module, "_PROBE_BYTES", probe)
    store = LocalStore(str(tmp_path))
    keys = [k for k in range(0, 400) if k % 7]
    LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in keys])
    name = object_name("ETHUSDT", "1m")
    for lo, hi in ((0, 0), (5, 30), (350, 399), (398, 500), (-5, 1000), (450, 460)):
        want = [t(k) for k in keys if lo <= k <= hi]
        assert rows_in_span(store, name, t(lo), t(hi)) == want
    assert rows_in_span(store, "raw/binance_nothing_1m.jsonl", 0, t(5)) == []


def test_subtract_rows_reports_what_it_dropped() -> None:
    kept, dropped = subtract_rows([(t(0), t(5))], [t(2), t(9)], "1m")
    assert kept == [(t(0), t(1)), (t(3), t(5))] and dropped == [t(2)]


def test_a_corrupt_meta_object_is_invalid_data_not_a_guess(tmp_path: object) -> None:
    store = LocalStore(str(tmp_path))
    store.write(META, b'{"from":1,"to":"x"}\n', if_generation_match=0)
    with pytest.raises(InvalidData, match="integer ms"):
        read_empty(store, "ETHUSDT", "1m")


def test_the_message_json_schema_accepts_halts_and_still_refuses_empty_messages() -> None:
    import json
    from pathlib import Path

    import jsonschema

    schema = json.loads(
        (Path(__file__).resolve().parents[2] / "klinelake/schema/message.schema.json").read_text()
    )
    only = encode_batch(KlineBatch("ETHUSDT", "1m", (), ((t(5), t(7)),)), "vision")
    jsonschema.validate(orjson.loads(only.data), schema)
    both = encode_batch(KlineBatch("ETHUSDT", "1m", (row(1),), ((t(5), t(7)),)), "rest")
    jsonschema.validate(orjson.loads(both.data), schema)
    for bad in ({"symbol": "ETHUSDT", "interval": "1m", "klines": []},
                {"symbol": "ETHUSDT", "interval": "1m", "klines": [], "empty": []}):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
