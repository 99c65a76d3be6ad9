"""Messages that must never reach the lake (docs/contracts.md): a JSON object anywhere with a
repeated key, and any number outside its documented bounds. Each is poison (InvalidMessage)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core.contract import KlineBatch, decode_message, encode_batch
from klinelake.core.errors import InvalidMessage
from klinelake.core.row import FIELDS, MAX_TRADES, Kline, parse_csv
from tests.recorded import recorded_csv

ROWS = parse_csv(recorded_csv("BTCUSDT-1h-2022-01.csv"), "BTCUSDT", "1h")[:3]
INT_FIELDS = ("open_time", "close_time", "trades")
DECIMAL_FIELDS = tuple(f for f in FIELDS if f not in (*INT_FIELDS, "symbol", "interval"))
_SEEDED = settings(derandomize=True, max_examples=400, deadline=None)

Pairs = list[tuple[str, Any]]


def message_pairs() -> Pairs:
    """The message data as ordered (key, value) pairs, rows as pairs too, so that a test can
    write any JSON text, repeated keys included."""
    return [
        ("symbol", "BTCUSDT"),
        ("interval", "1h"),
        ("klines", [list(r.to_dict().items()) for r in ROWS]),
    ]


def dump(value: Any, sep: str = "") -> str:
    """JSON text of pairs (objects), lists and scalars; raw tokens pass as `Raw`."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        inner = ("," + sep).join(f"{json.dumps(k)}:{sep}{dump(v, sep)}" for k, v in value)
        return "{" + sep + inner + sep + "}"
    if isinstance(value, list):
        return "[" + ("," + sep).join(dump(v, sep) for v in value) + "]"
    return orjson.dumps(value).decode()


class Raw:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


def test_the_builder_writes_a_valid_message() -> None:
    expected = encode_batch(KlineBatch("BTCUSDT", "1h", tuple(ROWS)), "rest").data
    assert dump(message_pairs()).encode() == expected
    assert decode_message(dump(message_pairs(), " \n").encode()).rows == tuple(ROWS)


@_SEEDED
@given(
    where=st.integers(-1, len(ROWS) - 1),  # -1: the top level, else that row
    pick=st.integers(0, 20),
    same_value=st.booleans(),
    spaced=st.booleans(),
)
def test_a_repeated_key_anywhere_is_poison(
    where: int, pick: int, same_value: bool, spaced: bool
) -> None:
    pairs = message_pairs()
    target: Pairs = pairs if where < 0 else pairs[2][1][where]
    key, value = target[pick % len(target)]
    # the repeated key carries the same value, or another stream's / row's value
    other = (
        value
        if same_value
        else {"symbol": "ETHUSDT", "open_time": ROWS[0].open_time}.get(key, value)
    )
    target.insert(pick % (len(target) + 1), (key, other))
    data = dump(pairs, " " if spaced else "").encode()
    with pytest.raises(InvalidMessage, match="repeats the key"):
        decode_message(data)


def test_the_reported_example_is_poison() -> None:
    """{"symbol":"ETHUSDT","symbol":"BTCUSDT",...} was merged into BTCUSDT (issue 12.3)."""
    data = dump(message_pairs()).replace('{"symbol":', '{"symbol":"ETHUSDT","symbol":', 1)
    with pytest.raises(InvalidMessage, match="repeats the key 'symbol'"):
        decode_message(data.encode())


BAD_INT_TOKENS = [
    "1e3",
    "1000.0",
    "-0.0",
    "true",
    "false",
    "null",
    '"5"',
    "[]",
    "{}",
    "NaN",
    "Infinity",
    "-Infinity",
    "1E400",
    "-1",
    str(2**53),
    str(2**63 - 1),
    str(2**63),
    str(2**64 - 1),
    str(2**64),
    str(10**30),
    str(-(2**63) - 1),
    "0x10",
    "+1",
    "01",
]
BAD_INT = st.one_of(
    st.sampled_from(BAD_INT_TOKENS),
    st.integers(max_value=-1).map(str),
    st.integers(min_value=MAX_TRADES + 1).map(str),
)
BAD_DECIMAL_TOKENS = [
    '"1e400"',
    '"1E5"',
    '"+1"',
    '"-1"',
    '"١٢٣"',
    '"²"',
    '"1²"',
    '"１"',
    '"0.0000000001"',
    '"' + "1" * 30 + '"',
    '" 1"',
    '"1 "',
    '"0x10"',
    '""',
    '"."',
    '"1."',
    '".5"',
    '"1_000"',
    '"NaN"',
    '"Infinity"',
    "1.5",
    "1",
    "true",
    "null",
    '"1.5\\n"',
    '"1,5"',
]
BAD_DECIMAL = st.one_of(
    st.sampled_from(BAD_DECIMAL_TOKENS),
    st.from_regex(r"[0-9]{30,40}(\.[0-9]{1,9})?", fullmatch=True).map(json.dumps),
    st.from_regex(r"[0-9]{1,29}\.[0-9]{10,20}", fullmatch=True).map(json.dumps),
    st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=5)
    .filter(lambda s: not s.isascii())
    .map(json.dumps),
)


@settings(derandomize=True, max_examples=800, deadline=None)
@given(
    row=st.integers(0, len(ROWS) - 1),
    field_token=st.one_of(
        st.tuples(st.sampled_from(INT_FIELDS), BAD_INT),
        st.tuples(st.sampled_from(DECIMAL_FIELDS), BAD_DECIMAL),
    ),
)
def test_numbers_outside_their_bounds_are_poison(row: int, field_token: tuple[str, str]) -> None:
    field, token = field_token
    pairs = message_pairs()
    fields: Pairs = pairs[2][1][row]
    fields[[k for k, _ in fields].index(field)] = (field, Raw(token))
    with pytest.raises(InvalidMessage):
        decode_message(dump(pairs).encode())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trades", MAX_TRADES),
        ("trades", 0),
        ("volume", "9" * 29 + "." + "9" * 9),
        ("volume", "0.000000001"),
        ("open", "0"),
    ],
)
def test_values_at_the_bounds_are_accepted(field: str, value: object) -> None:
    row = Kline(**{**ROWS[0].to_dict(), field: value})
    assert decode_message(encode_batch(KlineBatch("BTCUSDT", "1h", (row,)), "ws").data).rows == (
        row,
    )


def test_minus_zero_is_the_integer_zero() -> None:
    """JSON `-0` is an integer: 0 trades is a real quirk (a halted candle) and is written back
    canonically as `0`; 0 as a time is out of range."""
    pairs = message_pairs()
    row: Pairs = pairs[2][1][0]
    row[[k for k, _ in row].index("trades")] = ("trades", Raw("-0"))
    (decoded, *_) = decode_message(dump(pairs).encode()).rows
    assert decoded.trades == 0 and b'"trades":0,' in decoded.to_line()
    row[[k for k, _ in row].index("open_time")] = ("open_time", Raw("-0"))
    with pytest.raises(InvalidMessage, match="open_time"):
        decode_message(dump(pairs).encode())
