"""The ingest handler without servers: routing over a LocalStore, poison, logs."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest_function.handler import (
    IngestConfig,
    IngestHandler,
)
from klinelake.backends.lake import read_object
from klinelake.backends.local_store import LocalStore
from klinelake.core.contract import DEAD_LETTER_MAX_DATA, dead_letter_copy
from klinelake.core.errors import TransientError
from klinelake.core.storage import ObjectStore
from klinelake.core.symbols import object_name
from klinelake.logs import JsonFormatter
from tests.function.helpers import klines, lines, message, push_event

Sent = list[tuple[bytes, dict[str, str]]]


class Harness:
    def __init__(self, root: Path, dead_letter: bool = True) -> None:
        self.store = LocalStore(str(root / "lake"))
        self.sent: Sent = []
        self.stream = io.StringIO()
        self.log = logging.getLogger(f"ingest.test.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(JsonFormatter())
        self.log.addHandler(handler)
        self.handler = IngestHandler(
            self.store,
            (lambda d, a: self.sent.append((d, a))) if dead_letter else None,
            log=self.log,
        )

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def lake(self) -> dict[str, bytes]:
        return {o.name: read_object(self.store, o.name) for o in self.store.list("")}


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def deliver(h: Harness, rows: list[Any], message_id: str = "m1") -> Any:
    data, attrs, _ = message(rows)
    return h.handler.handle(push_event(data, attrs, message_id))


def test_live_rows_are_appended_by_compose_without_download(h: Harness) -> None:
    rows = klines("LIVE", 6)
    for i, row in enumerate(rows):
        deliver(h, [row], f"m{i}")
    name = object_name("LIVE", "1h")
    assert read_object(h.store, name) == lines(rows)
    recs = h.records()
    assert [r["action"] for r in recs] == ["create"] + ["append"] * 5
    for r in recs:
        assert r["severity"] == "INFO"
        assert r["stream"] == "LIVE@1h"
        assert "open_lines" not in r["storage_calls"]
        assert r["latency_ms"] >= 0
    # the local disk appends in place; on GCS (tests/function/test_stack_ingest.py) the same
    # route is an upload, a compose and a delete
    assert recs[1]["storage_calls"] == {"append": 1}
    assert recs[1]["rows_appended"] == 1
    assert recs[1]["generation_before"] == recs[0]["generation_after"]


def test_overlapping_batch_merges_batch_wins_and_redelivery_is_a_noop(h: Harness) -> None:
    rows = klines("MERGE", 30)
    deliver(h, rows[:20], "a")
    corrected = [
        type(r)(**{**r.to_dict(), "close": "1.00000000"}) if 10 <= i < 15 else r
        for i, r in enumerate(rows[10:30], start=10)
    ]
    result = deliver(h, corrected, "b")
    assert result.action == "merge"
    assert (result.rows_added, result.rows_replaced, result.rows_unchanged) == (10, 5, 5)
    expected = rows[:10] + corrected
    assert read_object(h.store, object_name("MERGE", "1h")) == lines(expected)
    again = deliver(h, corrected, "b")
    assert again.action == "noop"
    assert again.generation_after == again.generation_before == result.generation_after
    assert h.records()[-1]["rows_ignored"] == 20


def _after_seed_text(symbol: str = "GOOD") -> str:
    """A message with the 4th row of the seeded stream: the lake would take it (an append)."""
    return message(klines(symbol, 4)[3:])[0].decode()


# case -> (data, attributes, what the dead-letter reason says)
POISON: dict[str, tuple[bytes | str, dict[str, str], str]] = {
    "not_json": (b"this is not json {", {}, "is not JSON"),
    "wrong_schema": (b'{"symbol":"BTCUSDC","interval":"1h","rows":[]}', {}, "unknown keys"),
    "bad_symbol": (
        orjson.dumps({"symbol": "../x", "interval": "1h", "klines": [klines("X", 1)[0].to_dict()]}),
        {},
        "'..'",
    ),
    "contradicting_attributes": (
        message(klines("GOOD", 2))[0],
        {"symbol": "ETHUSDC"},
        "attribute symbol",
    ),
    "empty": (b"", {}, "empty"),
    "not_base64": ("@@@not base64@@@", {"source": "replay"}, "base64"),
    "too_many_rows": (
        orjson.dumps({"symbol": "BIG", "interval": "1h", "klines": [{}] * 5001}),
        {},
        "1 to 5000",
    ),
    # issue 12.3: the parser would keep the last of a repeated key and write the row
    "repeated_key_top_level": (
        _after_seed_text().replace('{"symbol":', '{"symbol":"ETHUSDT","symbol":', 1).encode(),
        {},
        "repeats the key 'symbol'",
    ),
    "repeated_key_in_a_row": (
        _after_seed_text().replace('"close":', '"close":"1.0","close":', 1).encode(),
        {},
        "repeats the key 'close'",
    ),
    # issue 12.3: no INT64 (nor float64) reader loads these
    "trades_2_63": (
        re.sub(r'"trades":\d+', f'"trades":{2**63}', _after_seed_text()).encode(),
        {},
        "trades",
    ),
    "trades_2_64_minus_1": (
        re.sub(r'"trades":\d+', f'"trades":{2**64 - 1}', _after_seed_text()).encode(),
        {},
        "trades",
    ),
    "decimal_beyond_numeric_scale": (
        re.sub(r'"volume":"[^"]*"', '"volume":"1.0000000001"', _after_seed_text()).encode(),
        {},
        "volume",
    ),
    # issue 12.1: U+212A KELVIN SIGN lowercases into LINKUSDT's object
    "kelvin_sign_symbol": (
        _after_seed_text("LINKUSDT").replace("LINKUSDT", "LIN\u212aUSDT").encode(),
        {},
        "NFKC",
    ),
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_poison_is_dead_lettered_acked_and_the_lake_untouched(h: Harness, case: str) -> None:
    deliver(h, klines("GOOD", 3), "seed")
    deliver(h, klines("LINKUSDT", 3), "seed-link")
    before = h.lake()
    data, attrs, why = POISON[case]
    assert h.handler.handle(push_event(data, {**attrs, "case": case}, f"p-{case}")) is None
    assert h.lake() == before
    assert len(h.sent) == 1
    dl_data, dl_attrs = h.sent[0]
    assert dl_data == (data.encode() if isinstance(data, str) else data)
    assert dl_attrs["case"] == case
    assert dl_attrs["original_message_id"] == f"p-{case}"
    assert why in dl_attrs["dead_letter_reason"]
    warning = h.records()[-1]
    assert warning["severity"] == "WARNING"
    assert warning["message_id"] == f"p-{case}"
    assert warning["reason"] == dl_attrs["dead_letter_reason"]


def test_event_without_a_message_is_poison(h: Harness) -> None:
    assert h.handler.handle({"unexpected": True}) is None
    dl_data, dl_attrs = h.sent[0]
    assert orjson.loads(dl_data) == {"unexpected": True}
    assert dl_attrs["original_message_id"] == "unknown"
    assert "InvalidMessage" in dl_attrs["dead_letter_reason"]


@pytest.mark.parametrize("size", [9_900_000, 10_000_001])
def test_oversized_junk_is_truncated_in_the_dead_letter_copy(h: Harness, size: int) -> None:
    junk = b"\xff" * size
    assert h.handler.handle(push_event(junk, {}, "junk")) is None
    dl_data, dl_attrs = h.sent[0]
    assert len(dl_data) == DEAD_LETTER_MAX_DATA
    assert dl_data == junk[:DEAD_LETTER_MAX_DATA]
    assert dl_attrs["dead_letter_truncated"] == str(size)


def test_dead_letter_copy_clips_long_reasons_and_replaces_stale_dl_attributes() -> None:
    data, attrs = dead_letter_copy(b"x", {"dead_letter_reason": "old", "a": "1"}, "r" * 5000, "m")
    assert data == b"x"
    assert attrs["a"] == "1"
    assert len(attrs["dead_letter_reason"].encode()) <= 1024
    assert attrs["dead_letter_reason"].startswith("rrr")


def test_without_a_dead_letter_topic_poison_is_only_logged(tmp_path: Path) -> None:
    h = Harness(tmp_path, dead_letter=False)
    assert h.handler.handle(push_event(b"nope", {}, "p1")) is None
    rec = h.records()[-1]
    assert rec["severity"] == "WARNING"
    assert rec["dead_letter_topic_set"] is False


def test_a_failed_dead_letter_publish_raises_so_the_message_comes_back(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    def broken(data: bytes, attrs: dict[str, str]) -> None:
        raise ConnectionError("dead-letter topic unreachable")

    h.handler.dead_letter = broken
    with pytest.raises(ConnectionError):
        h.handler.handle(push_event(b"nope", {}, "p1"))
    assert h.records()[-1]["severity"] == "ERROR"


class FlakyStore:
    """A store whose every call fails like a GCS 503."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: object, **kwargs: object) -> None:
            raise TransientError(f"{name}: 503 Service Unavailable")

        return fail


