"""The Pub/Sub message contract (DESIGN.md, contract 3), used by publishers and the function.

data:        UTF-8 JSON {"symbol":"BTCUSDC","interval":"1h","klines":[<lake row>, ...]}
attributes:  symbol, interval, open_time (first row, ms), count, source (ws|rest|replay), schema (1)
ordering:    "{SYMBOL}@{interval}", e.g. "BTCUSDC@1h"

Markets (futures): data gains `"market": "um" | "cm"` and the attribute `market`, the ordering
key becomes `um:BTCUSDT@1m`, and COIN-M rows use the COIN-M row keys (klinelake.markets). Spot
messages carry no `market` at all, so they are byte-for-byte what they were; absent = spot.

Publishers set every attribute; a hand-typed replay may omit them and the data then decides.
Attributes that are present but contradict the data make the message poison.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from klinelake.errors import InvalidData, InvalidMessage
from klinelake.intervals import check_interval
from klinelake.markets import Market, check_market_interval, parse_market
from klinelake.row import Kline, kline_from_dict
from klinelake.symbols import stream_id, validate_symbol

SCHEMA_VERSION = "1"
SOURCES = frozenset({"ws", "rest", "replay"})
MAX_ROWS = 5000
# Pub/Sub refuses messages over 10 MB; we refuse to even parse more than that.
MAX_DATA_BYTES = 10_000_000
ATTRIBUTE_NAMES = ("symbol", "interval", "open_time", "count", "source", "schema", "market")


@dataclass(frozen=True, slots=True)
class KlineBatch:
    """1..5000 rows of one stream, ascending and unique by open_time."""

    symbol: str
    interval: str
    rows: tuple[Kline, ...]
    market: Market = Market.SPOT

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        if self.symbol != self.symbol.upper():
            raise InvalidMessage(f"symbol {self.symbol!r} must be the uppercase exchange symbol")
        check_interval(self.interval)
        check_market_interval(self.market, self.interval)
        if not 1 <= len(self.rows) <= MAX_ROWS:
            raise InvalidMessage(f"a batch holds 1 to {MAX_ROWS} rows, got {len(self.rows)}")
        prev: int | None = None
        for i, row in enumerate(self.rows):
            if row.symbol != self.symbol or row.interval != self.interval:
                raise InvalidMessage(
                    f"row {i} is {row.symbol}@{row.interval}, the batch is "
                    f"{self.symbol}@{self.interval}"
                )
            if row.market != self.market:
                raise InvalidMessage(f"row {i} is a {row.market} row, the batch is {self.market}")
            if prev is not None and row.open_time <= prev:
                raise InvalidMessage(
                    f"row {i} open_time {row.open_time} is not after {prev}: rows must be "
                    "ascending and unique"
                )
            prev = row.open_time

    @property
    def stream(self) -> str:
        return stream_id(self.symbol, self.interval, self.market)

    @property
    def first_open_time(self) -> int:
        return self.rows[0].open_time

    @property
    def last_open_time(self) -> int:
        return self.rows[-1].open_time


@dataclass(frozen=True, slots=True)
class PubsubMessage:
    """What a publisher hands to Pub/Sub."""

    data: bytes
    attributes: dict[str, str]
    ordering_key: str


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A Pub/Sub message as the function receives it, before the contract is checked."""

    message_id: str
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    publish_time: str | None = None


def sort_unique(rows: Iterable[Kline]) -> list[Kline]:
    """Ascending by open_time; for a repeated open_time the last one given wins."""
    by_time: dict[int, Kline] = {}
    for row in rows:
        by_time[row.open_time] = row
    return [by_time[t] for t in sorted(by_time)]


def make_batches(rows: Sequence[Kline], max_rows: int = MAX_ROWS) -> Iterator[KlineBatch]:
    """Split one stream's rows (any order, duplicates allowed) into contract batches."""
    ordered = sort_unique(rows)
    for i in range(0, len(ordered), max_rows):
        chunk = tuple(ordered[i : i + max_rows])
        yield KlineBatch(chunk[0].symbol, chunk[0].interval, chunk, chunk[0].market)


def encode_batch(batch: KlineBatch, source: str) -> PubsubMessage:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
    body: dict[str, Any] = {"symbol": batch.symbol, "interval": batch.interval}
    if batch.market != Market.SPOT:  # spot messages stay byte-for-byte as before markets
        body["market"] = str(batch.market)
    body["klines"] = [row.to_dict() for row in batch.rows]
    data = orjson.dumps(body)
    attributes = {
        "symbol": batch.symbol,
        "interval": batch.interval,
        "open_time": str(batch.first_open_time),
        "count": str(len(batch.rows)),
        "source": source,
        "schema": SCHEMA_VERSION,
    }
    if batch.market != Market.SPOT:
        attributes["market"] = str(batch.market)
    return PubsubMessage(data, attributes, batch.stream)


