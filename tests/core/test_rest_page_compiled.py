"""The compiled REST page parser (klinelake/core/_rest_page.c) against the reference path.

`parse_rest_page` first offers a page to the compiled parser, which reads the bytes itself (no
JSON decoder in front of it). So besides the page-level mutations of test_rest_page_fast.py,
pages are broken byte by byte here: whitespace, signs, exponents, escapes, leading zeros,
non-ASCII digits, truncation. Whatever the bytes, the compiled parser returns either None or
exactly the reference path's rows and lines, and `parse_rest_page` as a whole keeps the
reference's outcome (the same rows, or the same error).
"""

from __future__ import annotations

import copy
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
from klinelake.core.row import Kline, StreamRows, parse_rest_page, parse_rest_rows
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
    kind, (rows, lines) = reference(body, symbol, interval, market)
    assert kind == "rows"
    assert isinstance(fast, StreamRows) and fast.stream == (symbol, interval, market)
    assert list(fast.lines) == lines and list(fast.open_times) == [k.open_time for k in rows]
    assert list(fast) == rows
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


def test_a_compiled_page_is_a_sequence_of_ordinary_klines() -> None:
    """StreamRows hold no Klines, but every Sequence operation gives the reference's."""
    body = orjson.dumps(regular_page(4, "1h", first_open("1h")))
    fast = compiled(body, "BTCUSDT", "1h", Market.SPOT)
    ref = parse_rest_rows(orjson.loads(body), "BTCUSDT", "1h")
    assert fast == ref and fast == tuple(ref) and ref == fast and fast != ref[:3]
    assert fast != ref[::-1] and fast != "not rows" and hash(fast) == hash(tuple(ref))
    assert list(map(hash, fast)) == list(map(hash, ref))
    assert all(type(k) is Kline for k in fast) and repr(list(fast)) == repr(ref)
    assert [fast[i] for i in range(-4, 4)] == ref + ref and len(fast) == 4
    assert fast[1:3] == ref[1:3] and isinstance(fast[1:3], StreamRows)
    assert fast.reversed() == ref[::-1] and list(reversed(fast)) == ref[::-1]
    assert fast.index(ref[2]) == 2 and ref[1] in fast and fast.count(ref[0]) == 1
    with pytest.raises(IndexError):
        fast[4]
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast[0].open = "1.0"  # type: ignore[misc]
    # a changed copy does not keep the line of the values it was rendered from
    changed = dataclasses.replace(fast[0], close="1.00000000")
    assert changed.to_line() == orjson.dumps(changed.to_dict()) + b"\n" != fast[0].to_line()
    assert pickle.loads(pickle.dumps(fast)) == fast and copy.deepcopy(fast) == fast
    assert StreamRows.of("BTCUSDT", "1h", Market.SPOT, fast) is fast
    assert StreamRows.of("BTCUSDT", "1h", Market.SPOT, ref) == fast
    with pytest.raises(ValueError, match="differ in length"):
        StreamRows("BTCUSDT", "1h", Market.SPOT, fast.open_times[:3], fast.lines)


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


# --- the review of the compiled path (h-review): inputs around the page, the module's setup ----


class _BytesSubclass(bytes):
    pass


class _StrSubclass(str):
    __slots__ = ()


def _bodies(body: bytes) -> dict[str, object]:
    """The same page as every `bytes | str` a caller might hand over; orjson (the reference's
    reader) refuses a bytes or str subclass and a str that is not UTF-8."""
    return {
        "bytes": body,
        "str": body.decode(),
        "bytes subclass": _BytesSubclass(body),
        "str subclass": _StrSubclass(body.decode()),
        "str with a lone surrogate": body.decode().replace('"0"', '"\ud800"', 1),
    }


