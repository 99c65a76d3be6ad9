"""The Pub/Sub message contract (DESIGN.md, contract 3), used by publishers and the function.

data:        UTF-8 JSON {"symbol":"BTCUSDC","interval":"1h","klines":[<lake row>, ...]}
attributes:  symbol, interval, open_time (first row, ms), count, source (ws|rest|vision|replay),
             schema (1)
ordering:    "{SYMBOL}@{interval}", e.g. "BTCUSDC@1h"
JSON Schema: klinelake/schema/message.schema.json (packaged; `message_schema()` loads it)

Markets (futures): data gains `"market": "um" | "cm"` and the attribute `market`, the ordering
key becomes `um:BTCUSDT@1m`, and COIN-M rows use the COIN-M row keys (klinelake.core.markets). Spot
messages carry no `market` at all, so they are byte-for-byte what they were; absent = spot.
Extension (contract 4): `"empty": [{"from": MS, "to": MS}, ...]`, confirmed-empty ranges of the
stream (exchange halts); with a non-empty `empty`, `klines` may be `[]` (then the attribute
`open_time` is the first range's `from` and `count` is 0). A message without it is unchanged.

Publishers set every attribute; a hand-typed replay may omit them and the data then decides.
Attributes that are present but contradict the data make the message poison, and so does a
JSON object anywhere in the data with a repeated key (the parser would keep only one of them).
This module is also the one home of the push-envelope unwrapping and of the attributes a
dead-lettered copy carries. The bounds of every field are in docs/contracts.md.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import islice
from typing import Any, Literal, get_args

import orjson
import pybase64

from klinelake.core.errors import InvalidData, InvalidMessage
from klinelake.core.halts import check_range, ranges_from_json, ranges_to_json
from klinelake.core.intervals import Gap, check_interval
from klinelake.core.json_input import load_json
from klinelake.core.markets import Market, check_market_interval, parse_market
from klinelake.core.row import (
    Kline,
    StreamRows,
    kline_from_dict,
    lake_lines,
    of_one_stream,
    open_times,
    regular_message_rows,
)
from klinelake.core.symbols import stream_id, validate_symbol

SCHEMA_VERSION = "1"
Source = Literal["ws", "rest", "vision", "replay"]
"""Who published a batch: the live WS, REST (backfill, gap repair), data.binance.vision
archives, or an operator's replay. Defined once: publishers are typed against it."""
SOURCES: frozenset[str] = frozenset(get_args(Source))
MAX_ROWS = 5000
# Pub/Sub refuses messages over 10 MB; we refuse to even parse more than that.
MAX_DATA_BYTES = 10_000_000
ATTRIBUTE_NAMES = ("symbol", "interval", "open_time", "count", "source", "schema", "market")
# The keys of the message data and the JSON type each must have. A contract extension (e.g.
# `empty`, `market`) adds its key here and its check in `decode_message`.
DATA_KEYS: dict[str, type] = {
    "symbol": str, "interval": str, "klines": list, "empty": list, "market": str,
}  # fmt: skip
REQUIRED_DATA_KEYS = ("symbol", "interval", "klines")
_JSON_NAMES = {str: "string", list: "array", dict: "object", int: "integer"}


def _ascending(times: Sequence[int]) -> bool:
    return all(map(operator.lt, times, islice(times, 1, None)))


def _rows_of_one_stream_ascending(rows: Sequence[Kline], stream: tuple[str, str, str]) -> bool:
    """Every row of `stream`, open times strictly ascending: what KlineBatch checks row by row,
    in C-level passes (a 5,000-row batch is built for every backfill message); StreamRows are of
    one stream by construction."""
    return of_one_stream(rows, stream) and _ascending(open_times(rows))


# What the function adds to a dead-lettered copy, and `klinelake deadletters` reads back.
DL_REASON = "dead_letter_reason"
DL_ORIGINAL_ID = "original_message_id"
DL_TRUNCATED = "dead_letter_truncated"
DEAD_LETTER_ATTRIBUTES = (DL_REASON, DL_ORIGINAL_ID, DL_TRUNCATED)
# Pub/Sub caps a message at 10 MB (data plus attributes, https://cloud.google.com/pubsub/quotas);
# a dead-lettered copy keeps this much of the original data and says how much there was.
DEAD_LETTER_MAX_DATA = 9_000_000
# Attribute values are capped at 1024 bytes, and a message holds at most 100 attributes.
_MAX_ATTR_VALUE = 1024
_MAX_ATTRS = 100