def decode_message(data: bytes, attributes: Mapping[str, str] | None = None) -> KlineBatch:
    """Validate a received message against the contract; raise InvalidData if it is poison."""
    attributes = attributes or {}
    if not data:
        raise InvalidMessage("message data is empty")
    if len(data) > MAX_DATA_BYTES:
        raise InvalidMessage(f"message data is {len(data)} bytes, over {MAX_DATA_BYTES}")
    try:
        obj: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"data is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidMessage(f"data must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - {"symbol", "interval", "klines", "market"})
    if unknown:
        raise InvalidMessage(f"data has unknown keys {unknown}")
    market = _market_of(obj.get("market", Market.SPOT), "data")
    claimed = attributes.get("market")
    if claimed is not None and _market_of(claimed, "attribute") != market:
        raise InvalidMessage(f"attribute market={claimed!r} contradicts the data ({market!s})")
    symbol, interval, klines = obj.get("symbol"), obj.get("interval"), obj.get("klines")
    if not isinstance(symbol, str) or not isinstance(interval, str):
        raise InvalidMessage("data needs string 'symbol' and 'interval'")
    if not isinstance(klines, list):
        raise InvalidMessage("data needs a 'klines' array")
    if not 1 <= len(klines) <= MAX_ROWS:
        raise InvalidMessage(f"'klines' holds 1 to {MAX_ROWS} rows, got {len(klines)}")
    try:
        validate_symbol(symbol)
        rows = tuple(kline_from_dict(r, f"klines[{i}]", market) for i, r in enumerate(klines))
    except InvalidMessage:
        raise
    except InvalidData as exc:
        raise InvalidMessage(str(exc)) from None
    try:
        batch = KlineBatch(symbol, interval, rows, market)
    except InvalidMessage:
        raise
    except InvalidData as exc:  # e.g. `1s` on a futures market
        raise InvalidMessage(str(exc)) from None
    _check_attributes(batch, attributes)
    return batch


def _check_attributes(batch: KlineBatch, attributes: Mapping[str, str]) -> None:
    expected = {
        "symbol": batch.symbol,
        "interval": batch.interval,
        "open_time": str(batch.first_open_time),
        "count": str(len(batch.rows)),
        "schema": SCHEMA_VERSION,
    }
    for name, want in expected.items():
        got = attributes.get(name)
        if got is not None and got != want:
            raise InvalidMessage(f"attribute {name}={got!r} contradicts the data ({want!r})")
    source = attributes.get("source")
    if source is not None and source not in SOURCES:
        raise InvalidMessage(f"attribute source={source!r} is not one of {sorted(SOURCES)}")


def _market_of(value: object, where: str) -> Market:
    try:
        return parse_market(value)
    except ValueError as exc:
        raise InvalidMessage(f"{where}: {exc}") from None


def unwrap_pubsub_event(event_data: object) -> ReceivedMessage:
    """The CloudEvent `data` functions-framework hands the function for a Pub/Sub push:

    {"message": {"data": "<base64>", "attributes": {...}, "messageId": "1", "publishTime": "..."},
     "subscription": "projects/p/subscriptions/s"}
    """
    if not isinstance(event_data, Mapping) or not isinstance(event_data.get("message"), Mapping):
        raise InvalidMessage("CloudEvent data has no Pub/Sub 'message' object")
    msg = event_data["message"]
    message_id = str(msg.get("messageId") or msg.get("message_id") or "unknown")
    raw_attrs = msg.get("attributes") or {}
    attributes = (
        {str(k): str(v) for k, v in raw_attrs.items()} if isinstance(raw_attrs, Mapping) else {}
    )
    encoded = msg.get("data") or ""
    try:
        data = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
    except (binascii.Error, ValueError):
        data = b""
        attributes = {**attributes, "_decode_error": "data is not base64"}
    return ReceivedMessage(message_id, data, attributes, msg.get("publishTime"))


def decode_received(received: ReceivedMessage) -> KlineBatch:
    if "_decode_error" in received.attributes:
        raise InvalidMessage(received.attributes["_decode_error"])
    return decode_message(received.data, received.attributes)
