"""The bulk path for a message's rows accepts exactly what the row-by-row path accepts.

`decode_message` validates a regular `klines` array in bulk (`row.regular_message_rows`) and
falls back to `kline_from_dict` row by row for anything else. Messages are generated valid,
then broken in every way the rules care about (every poison class of test_poison_property.py
among them); whatever the message, decoding with and without the bulk path must agree: the same
rows, or the same error text.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core.contract import KlineBatch, decode_message, sort_unique
from klinelake.core.errors import InvalidData
from klinelake.core.intervals import NOMINAL_MS, align_down
from klinelake.core.row import FIELDS, Kline, regular_message_rows

from .test_poison_property import BAD_DECIMAL, BAD_INT, DECIMAL_FIELDS, INT_FIELDS, Raw, dump

T0 = 1_640_995_200_000  # 2022-01-01
INTERVALS = ("1s", "1m", "1h", "8h", "3d", "1w", "1M")
SYMBOLS = ("BTCUSDT", "1000SATSUSDT", "ETH-BTC", "A1.2B")
_SEEDED = settings(derandomize=True, max_examples=600, deadline=None)

Pairs = list[tuple[str, Any]]


def regular_rows(n: int, symbol: str, interval: str) -> list[Pairs]:
    first = align_down(T0, interval)
    step = NOMINAL_MS[interval] if interval != "1M" else 0
    rows = []
    for i in range(n):
        ot = first + i * step
        values: dict[str, Any] = {
            "open_time": ot, "close_time": ot + (step or 60_000) - 1, "symbol": symbol,
            "interval": interval, "open": f"{100 + i}.10000000", "high": f"{101 + i}.0",
            "low": "99.00000000", "close": f"{100 + i}.5", "volume": "12.34500000",
            "quote_volume": "1234.56789000", "trades": i * 7,
            "taker_buy_base_volume": "6.10000000", "taker_buy_quote_volume": "617.00000000",
        }  # fmt: skip
        rows.append([(f, values[f]) for f in FIELDS])
    return rows


def decode(data: bytes, bulk: bool) -> tuple[Kline, ...] | str:
    """The rows, or the error text, of decoding with or without the bulk path."""
    try:
        if bulk:
            batch = decode_message(data)
            for r in batch.rows:  # a line the bulk path cut is the one to_line() would write
                assert r._line in (None, orjson.dumps(r.to_dict()) + b"\n")
            return batch.rows
        with mock.patch("klinelake.core.contract.regular_message_rows", return_value=None):
            return decode_message(data).rows
    except InvalidData as exc:
        return f"{type(exc).__name__}: {exc}"


# One way to break (or merely vary) a row: (kind, field, token).
mutation = st.one_of(
    st.tuples(st.just("value"), st.sampled_from(INT_FIELDS), BAD_INT),
    st.tuples(st.just("value"), st.sampled_from(DECIMAL_FIELDS), BAD_DECIMAL),
    st.tuples(
        st.just("value"),
        st.sampled_from(FIELDS),
        st.sampled_from(
            [
                '"5"',
                '"0"',
                "5",
                '"ETHUSDT"',
                '"4h"',
                '"1h"',
                "null",
                "1.5",
                "1640995200000",
                "1640995259999",
                "1640998799999",
                "-0",
                "0",
                '"1.000000001"',
                '"99999999999999999999999999999.5"',
                '"1.2"',
            ]
        ),
    ),
    # another stream's row, spelled with the same letters (the digit-free shape cannot tell)
    st.tuples(st.just("value"), st.just("interval"), st.sampled_from(['"4h"', '"1h"', '"8h"'])),
    st.tuples(
        st.just("value"),
        st.just("symbol"),
        st.sampled_from(['"2000SATSUSDT"', '"1000SATSUSDT"', '"BTCUSDT"', '"A1.3B"']),
    ),
    st.tuples(st.just("shift"), st.sampled_from(("open_time", "close_time")), st.integers(-2, 2)),
    st.tuples(st.just("drop"), st.sampled_from(FIELDS), st.just("")),
    st.tuples(st.just("extra"), st.sampled_from(("x", "open_time", "ignore")), st.just("1")),
    st.tuples(st.just("swap"), st.sampled_from(FIELDS), st.just("")),
    st.tuples(st.just("not_object"), st.just(""), st.sampled_from(("[]", "1", '"row"', "null"))),
)


def mutate(rows: list[Any], at: int, kind: str, field: str, token: str) -> None:
    row = rows[at]
    if isinstance(row, Raw):
        return
    keys = [k for k, _ in row]
    if kind in ("value", "shift", "drop", "swap") and field not in keys:
        return  # dropped by an earlier mutation
    if kind == "value":
        row[keys.index(field)] = (field, Raw(token))
    elif kind == "shift":
        i = keys.index(field)
        row[i] = (field, row[i][1] + int(token) * 1000 if isinstance(row[i][1], int) else token)
    elif kind == "drop":
        del row[keys.index(field)]
    elif kind == "extra":
        row.append((field, Raw(token)))
    elif kind == "swap":  # move a key to the end: the same object, another key order
        row.append(row.pop(keys.index(field)))
    else:
        rows[at] = Raw(token)


@_SEEDED
@given(
    n=st.integers(1, 12),
    symbol=st.sampled_from(SYMBOLS),
    interval=st.sampled_from(INTERVALS),
    mutations=st.lists(st.tuples(st.integers(0, 11), mutation), max_size=3),
    spaced=st.booleans(),
)
def test_bulk_and_row_by_row_agree(
    n: int, symbol: str, interval: str, mutations: list[Any], spaced: bool
) -> None:
    rows: list[Any] = regular_rows(n, symbol, interval)
    for at, (kind, field, token) in mutations:
        mutate(rows, at % n, kind, field, token)
    data = dump(
        [("symbol", symbol), ("interval", interval), ("klines", rows)], " " if spaced else ""
    )
    data_bytes = data.encode()
    assert decode(data_bytes, bulk=True) == decode(data_bytes, bulk=False)


@pytest.mark.parametrize("interval", ["1s", "1m", "1h", "3d", "1w"])
@pytest.mark.parametrize("symbol", ["BTCUSDT", "1000SATSUSDT"])
def test_a_publishers_message_takes_the_bulk_path(symbol: str, interval: str) -> None:
    """The bulk path is not dead code: what `encode_batch` writes from REST rows is regular."""
    rows = [Kline(**dict(r)) for r in regular_rows(500, symbol, interval)]
    klines = [r.to_dict() for r in rows]
    regular = regular_message_rows(klines, symbol, interval)
    assert regular == rows and [k._line for k in regular] == [r.to_line() for r in rows]
    assert KlineBatch(symbol, interval, tuple(rows)).rows == tuple(rows)


def test_irregular_arrays_take_the_row_by_row_path() -> None:
    rows = [Kline(**dict(r)) for r in regular_rows(3, "BTCUSDT", "1h")]
    klines = [r.to_dict() for r in rows]
    gap = [klines[0], klines[2]]  # a halt: legal, but not contiguous
    assert regular_message_rows(gap, "BTCUSDT", "1h") is None
    assert regular_message_rows([{**klines[0], "open": "5"}], "BTCUSDT", "1h") is None
    assert regular_message_rows(klines, "BTCUSDT", "1M") is None


@settings(derandomize=True, max_examples=300, deadline=None)
@given(picks=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), max_size=40))
def test_sort_unique_skips_only_what_is_already_sorted_and_unique(
    picks: list[tuple[int, int]],
) -> None:
    """Sorted unique input comes back as is; anything else as the reference (last one wins)."""
    base = [Kline(**dict(r)) for r in regular_rows(31, "BTCUSDT", "1m")]
    rows = [dataclasses.replace(base[i], trades=v) for i, v in picks]
    by_time = {r.open_time: r for r in rows}
    assert sort_unique(rows) == [by_time[t] for t in sorted(by_time)]
    assert sort_unique(iter(rows)) == sort_unique(rows)


@pytest.mark.parametrize("market", ["spot", "um", "cm"])
def test_futures_messages_take_the_bulk_path_with_their_market(market: str) -> None:
    """A regular message of every market is decoded in bulk (its lake lines ride along) into
    the very rows it was made of, each carrying its market (a COIN-M row its COIN-M keys)."""
    from klinelake.core.contract import encode_batch
    from klinelake.core.markets import Market

    m = Market(market)
    rows = tuple(Kline(**dict(pairs), market=m) for pairs in regular_rows(40, "BTCUSD_PERP", "1m"))
    batch = KlineBatch("BTCUSD_PERP", "1m", rows, market=m)
    decoded = decode_message(encode_batch(batch, "rest").data)
    assert decoded.rows[0]._line is not None  # the bulk path
    assert decoded == batch and all(r.market is m for r in decoded.rows)
    assert [r._line for r in decoded.rows] == [r.to_line() for r in rows]
