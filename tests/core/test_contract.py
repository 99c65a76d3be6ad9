from __future__ import annotations

import base64
import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from klinelake.core.contract import (
    KlineBatch,
    ReceivedMessage,
    decode_message,
    decode_received,
    encode_batch,
    make_batches,
    message_schema,
    unwrap_pubsub_event,
)
from klinelake.core.errors import InvalidData, InvalidMessage, InvalidSymbol
from klinelake.core.row import Kline
from klinelake.core.symbols import object_name, parse_object_name, stream_id, validate_symbol

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = message_schema()
PACKAGED_SCHEMA = "klinelake/schema/message.schema.json"


def test_the_schema_has_one_copy_and_the_docs_point_to_it() -> None:
    assert (ROOT / PACKAGED_SCHEMA).is_file()
    copies = [p for p in ROOT.rglob("*.schema.json") if ".venv" not in p.parts]
    assert [p.relative_to(ROOT).as_posix() for p in copies] == [PACKAGED_SCHEMA]
    for doc in ("README.md", "docs/contracts.md"):
        assert PACKAGED_SCHEMA in (ROOT / doc).read_text(), doc


def test_encode_decode_roundtrip(jan2022: list[Kline]) -> None:
    batch = KlineBatch("BTCUSDT", "1h", tuple(jan2022[:3]))
    msg = encode_batch(batch, "ws")
    assert msg.ordering_key == "BTCUSDT@1h"
    assert msg.attributes == {
        "symbol": "BTCUSDT", "interval": "1h", "open_time": "1640995200000",
        "count": "3", "source": "ws", "schema": "1",
    }  # fmt: skip
    assert decode_message(msg.data, msg.attributes) == batch
    jsonschema.validate(orjson.loads(msg.data), SCHEMA)


def test_hand_typed_replay_without_attributes_is_canonicalised(jan2022: list[Kline]) -> None:
    rows = [jan2022[0].to_dict()]
    typed = json.dumps({"klines": rows, "interval": "1h", "symbol": "BTCUSDT"}, indent=2)
    batch = decode_message(typed.encode(), {})
    assert batch.rows[0].to_line() == jan2022[0].to_line()


def test_make_batches_splits_at_5000_sorted_unique(jan2022: list[Kline]) -> None:
    rows = list(reversed(jan2022)) + jan2022[:10]
    batches = list(make_batches(rows, max_rows=300))
    assert [len(b.rows) for b in batches] == [300, 300, 144]
    flat = [r for b in batches for r in b.rows]
    assert flat == jan2022


@pytest.mark.parametrize(
    ("data", "attrs", "why"),
    [
        (b"", {}, "empty"),
        (b"not json", {}, "is not JSON"),
        (b"\xff\xfe", {}, "is not JSON"),
        (b"[]", {}, "JSON object"),
        (b'{"symbol":"BTCUSDT","interval":"1h","klines":[]}', {}, "1 to 5000"),
        (b'{"symbol":"BTCUSDT","interval":"1h"}', {}, "klines"),
        (b'{"symbol":"BTCUSDT","interval":"1h","klines":[{}],"x":1}', {}, "unknown keys"),
        (b'{"symbol":"../x","interval":"1h","klines":[{}]}', {}, "'..'"),
    ],
)
def test_poison_messages(data: bytes, attrs: dict[str, str], why: str) -> None:
    with pytest.raises(InvalidData, match=why):
        decode_message(data, attrs)


@pytest.mark.parametrize("interval", ["1H", "1min", "60m", "1Y", ""])
def test_an_unknown_interval_is_poison_however_the_rows_are_spelled(
    jan2022: list[Kline], interval: str
) -> None:
    """Complete rows, so the only fault is the interval (message and rows alike)."""
    row = {**jan2022[0].to_dict(), "interval": interval}
    data = orjson.dumps({"symbol": "BTCUSDT", "interval": interval, "klines": [row]})
    with pytest.raises(InvalidMessage, match=f"invalid interval '{interval}'"):
        decode_message(data)


