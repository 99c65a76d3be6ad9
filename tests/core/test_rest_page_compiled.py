"""The compiled REST page parser (klinelake/core/_rest_page.c) against the reference path.

`parse_rest_page` first offers a page to the compiled parser, which reads the bytes itself (no
JSON decoder in front of it). So besides the page-level mutations of test_rest_page_fast.py,
pages are broken byte by byte here: whitespace, signs, exponents, escapes, leading zeros,
non-ASCII digits, truncation. Whatever the bytes, the compiled parser returns either None or
exactly the reference path's rows and lines, and `parse_rest_page` as a whole keeps the
reference's outcome (the same rows, or the same error).
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core import row as lake_row
from klinelake.core.contract import KlineBatch, decode_message, encode_batch
from klinelake.core.errors import InvalidData
from klinelake.core.halts import ranges_to_json
from klinelake.core.markets import Market
from klinelake.core.row import Kline, parse_rest_page, parse_rest_rows
from tests.core.test_rest_page_fast import (
    INTERVALS,
    first_open,
    mutate,
    mutation,
    outcome,
    regular_page,
)
from tests.recorded import DATA

pytestmark = pytest.mark.skipif(
    not lake_row.COMPILED_ROW_PATH, reason="the compiled row path is not built here"
)
SYMBOLS = ("BTCUSDT", "BTCUSD_PERP", "币安人生USDT", "1000SATSUSDT")


def compiled(body: bytes | str, symbol: str, interval: str, market: Market) -> Any:
    return lake_row._compiled_page(body, symbol, interval, market)


def reference(body: bytes, symbol: str, interval: str, market: Market) -> tuple[str, Any]:
    """What the pure Python path makes of the body: the JSON decode, then row by row."""
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "not json", None
    if not isinstance(rows, list):
        return "not a list", None
    return outcome(parse_rest_rows, rows, symbol, interval, market)


def check_against_reference(body: bytes, symbol: str, interval: str, market: Market) -> bool:
    """The compiled parser accepts only what the reference accepts, with its rows and lines;
    says whether it accepted."""
    fast = compiled(body, symbol, interval, market)
    if fast is None:
        return False
    assert reference(body, symbol, interval, market) == (
        "rows",
        (fast, [orjson.dumps(k.to_dict()) + b"\n" for k in fast]),
    )
    assert [k.to_line() for k in fast] == [orjson.dumps(k.to_dict()) + b"\n" for k in fast]
    return True


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    st.integers(1, 25),
    st.sampled_from(INTERVALS),
    st.sampled_from(SYMBOLS),
    st.sampled_from(list(Market)),
    st.lists(mutation, max_size=2),
)
def test_page_level_mutations(
    n: int, interval: str, symbol: str, market: Market, mutations: list[Any]
) -> None:
    rows = regular_page(n, interval, first_open(interval))
    for change in mutations:
        mutate(rows, change)
    body = orjson.dumps(rows)
    accepted = check_against_reference(body, symbol, interval, market)
    if not mutations and interval != "1M" and not (market != Market.SPOT and interval == "1s"):
        assert accepted, "a regular page must take the compiled path"


# Bytes that matter to a JSON reader or to the rules: structure, signs, exponents, escapes,
# whitespace, a NUL, non-ASCII digits (Arabic-Indic three, superscript two, fullwidth one).
ODD_BYTES = [
    b"0", b"9", b".", b'"', b",", b"[", b"]", b" ", b"\n", b"-", b"+", b"e", b"E", b"\\",
    b"\\u0031", b"\x00", "٣".encode(), "²".encode(), "１".encode(), b"00", b"1" * 20,
]  # fmt: skip
byte_edit = st.tuples(
    st.sampled_from(["insert", "replace", "delete", "truncate"]),
    st.integers(-(10**6), 10**6),  # negative: counted from the end
    st.integers(-1, 1),
    st.sampled_from(ODD_BYTES),
)
_STRUCTURE = frozenset(b'[],".')


def edit(body: bytes, change: tuple[str, int, int, bytes]) -> bytes:
    """One edit next to a structural byte (where a reader's rules bite: a value's first or
    last digit, a quote, a separator), or anywhere else now and then."""
    kind, pick, offset, data = change
    edges = [i for i, b in enumerate(body) if b in _STRUCTURE]
    if pick % 5 and edges:
        i = min(max(edges[pick % len(edges)] + offset, 0), len(body))
    else:
        i = pick % (len(body) + 1)
    if kind == "insert":
        return body[:i] + data + body[i:]
    if kind == "replace":
        return body[:i] + data + body[i + 1 :]
    if kind == "delete":
        return body[:i] + body[i + 1 :]
    return body[:i]


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(
    st.integers(1, 6),
    st.sampled_from(["1s", "1m", "3d", "1w"]),
    st.sampled_from(list(Market)),
    st.lists(byte_edit, min_size=1, max_size=3),
)
def test_byte_level_mutations(
    n: int, interval: str, market: Market, edits: list[tuple[str, int, int, bytes]]
) -> None:
    body = orjson.dumps(regular_page(n, interval, first_open(interval)))
    for change in edits:
        body = edit(body, change)
    check_against_reference(body, "BTCUSDT", interval, market)
    # and the whole function keeps the reference's outcome, errors included
    expected = reference(body, "BTCUSDT", interval, market)
    try:
        got: tuple[str, Any] = outcome(parse_rest_page, body, "BTCUSDT", interval, market)
    except InvalidData:  # pragma: no cover - outcome() catches these
        raise
    if expected[0] in ("not json", "not a list"):
        assert got[0] == "error"
    else:
        assert got == expected


@pytest.mark.parametrize("suffix", [b"\n", b" ", b"]", b",", b"0", b"\x00", b",[]"])
def test_nothing_may_follow_the_page(suffix: bytes) -> None:
    body = orjson.dumps(regular_page(2, "1m", first_open("1m")))
    assert compiled(body + suffix, "BTCUSDT", "1m", Market.SPOT) is None
    assert compiled(suffix + body, "BTCUSDT", "1m", Market.SPOT) is None
    check_against_reference(body + suffix, "BTCUSDT", "1m", Market.SPOT)


def test_the_recorded_page_takes_the_compiled_path() -> None:
    """Binance's real answer (recorded, pretty-printed there; Binance sends it compact)."""
    recorded = (DATA / "BTCUSDT-1m-2021-10-22.api_v3_klines.json").read_bytes()
    body = orjson.dumps(orjson.loads(recorded))
    assert check_against_reference(body, "BTCUSDT", "1m", Market.SPOT)
    # the indented recording itself is left to the reference path, with the same rows
    assert compiled(recorded, "BTCUSDT", "1m", Market.SPOT) is None
    assert parse_rest_page(recorded, "BTCUSDT", "1m") == parse_rest_page(body, "BTCUSDT", "1m")