@pytest.mark.parametrize("kind", list(_bodies(b"[]")))
def test_every_body_type_keeps_the_reference_outcome(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the body's type, `parse_rest_page` answers as it does without the module: the
    same rows, or the same error; the compiled parser never raises on it nor accepts more."""
    body = _bodies(orjson.dumps(regular_page(3, "1m", first_open("1m"))))[kind]
    with_module = outcome(parse_rest_page, body, "BTCUSDT", "1m", Market.SPOT)
    monkeypatch.setattr(lake_row, "_compiled", None)
    without = outcome(parse_rest_page, body, "BTCUSDT", "1m", Market.SPOT)
    assert with_module == without


_BOUNDS = (lake_row._MIN_MS, lake_row._MAX_MS, lake_row.MAX_TRADES, 29, 9)


@pytest.mark.parametrize(
    "bounds",
    [(-1, *_BOUNDS[1:]), (_BOUNDS[1], _BOUNDS[1], *_BOUNDS[2:]), (0, 2**51, *_BOUNDS[2:]),
     (*_BOUNDS[:2], -1, 29, 9), (*_BOUNDS[:3], 0, 9), (*_BOUNDS[:3], 29, 0)],
)  # fmt: skip
def test_a_refused_configure_changes_nothing(bounds: tuple[int, ...]) -> None:
    """configure() refuses bounds that would let the grid arithmetic overflow or make no
    sense, and a refused configure leaves the module's rules as they were."""
    body = orjson.dumps(regular_page(3, "1m", first_open("1m")))
    with pytest.raises(ValueError, match="bounds"):
        lake_row._compiled.configure(*bounds)
    assert check_against_reference(body, "BTCUSDT", "1m", Market.SPOT)


@pytest.mark.parametrize(
    ("step", "anchor"), [(2**63 - 1, 0), (2**62, 0), (60_000, -(2**63)), (60_000, 2**63 - 1)]
)
def test_grid_arguments_beyond_the_bounds_are_refused(step: int, anchor: int) -> None:
    """A step or anchor past the time bounds would overflow the grid arithmetic (undefined
    behaviour in C): refused before any arithmetic."""
    body = orjson.dumps(regular_page(2, "1m", first_open("1m")))
    fragments = lake_row._line_fragments("BTCUSDT", "1m", Market.SPOT)
    with pytest.raises(ValueError, match="step"):
        lake_row._compiled.page_lines(body, fragments, step, anchor, True)


def _round_trip(batch: KlineBatch) -> KlineBatch:
    message = encode_batch(batch, "rest")
    return decode_message(message.data, message.attributes)


def _line_of(k: Kline) -> bytes:
    return orjson.dumps(k.to_dict()) + b"\n"


@pytest.mark.parametrize("market", list(Market))
def test_every_way_the_tree_builds_a_kline_keeps_its_line_true(market: Market) -> None:
    """A Kline's `to_line()` is always the dump of its values, however it was made: the
    compiled parser, the bulk paths (`_trusted_klines` by `__class__` assignment), the row by
    row path, a lake line, a message, a copy, a pickle, `dataclasses.replace`, the simulator's
    unvalidated rows (`object.__new__`); and `lake_lines` of any mix of them says the same."""
    from devtools.binance_sim.market import synthetic_kline

    body = orjson.dumps(regular_page(5, "1m", first_open("1m")))
    fast = compiled(body, "BTCUSDT", "1m", market)
    bulk = lake_row.regular_rest_page(body, orjson.loads(body), "BTCUSDT", "1m", market)
    assert fast is not None and bulk is not None
    made: dict[str, list[Kline]] = {
        "compiled": list(fast),
        "bulk page": bulk,
        "row by row": parse_rest_rows(orjson.loads(body), "BTCUSDT", "1m", market),
        "lake line": [lake_row.parse_lake_line(k.to_line(), market=market) for k in fast],
        "message": list(_round_trip(KlineBatch("BTCUSDT", "1m", tuple(fast), market=market)).rows),
        "copy": [copy.copy(k) for k in fast],
        "deepcopy": copy.deepcopy(list(fast)),
        "pickle": pickle.loads(pickle.dumps(list(fast))),
        "replace": [dataclasses.replace(k, close="7.00000000") for k in fast],
        "replace market": [dataclasses.replace(k, market=Market.SPOT) for k in fast],
    }
    if market == Market.SPOT:
        made["simulator"] = [synthetic_kline(7, "BTCUSDT", "1m", k.open_time) for k in fast]
    assert list(fast.lines) == [_line_of(k) for k in fast]
    for how, rows in made.items():
        lines = [_line_of(k) for k in rows]
        assert [k.to_line() for k in rows] == lines, how
        assert lake_row.lake_lines(rows) == lines, how
        assert lake_row.lake_lines([*fast[:2], *rows]) == [*map(_line_of, fast[:2]), *lines], how


def _old_encoding(batch: KlineBatch) -> bytes:
    """`encode_batch`'s data before the lines were spliced in as a Fragment (275b062^)."""
    body: dict[str, Any] = {"symbol": batch.symbol, "interval": batch.interval}
    if batch.market != Market.SPOT:
        body["market"] = str(batch.market)
    body["klines"] = [row.to_dict() for row in batch.rows]
    if batch.empty:
        body["empty"] = ranges_to_json(batch.empty)
    return orjson.dumps(body)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.integers(0, 40),
    st.sampled_from(["1s", "1m", "1h", "3d", "1w"]),
    st.sampled_from(SYMBOLS),
    st.sampled_from(list(Market)),
    st.tuples(
        st.booleans(),
        st.sampled_from(["compiled", "compiled as Klines", "row by row", "decoded", "mixed"]),
    ),
)
def test_encode_batch_writes_the_old_bytes_for_rows_from_every_source(
    n: int, interval: str, symbol: str, market: Market, how: tuple[bool, str]
) -> None:
    with_empty, source = how
    if market != Market.SPOT and interval == "1s":
        interval = "1m"
    first = first_open(interval)
    step = lake_row.NOMINAL_MS[interval]
    body = orjson.dumps(regular_page(max(n, 1), interval, first))[: None if n else 0] or b"[]"
    ref = parse_rest_rows(orjson.loads(body), symbol, interval, market)
    fast = (
        compiled(body, symbol, interval, market)
        if n
        else StreamRows(*_no_rows(symbol, interval, market))
    )
    assert fast is not None
    empty = ((first + n * step, first + (n + 2) * step),) if with_empty or not n else ()
    rows = {
        "compiled as Klines": tuple(fast), "row by row": tuple(ref),
        "mixed": (*fast[: n // 2], *ref[n // 2 :]),
    }  # fmt: skip
    batch = KlineBatch(symbol, interval, rows.get(source, fast), empty, market=market)
    if source == "decoded":
        batch = _round_trip(batch)
        assert batch.rows == tuple(ref)
        # an ASCII stream's regular message carries its lines (regular_message_rows)
        carried = n > 0 and all(r._line is not None for r in batch.rows)
        assert carried == (n > 0 and symbol.isascii())
    data = encode_batch(batch, "rest").data
    assert data == _old_encoding(batch)
    assert decode_message(data, encode_batch(batch, "rest").attributes).rows == tuple(ref)


def _no_rows(symbol: str, interval: str, market: Market) -> tuple[Any, ...]:
    return symbol, interval, market, [], []


def test_a_replaced_batch_does_not_keep_the_old_rows_lines() -> None:
    """The lines live in the rows (`Kline._line`), not beside them in the batch (where a
    `KlineBatch.lake_lines` field once kept the old rows' lines through `replace`)."""
    body = orjson.dumps(regular_page(4, "1m", first_open("1m")))
    message = encode_batch(KlineBatch("BTCUSDT", "1m", tuple(compiled(body, *_STREAM))), "rest")
    decoded = decode_message(message.data, message.attributes)
    assert decoded.rows[0]._line is not None
    later = regular_page(8, "1m", first_open("1m"))[4:]
    other = tuple(parse_rest_rows(later, *_STREAM))
    replaced = dataclasses.replace(decoded, rows=other)
    assert encode_batch(replaced, "rest").data == _old_encoding(replaced)


_STREAM = ("BTCUSDT", "1m", Market.SPOT)


def _edge_pages() -> dict[str, tuple[bytes, str]]:
    """Named pages at the rules' edges (the review's list): each with its interval."""
    m1 = lake_row.NOMINAL_MS["1m"]
    page = regular_page(3, "1m", first_open("1m"))
    near_end = lake_row._MAX_MS - 2 * m1
    w_step, w_anchor = lake_row._GRID["1w"]
    last_week = w_anchor + ((lake_row._MAX_MS - w_anchor) // w_step - 1) * w_step

    def with_value(column: int, value: object) -> bytes:
        rows = [list(r) for r in page]
        rows[1][column] = value
        return orjson.dumps(rows)

    body = orjson.dumps(page)
    trades = b",%d," % page[1][8]
    micros = [list(r) for r in page]
    micros[0][0], micros[0][6] = micros[0][0] * 1000, micros[0][6] * 1000 + 999
    return {
        "empty page": (b"[]", "1m"),
        "one row": (orjson.dumps(page[:1]), "1m"),
        "a row repeated": (orjson.dumps([page[0], page[0]]), "1m"),
        "last close at 2100 - 1 ms": (orjson.dumps(regular_page(2, "1m", near_end)), "1m"),
        "a close at 2100": (orjson.dumps(regular_page(3, "1m", near_end)), "1m"),
        "the last week before 2100": (orjson.dumps(regular_page(1, "1w", last_week)), "1w"),
        "trades 2^53-1": (with_value(8, 2**53 - 1), "1m"),
        "trades 2^53": (with_value(8, 2**53), "1m"),
        "trades of 18 digits": (with_value(8, 10**17), "1m"),
        "trades of 19 digits": (with_value(8, 10**18), "1m"),
        "trades of 20 digits": (with_value(8, 10**19), "1m"),
        "trades -0": (body.replace(trades, b",-0,", 1), "1m"),
        "trades 1E1": (body.replace(trades, b",1E1,", 1), "1m"),
        "trades 7.0": (body.replace(trades, b",7.0,", 1), "1m"),
        "open_time in µs": (orjson.dumps(micros), "1m"),
        "a decimal without a dot": (with_value(1, "100"), "1m"),
        "3d off the epoch grid": (orjson.dumps(regular_page(2, "3d", first_open("1d"))), "3d"),
        "1w on a Thursday": (orjson.dumps(regular_page(2, "1w", first_open("1d"))), "1w"),
        "1M": (orjson.dumps(regular_page(2, "1M", first_open("1M"))), "1M"),
        "1s": (orjson.dumps(regular_page(2, "1s", first_open("1s"))), "1s"),
    }


@pytest.mark.parametrize("market", list(Market))
@pytest.mark.parametrize("name", list(_edge_pages()))
def test_pages_at_the_rules_edges_keep_the_reference_outcome(
    name: str, market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, interval = _edge_pages()[name]
    for symbol in ("BTCUSDT", "币安人生USDT"):
        check_against_reference(body, symbol, interval, market)
        with_module = outcome(parse_rest_page, body, symbol, interval, market)
        with monkeypatch.context() as patched:
            patched.setattr(lake_row, "_compiled", None)
            assert outcome(parse_rest_page, body, symbol, interval, market) == with_module
