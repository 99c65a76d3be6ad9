"""The bulk REST page path accepts exactly what the row-by-row path accepts, with the same rows.

`parse_rest_page` validates a regular page in bulk (`regular_rest_page`) and falls back to the
reference path (`parse_rest_rows`, one `Kline` each) for anything else. Pages are generated
valid, then broken in every way the rules care about; whatever the page, both paths must agree:
the same Klines (and bytes), or the same error naming the same row and field.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core.contract import message_schema
from klinelake.core.errors import InvalidData
from klinelake.core.intervals import NOMINAL_MS, align_down
from klinelake.core.row import (
    MAX_TRADES,
    Kline,
    parse_rest_page,
    parse_rest_rows,
    regular_rest_page,
)

T0 = 1_640_995_200_000  # 2022-01-01, aligned to every fixed interval but 1w
INTERVALS = ("1s", "1m", "1h", "3d", "1w", "1M")
DECIMAL_FIELDS = (1, 2, 3, 4, 5, 7, 9, 10)
# The documented rule, as the packaged JSON Schema states it ("^...$", for re.fullmatch without)
DECIMAL_PATTERN = (
    message_schema()["$defs"]["decimal"]["pattern"].removeprefix("^").removesuffix("$")
)
# Texts that look like decimals and are not (or are, at the edges of the rule).
odd_decimal = st.one_of(
    st.text(alphabet="0123456789.-+e x٣²", max_size=40),
    st.sampled_from(["", ".", ".5", "5.", "1..2", "1.2.3", "0" * 29, "0" * 30, "1." + "0" * 9,
                     "1." + "0" * 10, "9" * 29 + ".5", "9" * 30 + ".5", "１.0", "1.0\n", " 1.0",
                     "1,0", "0"]),
    st.floats(allow_nan=False), st.integers(-(2**63), 2**63 - 1), st.none(), st.booleans(),
)  # fmt: skip


def regular_page(n: int, interval: str, first: int) -> list[list[Any]]:
    step = NOMINAL_MS[interval]
    return [
        [first + i * step, f"{100 + i}.10000000", f"{101 + i}.00000000", "99.00000000",
         f"{100 + i}.50000000", "12.34500000", first + (i + 1) * step - 1, "1234.56789000",
         i * 7, "6.10000000", "617.00000000", "0"]
        for i in range(n)
    ]  # fmt: skip


def first_open(interval: str) -> int:
    return align_down(T0, interval)  # 1w klines open on Mondays


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        rows = fn(*args)
    except InvalidData as exc:
        return "error", (type(exc).__name__, str(exc))
    return "rows", (rows, [r.to_line() for r in rows])


mutation = st.tuples(
    st.sampled_from(
        ["decimal", "open_time", "close_time", "trades", "ignore", "columns", "swap", "drop",
         "dup", "micros", "row_type", "shift"]
    ),
    st.integers(0, 99),
    st.integers(0, 11),
    odd_decimal,
    st.integers(-(2**63), 2**63 - 1),  # orjson's range
)  # fmt: skip


def mutate(rows: list[list[Any]], change: tuple[str, int, int, object, int]) -> None:
    kind, pick, variant, text, number = change
    if not rows:
        return
    i = pick % len(rows)
    row = rows[i]
    if not isinstance(row, list) or len(row) != 12:
        return  # already broken by an earlier mutation
    if kind == "decimal":
        row[DECIMAL_FIELDS[variant % len(DECIMAL_FIELDS)]] = text
    elif kind == "open_time":
        row[0] += (1, -1, number)[variant % 3]
    elif kind == "close_time":
        row[6] += (-1, 1, -row[6] + row[0] - 1, -row[6] + row[0])[variant % 4]
    elif kind == "trades":
        row[8] = (number, -1, str(row[8]), True, 1.5, 2**64 - 1)[variant % 6]
    elif kind == "ignore":
        row[11] = text
    elif kind == "columns":
        rows[i] = row[:-1] if variant % 2 else [*row, "0"]
    elif kind == "swap" and len(rows) > 1:
        j = (i + 1) % len(rows)
        rows[i], rows[j] = rows[j], rows[i]
    elif kind == "drop" and len(rows) > 2:
        del rows[1 + pick % (len(rows) - 2)]  # a gap: a halt inside the page
    elif kind == "dup":
        rows.insert(i, list(row))
    elif kind == "micros" and row[0] < 10**14:
        row[0], row[6] = row[0] * 1000, row[6] * 1000 + 999
    elif kind == "shift":  # the whole page: misaligned, before 2009, after 2100
        delta = (1, 1_000, -14 * 365 * 86_400_000, 79 * 365 * 86_400_000)[variant % 4]
        for r in rows:
            if isinstance(r, list) and len(r) == 12:
                r[0] += delta
                r[6] += delta
    elif kind == "row_type":
        rows[i] = {"open": row[1]} if variant % 2 else None  # type: ignore[call-overload]


@settings(max_examples=600, deadline=None, derandomize=True)
@given(
    st.integers(1, 25),
    st.sampled_from(INTERVALS),
    st.lists(mutation, max_size=2),
    st.integers(0, 9).map(lambda k: k == 0),  # now and then an indented (not compact) body
)
def test_bulk_and_row_by_row_agree_on_any_page(
    n: int, interval: str, mutations: list[tuple[str, int, int, object, int]], indent: bool
) -> None:
    first = first_open(interval) if interval != "1M" else T0
    rows = regular_page(n, interval, first)
    if interval == "1M":
        rows = [[r[0], *r[1:6], r[0] + 28 * 86_400_000, *r[7:]] for r in rows[:1]]
    for change in mutations:
        mutate(rows, change)
    body = orjson.dumps(rows, option=orjson.OPT_INDENT_2 if indent else 0)
    expected = outcome(parse_rest_rows, orjson.loads(body), "BTCUSDT", interval)
    assert outcome(parse_rest_page, body, "BTCUSDT", interval) == expected
    assert outcome(parse_rest_page, body.decode(), "BTCUSDT", interval) == expected
    fast = regular_rest_page(body, orjson.loads(body), "BTCUSDT", interval)
    if fast is not None:  # the bulk path only ever accepts what the reference path accepts
        assert expected == ("rows", (fast, [r.to_line() for r in fast]))


@pytest.mark.parametrize("interval", [iv for iv in INTERVALS if iv != "1M"])
def test_a_regular_page_takes_the_bulk_path(interval: str) -> None:
    body = orjson.dumps(regular_page(1000, interval, first_open(interval)))
    fast = regular_rest_page(body, orjson.loads(body), "BTCUSDT", interval)
    assert fast is not None and len(fast) == 1000
    reference = parse_rest_rows(orjson.loads(body), "BTCUSDT", interval)
    assert fast == reference and list(map(hash, fast)) == list(map(hash, reference))
    assert all(type(k) is Kline for k in fast)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast[0].open = "1.0"  # type: ignore[misc]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(odd_decimal, st.sampled_from(DECIMAL_FIELDS))
def test_bulk_decimal_rule_is_the_documented_pattern(value: object, field: int) -> None:
    """The bulk path accepts a value only if it matches the rule, and accepts every value that
    does, provided it has a fractional part (as Binance sends them: "0" is valid too, and left
    to the row-by-row path)."""
    rows = regular_page(1, "1m", T0)
    rows[0][field] = value
    body = orjson.dumps(rows)
    fast = regular_rest_page(body, orjson.loads(body), "BTCUSDT", "1m")
    valid = isinstance(value, str) and re.fullmatch(DECIMAL_PATTERN, value) is not None
    assert (fast is not None) == (valid and "." in value)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("interval", "first", "trades", "valid"),
    [
        ("1m", T0, MAX_TRADES, True),
        ("1m", T0, MAX_TRADES + 1, False),
        ("1m", T0, 2**64 - 1, False),
        ("1w", align_down(4_102_444_800_000, "1w") - 7 * 86_400_000, 1, False),  # closes in 2100
        ("1d", 4_102_444_800_000 - 2 * 86_400_000, 1, True),  # the last day before 2100
        ("1d", 1_230_768_000_000 - 86_400_000, 1, False),  # opens in 2008
    ],
)
def test_the_bounds_are_the_row_rules(interval: str, first: int, trades: int, valid: bool) -> None:
    rows = regular_page(2, interval, first)
    rows[-1][8] = trades
    body = orjson.dumps(rows)
    fast = regular_rest_page(body, orjson.loads(body), "BTCUSDT", interval)
    reference = outcome(parse_rest_rows, orjson.loads(body), "BTCUSDT", interval)
    assert (reference[0] == "rows") == valid
    assert (fast is not None) == valid