def test_transient_storage_errors_are_logged_and_raised(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    flaky: ObjectStore = FlakyStore()
    h.handler = IngestHandler(flaky, h.handler.dead_letter, log=h.log)
    data, attrs, _ = message(klines("FLAKY", 1))
    with pytest.raises(TransientError):
        h.handler.handle(push_event(data, attrs, "t1"))
    rec = h.records()[-1]
    assert rec["severity"] == "ERROR"
    assert rec["message_id"] == "t1"
    assert rec["transient"] is True
    assert h.sent == []


def test_config_from_env() -> None:
    cfg = IngestConfig.from_env({"LAKE_URI": "gs://b", "DEAD_LETTER_TOPIC": "projects/p/topics/d"})
    assert (cfg.lake_uri, cfg.dead_letter_topic) == ("gs://b", "projects/p/topics/d")
    assert IngestConfig.from_env({}).lake_uri == "./lake"
    assert IngestConfig.from_env({}).dead_letter_topic is None


def test_the_merge_budget_comes_from_the_ack_deadline() -> None:
    """Issue 12 item 6: the function's work per delivery is bounded by the push deadline."""
    cfg = IngestConfig.from_env({"ACK_DEADLINE_S": "60", "MERGE_PIECE_BYTES": "1048576"})
    assert (cfg.ack_deadline_s, cfg.merge_piece_bytes) == (60.0, 1048576)
    budget = IngestHandler.from_config(cfg).writer.merge_budget
    assert budget is not None and (budget.work_s, budget.lease_s) == (20.0, 60.0)
    assert IngestConfig.from_env({}).ack_deadline_s == 300.0
    for bad, said in (
        ({"ACK_DEADLINE_S": "5m"}, "ACK_DEADLINE_S='5m': not a number (float)"),
        ({"ACK_DEADLINE_S": "-1"}, "ACK_DEADLINE_S='-1': must be positive"),
        ({"MERGE_PIECE_BYTES": "1.5"}, "MERGE_PIECE_BYTES='1.5': not a number (int)"),
    ):
        with pytest.raises(ValueError, match=re.escape(said)):
            IngestConfig.from_env(bad)