def test_contradicting_attributes_and_wrong_stream_rows(jan2022: list[Kline]) -> None:
    msg = encode_batch(KlineBatch("BTCUSDT", "1h", tuple(jan2022[:2])), "rest")
    for key, value in [("symbol", "ETHUSDT"), ("count", "3"), ("open_time", "1"), ("schema", "2")]:
        with pytest.raises(InvalidMessage, match=f"attribute {key}"):
            decode_message(msg.data, {**msg.attributes, key: value})
    with pytest.raises(InvalidMessage, match="source"):
        decode_message(msg.data, {**msg.attributes, "source": "manual"})
    doc = orjson.loads(msg.data)
    doc["symbol"] = "ETHUSDT"
    with pytest.raises(InvalidMessage, match="row 0 is BTCUSDT@1h"):
        decode_message(orjson.dumps(doc))
    doc = orjson.loads(msg.data)
    doc["klines"].reverse()
    with pytest.raises(InvalidMessage, match="ascending"):
        decode_message(orjson.dumps(doc))
    doc = orjson.loads(msg.data)
    doc["symbol"] = "btcusdt"
    with pytest.raises(InvalidMessage, match="uppercase"):
        decode_message(orjson.dumps(doc))


def test_oversized_data_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidMessage, match="over"):
        decode_message(b"x" * 10_000_001)


def test_cloudevent_unwrap(jan2022: list[Kline]) -> None:
    msg = encode_batch(KlineBatch("BTCUSDT", "1h", (jan2022[0],)), "ws")
    event = {
        "message": {
            "data": base64.b64encode(msg.data).decode(),
            "attributes": msg.attributes,
            "messageId": "42",
            "publishTime": "2026-11-24T00:00:00Z",
        },
        "subscription": "projects/p/subscriptions/s",
    }
    received = unwrap_pubsub_event(event)
    assert received == ReceivedMessage("42", msg.data, msg.attributes, "2026-11-24T00:00:00Z")
    assert decode_received(received).rows == (jan2022[0],)
    bad = unwrap_pubsub_event({"message": {"data": "***", "messageId": "7"}})
    assert (bad.message_id, bad.data) == ("7", b"***")  # kept as received, for the dead letter
    with pytest.raises(InvalidMessage, match="base64"):
        decode_received(bad)
    no_message = unwrap_pubsub_event({"foo": 1})
    assert (no_message.message_id, no_message.data) == ("unknown", b'{"foo":1}')
    with pytest.raises(InvalidMessage, match="no Pub/Sub"):
        decode_received(no_message)


@pytest.mark.parametrize(
    "symbol", ["BTCUSDC", "1000SATSUSDT", "币安人生USDT", "ÆØÅUSDT", "BTC-USD_T.X"]
)
def test_unicode_symbols_allowed(symbol: str) -> None:
    assert validate_symbol(symbol) == symbol
    name = object_name(symbol, "1h")
    assert name == f"raw/binance_{symbol.lower()}_1h.jsonl"
    assert parse_object_name(name) == (symbol, "1h")


@pytest.mark.parametrize(
    "symbol",
    ["", "../x", "a/b", "a\\b", "BTC USDT", "BTC\tUSDT", "BTC\x00", "BTC\u200dUSDT", "..", ".BTC",
     "A" * 41, "BTC\nUSDT", "BTC..USDT"],
)  # fmt: skip
def test_hostile_symbols_refused(symbol: str) -> None:
    with pytest.raises(InvalidSymbol):
        validate_symbol(symbol)


def test_names() -> None:
    assert object_name("BTCUSDC", "1h") == "raw/binance_btcusdc_1h.jsonl"
    assert stream_id("BTCUSDC", "1h") == "BTCUSDC@1h"
    assert object_name("BTCUSDC", "1m") != object_name("BTCUSDC", "1M")