def message_schema() -> dict[str, Any]:
    """The message data's JSON Schema, shipped in the package (the one copy; docs link to it)."""
    text = resources.files("klinelake").joinpath("schema/message.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def decode_base64(text: str) -> bytes:
    """`base64.b64decode(text, validate=True)`, exactly (the same bytes, the same refusals):
    pybase64 decodes in a fraction of the time, and what it accepts the standard library
    decodes to the same bytes (tests/core/test_decode_base64.py); what it refuses (it is
    stricter, e.g. about padding after a complete quantum) the standard library decides."""
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return base64.b64decode(text, validate=True)


@dataclass(frozen=True, slots=True)
class KlineBatch:
    """1..5000 rows of one stream, ascending and unique by open_time; optionally confirmed-empty
    ranges of the stream (contract 4), and then 0..5000 rows.

    The rows' lake lines (`Kline.to_line()`) are rendered once: StreamRows hold them (the
    compiled REST page parser's pages), and the Klines of `regular_message_rows` carry theirs,
    so the writer and `encode_batch` serialise nothing again; a row changed by
    `dataclasses.replace` is a new Kline, rendered anew."""

    symbol: str
    interval: str
    # a tuple, or StreamRows (the backfill's pages: no Kline per row); never a list, which
    # could change after the checks below
    rows: tuple[Kline, ...] | StreamRows
    empty: tuple[Gap, ...] = ()
    # keyword-only: a batch of another market than spot is always named so at its call site
    market: Market = field(default=Market.SPOT, kw_only=True)

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        if self.symbol != self.symbol.upper():
            raise InvalidMessage(f"symbol {self.symbol!r} must be the uppercase exchange symbol")
        check_interval(self.interval)
        check_market_interval(self.market, self.interval)
        for i, (first, last) in enumerate(self.empty):
            check_range(first, last, self.interval, where=f"empty[{i}]")
        if len(self.empty) > MAX_ROWS:
            raise InvalidMessage(f"a batch holds at most {MAX_ROWS} empty ranges")
        least = 0 if self.empty else 1
        if not least <= len(self.rows) <= MAX_ROWS:
            raise InvalidMessage(f"a batch holds {least} to {MAX_ROWS} rows, got {len(self.rows)}")
        if _rows_of_one_stream_ascending(self.rows, (self.symbol, self.interval, self.market)):
            return
        prev: int | None = None  # the row-by-row pass names the first offending row
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
    """A Pub/Sub message as the function receives it, before the contract is checked.

    `envelope_error` says why the push envelope itself was unusable (no message, data not
    base64); `data` then holds what arrived, so the dead-letter copy keeps it.
    """

    message_id: str
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    publish_time: str | None = None
    envelope_error: str | None = None


def sort_unique(rows: Iterable[Kline]) -> Sequence[Kline]:
    """Ascending by open_time; for a repeated open_time the last one given wins."""
    if isinstance(rows, StreamRows):
        # Backfill pages arrive ascending, or strictly descending (newest first): C-level passes.
        if _ascending(rows.open_times):
            return rows
        if _ascending(rows.open_times[::-1]):
            return rows.reversed()
    rows = list(rows)
    # Decoded batches arrive sorted and unique: one C-level pass says so.
    if _ascending(open_times(rows)):
        return rows
    by_time: dict[int, Kline] = {}
    for row in rows:
        by_time[row.open_time] = row
    return [by_time[t] for t in sorted(by_time)]


def make_batches(rows: Sequence[Kline], max_rows: int = MAX_ROWS) -> Iterator[KlineBatch]:
    """Split one stream's rows (any order, duplicates allowed) into contract batches."""
    ordered = sort_unique(rows)
    for i in range(0, len(ordered), max_rows):
        if isinstance(ordered, StreamRows):
            part = ordered[i : i + max_rows]
            yield KlineBatch(part.symbol, part.interval, part, market=part.market)
            continue
        chunk = tuple(ordered[i : i + max_rows])
        yield KlineBatch(chunk[0].symbol, chunk[0].interval, chunk, market=chunk[0].market)


def with_empty(
    symbol: str,
    interval: str,
    batches: Sequence[KlineBatch],
    empty: Sequence[Gap],
    market: Market = Market.SPOT,
) -> list[KlineBatch]:
    """`batches` with the confirmed-empty ranges riding on the last one (or alone, if there are
    no rows), so that they are durable exactly when the rows sent with them are."""
    if not empty:
        return list(batches)
    ranges = tuple(sorted(empty))
    if not batches:
        return [KlineBatch(symbol, interval, (), ranges, market=market)]
    last = batches[-1]
    merged = dataclasses.replace(last, empty=last.empty + ranges)
    return [*batches[:-1], merged]


def check_source(source: str) -> Source:
    """`source` as a `Source`, or ValueError (a publisher's bug or a bad flag, never data)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
    return source  # type: ignore[return-value]  # membership in get_args(Source) checked above


def encode_batch(batch: KlineBatch, source: Source) -> PubsubMessage:
    check_source(source)
    body: dict[str, Any] = {"symbol": batch.symbol, "interval": batch.interval}
    if batch.market != Market.SPOT:  # spot messages stay byte-for-byte as before markets
        body["market"] = str(batch.market)
    # The rows are their lake lines (compact orjson dumps of `to_dict()`, one per line, no
    # other newline in them): joined with commas they are the array orjson would write.
    lines = lake_lines(batch.rows)
    body["klines"] = orjson.Fragment(b"[" + b"".join(lines)[:-1].replace(b"\n", b",") + b"]")
    if batch.empty:  # absent otherwise: a message without halts keeps its exact old bytes
        body["empty"] = ranges_to_json(batch.empty)
    data = orjson.dumps(body)
    attributes = {**batch_attributes(batch), "source": source}
    if batch.market != Market.SPOT:
        attributes["market"] = str(batch.market)
    return PubsubMessage(data, attributes, batch.stream)


def batch_attributes(batch: KlineBatch) -> dict[str, str]:
    """The attributes that follow from a batch's data (a message adds `source`): what a
    publisher sets and what a receiver checks present attributes against."""
    return {
        "symbol": batch.symbol,
        "interval": batch.interval,
        "open_time": str(batch.first_open_time),
        "count": str(len(batch.rows)),
        "schema": SCHEMA_VERSION,
    }


def decode_message(data: bytes, attributes: Mapping[str, str] | None = None) -> KlineBatch:
    """Validate a received message against the contract; raise InvalidData if it is poison."""
    attributes = attributes or {}
    obj = _load_json_object(data)
    unknown = sorted(set(obj) - DATA_KEYS.keys())
    if unknown:
        raise InvalidMessage(f"data has unknown keys {unknown}")
    missing = [k for k in REQUIRED_DATA_KEYS if k not in obj]
    if missing:
        raise InvalidMessage(f"data needs {missing}")
    for key, kind in DATA_KEYS.items():
        if key in obj and not isinstance(obj[key], kind):
            raise InvalidMessage(f"data {key!r} must be a JSON {_JSON_NAMES[kind]}")
    symbol, interval, klines = obj["symbol"], obj["interval"], obj["klines"]
    market = _market_of(obj.get("market", Market.SPOT), "data")
    claimed = attributes.get("market")
    if claimed is not None and _market_of(claimed, "attribute") != market:
        raise InvalidMessage(f"attribute market={claimed!r} contradicts the data ({market!s})")
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
        # before the rows, so the reason names the interval (futures have no `1s`)
        check_market_interval(market, check_interval(interval))
        # A regular array (what publishers send) is validated in bulk; anything else row by
        # row, which names the first offending field. Both accept exactly the same rows, for
        # every market (COIN-M rows have their own keys: regular_message_rows checks them).
        regular = regular_message_rows(klines, symbol, interval, market)
        if regular is not None:
            rows = tuple(regular)  # each carrying its lake line
        else:
            rows = tuple(kline_from_dict(r, f"klines[{i}]", market) for i, r in enumerate(klines))
    except InvalidMessage:
        raise
    except InvalidData as exc:
        raise InvalidMessage(str(exc)) from None
    batch = KlineBatch(symbol, interval, rows, empty, market=market)
    _check_attributes(batch, attributes)
    return batch


def _market_of(value: object, where: str) -> Market:
    try:
        return parse_market(value)
    except ValueError as exc:
        raise InvalidMessage(f"{where}: {exc}") from None


def _load_json_object(data: bytes) -> dict[str, Any]:
    if not data:
        raise InvalidMessage("message data is empty")
    if len(data) > MAX_DATA_BYTES:
        raise InvalidMessage(f"message data is {len(data)} bytes, over {MAX_DATA_BYTES}")
    obj = load_json(data, "data", dict, error=InvalidMessage)
    # orjson keeps the last of repeated keys silently. What orjson itself wrote (every
    # publisher) comes back byte for byte, and a dump never repeats a key, so only other
    # spellings (hand-typed replays) pay for the full check.
    if orjson.dumps(obj) != data:
        try:
            json.loads(data, object_pairs_hook=_refuse_repeated_keys)
        except (ValueError, RecursionError) as exc:  # InvalidMessage passes through
            raise InvalidMessage(f"data is not JSON that can be checked: {exc}") from None
    return obj


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidMessage(f"data repeats the key {key!r} in one JSON object")
        out[key] = value
    return out


def _check_attributes(batch: KlineBatch, attributes: Mapping[str, str]) -> None:
    for name, want in batch_attributes(batch).items():
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

    Never raises: an unusable envelope comes back with `envelope_error` set and whatever
    arrived as `data`, so that it can be dead-lettered as received.
    """
    msg = event_data.get("message") if isinstance(event_data, Mapping) else None
    if not isinstance(msg, Mapping):
        return ReceivedMessage(
            "unknown",
            orjson.dumps(event_data, default=repr),
            envelope_error="CloudEvent data has no Pub/Sub 'message' object",
        )
    message_id = str(msg.get("messageId") or msg.get("message_id") or "unknown")
    raw_attrs = msg.get("attributes") or {}
    attributes = (
        {str(k): str(v) for k, v in raw_attrs.items()} if isinstance(raw_attrs, Mapping) else {}
    )
    publish_time = msg.get("publishTime")
    encoded = msg.get("data") or ""
    if not isinstance(encoded, str):
        return ReceivedMessage(
            message_id, orjson.dumps(encoded, default=repr), attributes, publish_time,
            envelope_error="message data is not a base64 string",
        )  # fmt: skip
    try:
        data = decode_base64(encoded)
    except (binascii.Error, ValueError):
        return ReceivedMessage(
            message_id, encoded.encode("utf-8"), attributes, publish_time,
            envelope_error="data is not base64",
        )  # fmt: skip
    return ReceivedMessage(message_id, data, attributes, publish_time)


def decode_received(received: ReceivedMessage) -> KlineBatch:
    if received.envelope_error is not None:
        raise InvalidMessage(received.envelope_error)
    return decode_message(received.data, received.attributes)


def dead_letter_copy(
    data: bytes, attributes: Mapping[str, str], reason: str, message_id: str
) -> tuple[bytes, dict[str, str]]:
    """The original data and attributes, plus why and which message; truncated to fit Pub/Sub."""
    extra = {DL_REASON: _clip(reason), DL_ORIGINAL_ID: _clip(message_id)}
    if len(data) > DEAD_LETTER_MAX_DATA:
        extra[DL_TRUNCATED] = str(len(data))
        data = data[:DEAD_LETTER_MAX_DATA]
    kept = without_dead_letter_attributes(attributes)
    kept = dict(list(kept.items())[: _MAX_ATTRS - len(extra)])
    return data, {**kept, **extra}


def without_dead_letter_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """The attributes as published, without what a dead-lettering added."""
    return {k: v for k, v in attributes.items() if k not in DEAD_LETTER_ATTRIBUTES}


def _clip(value: str) -> str:
    raw = value.encode("utf-8")
    if len(raw) <= _MAX_ATTR_VALUE:
        return value
    return raw[: _MAX_ATTR_VALUE - 3].decode("utf-8", "ignore") + "..."
