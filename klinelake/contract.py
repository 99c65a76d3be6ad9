"""The Pub/Sub message contract (DESIGN.md, contract 3), used by publishers and the function.

data:        UTF-8 JSON {"symbol":"BTCUSDC","interval":"1h","klines":[<lake row>, ...]}
attributes:  symbol, interval, open_time (first row, ms), count, source (ws|rest|vision|replay),
             schema (1)
ordering:    "{SYMBOL}@{interval}", e.g. "BTCUSDC@1h"

Extension (contract 4): `"empty": [{"from": MS, "to": MS}, ...]`, confirmed-empty ranges of the
stream (exchange halts); with a non-empty `empty`, `klines` may be `[]` (then the attribute
`open_time` is the first range's `from` and `count` is 0). A message without it is unchanged.

Publishers set every attribute; a hand-typed replay may omit them and the data then decides.
Attributes that are present but contradict the data make the message poison.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

from klinelake.errors import InvalidData, InvalidMessage
from klinelake.halts import check_range, ranges_from_json, ranges_to_json
from klinelake.intervals import Gap, check_interval
from klinelake.row import Kline, kline_from_dict
from klinelake.symbols import stream_id, validate_symbol

SCHEMA_VERSION = "1"
Source = Literal["ws", "rest", "vision", "replay"]
"""Who published a batch: the live WS, REST (backfill, gap repair), data.binance.vision
archives, or an operator's replay. Defined once: publishers are typed against it."""
SOURCES: frozenset[str] = frozenset(get_args(Source))
MAX_ROWS = 5000
# Pub/Sub refuses messages over 10 MB; we refuse to even parse more than that.
MAX_DATA_BYTES = 10_000_000
ATTRIBUTE_NAMES = ("symbol", "interval", "open_time", "count", "source", "schema")


@dataclass(frozen=True, slots=True)
class KlineBatch:
    """1..5000 rows of one stream, ascending and unique by open_time; optionally confirmed-empty
    ranges of the stream (contract 4), and then 0..5000 rows."""

    symbol: str
    interval: str
    rows: tuple[Kline, ...]
    empty: tuple[Gap, ...] = ()

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        if self.symbol != self.symbol.upper():
            raise InvalidMessage(f"symbol {self.symbol!r} must be the uppercase exchange symbol")
        check_interval(self.interval)
        for i, (first, last) in enumerate(self.empty):
            check_range(first, last, self.interval, where=f"empty[{i}]")
        if len(self.empty) > MAX_ROWS:
            raise InvalidMessage(f"a batch holds at most {MAX_ROWS} empty ranges")
        least = 0 if self.empty else 1
        if not least <= len(self.rows) <= MAX_ROWS:
            raise InvalidMessage(f"a batch holds {least} to {MAX_ROWS} rows, got {len(self.rows)}")
        prev: int | None = None
        for i, row in enumerate(self.rows):
            if row.symbol != self.symbol or row.interval != self.interval:
                raise InvalidMessage(
                    f"row {i} is {row.symbol}@{row.interval}, the batch is "
                    f"{self.symbol}@{self.interval}"
                )
            if prev is not None and row.open_time <= prev:
                raise InvalidMessage(
                    f"row {i} open_time {row.open_time} is not after {prev}: rows must be "
                    "ascending and unique"
                )
            prev = row.open_time

    @property
    def stream(self) -> str:
        return stream_id(self.symbol, self.interval)

    @property
    def first_open_time(self) -> int:
        """The first row's open time; with no rows, the first empty range's start."""
        return self.rows[0].open_time if self.rows else min(self.empty)[0]

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
        yield KlineBatch(chunk[0].symbol, chunk[0].interval, chunk)


def with_empty(
    symbol: str, interval: str, batches: Sequence[KlineBatch], empty: Sequence[Gap]
) -> list[KlineBatch]:
    """`batches` with the confirmed-empty ranges riding on the last one (or alone, if there are
    no rows), so that they are durable exactly when the rows sent with them are."""
    if not empty:
        return list(batches)
    ranges = tuple(sorted(empty))
    if not batches:
        return [KlineBatch(symbol, interval, (), ranges)]
    last = batches[-1]
    return [*batches[:-1], KlineBatch(last.symbol, last.interval, last.rows, last.empty + ranges)]


def check_source(source: str) -> Source:
    """`source` as a `Source`, or ValueError (a publisher's bug or a bad flag, never data)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
    return source  # type: ignore[return-value]  # membership in get_args(Source) checked above


def encode_batch(batch: KlineBatch, source: Source) -> PubsubMessage:
    check_source(source)
    body: dict[str, Any] = {
        "symbol": batch.symbol,
        "interval": batch.interval,
        "klines": [row.to_dict() for row in batch.rows],
    }
    if batch.empty:  # absent otherwise: a message without halts keeps its exact old bytes
        body["empty"] = ranges_to_json(batch.empty)
    data = orjson.dumps(body)
    attributes = {
        "symbol": batch.symbol,
        "interval": batch.interval,
        "open_time": str(batch.first_open_time),
        "count": str(len(batch.rows)),
        "source": source,
        "schema": SCHEMA_VERSION,
    }
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
    unknown = sorted(set(obj) - {"symbol", "interval", "klines", "empty"})
    if unknown:
        raise InvalidMessage(f"data has unknown keys {unknown}")
    symbol, interval, klines = obj.get("symbol"), obj.get("interval"), obj.get("klines")
    if not isinstance(symbol, str) or not isinstance(interval, str):
        raise InvalidMessage("data needs string 'symbol' and 'interval'")
    if not isinstance(klines, list):
        raise InvalidMessage("data needs a 'klines' array")
    try:
        check_interval(interval)
        empty = ranges_from_json(obj["empty"], interval) if "empty" in obj else ()
    except InvalidMessage:
        raise
    except InvalidData as exc:
        raise InvalidMessage(str(exc)) from None
    least = 0 if empty else 1
    if not least <= len(klines) <= MAX_ROWS:
        raise InvalidMessage(f"'klines' holds {least} to {MAX_ROWS} rows, got {len(klines)}")
    try:
        validate_symbol(symbol)
        rows = tuple(kline_from_dict(r, where=f"klines[{i}]") for i, r in enumerate(klines))
    except InvalidMessage:
        raise
    except InvalidData as exc:
        raise InvalidMessage(str(exc)) from None
    batch = KlineBatch(symbol, interval, rows, empty)
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