@pytest.mark.parametrize("market", list(Market))
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_the_rules_bounds_and_keys(symbol: str, market: Market) -> None:
    """Every market's row keys (COIN-M's differ), non-ASCII symbols, the rules' edges."""
    page = regular_page(3, "1m", first_open("1m"))
    page[0][1] = "9" * 29 + "." + "9" * 9  # the widest decimal the rule allows
    page[1][8] = lake_row.MAX_TRADES
    assert check_against_reference(orjson.dumps(page), symbol, "1m", market)
    for column, value in ((1, "9" * 30 + ".5"), (2, "1." + "0" * 10), (8, lake_row.MAX_TRADES + 1)):
        wider = [list(r) for r in page]
        wider[2][column] = value
        assert compiled(orjson.dumps(wider), symbol, "1m", market) is None


def test_compiled_klines_are_ordinary_klines() -> None:
    body = orjson.dumps(regular_page(4, "1h", first_open("1h")))
    fast = compiled(body, "BTCUSDT", "1h", Market.SPOT)
    ref = parse_rest_rows(orjson.loads(body), "BTCUSDT", "1h")
    assert fast == ref and list(map(hash, fast)) == list(map(hash, ref))
    assert all(type(k) is Kline for k in fast) and repr(fast) == repr(ref)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast[0].open = "1.0"  # type: ignore[misc]
    # a changed copy does not keep the line of the values it was rendered from
    changed = dataclasses.replace(fast[0], close="1.00000000")
    assert changed.to_line() == orjson.dumps(changed.to_dict()) + b"\n" != fast[0].to_line()
    assert pickle.loads(pickle.dumps(fast)) == fast


def test_a_regular_page_still_parses_without_the_compiled_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the module is not built (no C compiler), the pure path gives the same Klines."""
    body = orjson.dumps(regular_page(50, "1m", first_open("1m")))
    with_module = parse_rest_page(body, "BTCUSDT", "1m")
    monkeypatch.setattr(lake_row, "_compiled", None)
    assert compiled(body, "BTCUSDT", "1m", Market.SPOT) is None
    without = parse_rest_page(body, "BTCUSDT", "1m")
    assert without == with_module
    assert [k.to_line() for k in without] == [k.to_line() for k in with_module]


@pytest.mark.parametrize("market", list(Market))
@pytest.mark.parametrize("with_empty", [False, True])
def test_a_message_of_compiled_klines_has_the_same_bytes(market: Market, with_empty: bool) -> None:
    """`encode_batch` writes the rows from their lake lines: the same bytes as dumping the rows'
    dicts, and the same rows back through the decoder."""
    body = orjson.dumps(regular_page(30, "1m", first_open("1m")))
    fast = compiled(body, "BTCUSDT", "1m", market)
    ref = parse_rest_rows(orjson.loads(body), "BTCUSDT", "1m", market)
    empty = ((fast[-1].open_time + 120_000, fast[-1].open_time + 180_000),) if with_empty else ()
    messages = [
        encode_batch(KlineBatch("BTCUSDT", "1m", tuple(rows), empty, market=market), "rest")
        for rows in (fast, ref)
    ]
    expected: dict[str, Any] = {"symbol": "BTCUSDT", "interval": "1m"}
    if market != Market.SPOT:
        expected["market"] = str(market)
    expected["klines"] = [r.to_dict() for r in ref]
    if with_empty:
        expected["empty"] = ranges_to_json(empty)
    assert messages[0] == messages[1]
    assert messages[0].data == orjson.dumps(expected)
    decoded = decode_message(messages[0].data, messages[0].attributes)
    assert decoded.rows == tuple(ref) and decoded.empty == empty
