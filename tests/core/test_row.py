"""The lake row and its parsers, against real recorded Binance data."""

from __future__ import annotations

import dataclasses
import itertools
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core.binance_ws import KlineEvent, parse_ws_frame
from klinelake.core.contract import message_schema
from klinelake.core.errors import InvalidData, InvalidRow
from klinelake.core.row import (
    FIELDS,
    Kline,
    kline_from_dict,
    open_time_of_line,
    parse_csv,
    parse_csv_line,
    parse_lake_line,
    parse_rest_page,
    parse_rest_row,
)
from tests.recorded import DATA, WS_FIXTURE, recorded_csv

DESIGN_ROW = (
    b'{"open_time":1640995200000,"close_time":1640998799999,"symbol":"BTCUSDT","interval":"1h",'
    b'"open":"46216.93000000","high":"46731.39000000","low":"46208.37000000",'
    b'"close":"46656.13000000","volume":"1503.33095000","quote_volume":"69879986.39049930",'
    b'"trades":38608,"taker_buy_base_volume":"806.06536000",'
    b'"taker_buy_quote_volume":"37462156.91764400"}\n'
)


def test_canonical_row_is_byte_identical_to_design(jan2022: list[Kline]) -> None:
    assert jan2022[0].to_line() == DESIGN_ROW
    assert list(orjson.loads(DESIGN_ROW)) == list(FIELDS)


def test_every_fixture_csv_parses_contiguously(jan2022: list[Kline], may2023: list[Kline]) -> None:
    for rows in (jan2022, may2023):
        assert len(rows) == 744
        assert all(b.open_time - a.open_time == 3_600_000 for a, b in itertools.pairwise(rows))


def test_csv_without_header_lf_and_crlf_give_identical_rows(jan2022: list[Kline]) -> None:
    text = recorded_csv("BTCUSDT-1h-2022-01.csv").decode()
    body = text.split("\n", 1)[1]
    assert "\r\n" in body
    assert parse_csv(body, "BTCUSDT", "1h") == jan2022
    assert parse_csv(body.replace("\r\n", "\n"), "BTCUSDT", "1h") == jan2022


def test_microsecond_dump_rows_become_milliseconds() -> None:
    line = (
        "1735689600000000,4.15070000,4.15070000,4.13000000,4.14000000,100.00000000,"
        "1735693199999999,414.00000000,10,50.00000000,207.00000000,0"
    )
    k = parse_csv_line(line, "XUSDT", "1h")
    assert (k.open_time, k.close_time) == (1735689600000, 1735693199999)


def test_rest_fixture_parses_with_exact_strings() -> None:
    body = (DATA / "BTCUSDT-1m-2021-10-22.api_v3_klines.json").read_bytes()
    rows = parse_rest_page(body, "BTCUSDT", "1m")
    raw = orjson.loads(body)
    assert len(rows) == 10
    for k, r in zip(rows, raw, strict=True):
        assert [k.open, k.high, k.low, k.close, k.volume] == r[1:6]
        assert (k.open_time, k.close_time, k.trades) == (r[0], r[6], r[8])


def test_ws_fixture_frames_parse_and_match_stream() -> None:
    events = [parse_ws_frame(line) for line in WS_FIXTURE.read_bytes().splitlines()]
    assert len(events) == 118
    assert all(isinstance(e, KlineEvent) for e in events)
    closed = [e for e in events if isinstance(e, KlineEvent) and e.closed]
    assert sorted(e.kline.symbol for e in closed) == ["BTCUSDT", "DOTUSDT", "ETHUSDT"]
    assert all(e.kline.open_time == 1617566580000 for e in closed)


def test_quirks_are_accepted(jan2022: list[Kline]) -> None:
    base = jan2022[0]
    empty = dataclasses.replace(
        base, volume="0.00000000", quote_volume="0.00000000", trades=0,
        taker_buy_base_volume="0.00000000", taker_buy_quote_volume="0.00000000",
    )  # fmt: skip
    halted = dataclasses.replace(base, close_time=base.open_time + 1_000)
    assert empty.trades == 0 and halted.close_time < base.close_time


@pytest.mark.parametrize(
    ("change", "field", "why"),
    [
        ({"open": "4621a.93"}, "open", "decimal"),
        ({"high": 46731.39}, "high", "decimal"),
        ({"close_time": 1640995199999}, "close_time", "before open_time"),
        ({"close_time": 1640998800000}, "close_time", "after the end"),
        ({"open_time": 1640995200001, "close_time": 1640998799999}, "open_time", "aligned"),
        ({"trades": "38608"}, "trades", "integer"),
        ({"trades": -1}, "trades", "0 to 2^53-1"),
        ({"symbol": "../x"}, "symbol", ".."),
        ({"interval": "1H"}, "interval", "interval"),
    ],
)
def test_invalid_rows_name_the_field(
    jan2022: list[Kline], change: dict[str, object], field: str, why: str
) -> None:
    with pytest.raises(InvalidRow) as err:
        dataclasses.replace(jan2022[0], **change)  # type: ignore[arg-type]
    assert err.value.field == field
    assert why in str(err.value)


def test_malformed_csv_line_error_names_line_and_field() -> None:
    text = recorded_csv("BTCUSDT-1h-2023-05.csv").decode().splitlines()
    text[5] = text[5].replace(",", ",x", 1)  # corrupt the open price of data row 5
    with pytest.raises(InvalidRow, match=r"line 6: field 'open'"):
        parse_csv("\n".join(text), "BTCUSDT", "1h")


def test_rest_row_shape_errors() -> None:
    with pytest.raises(InvalidRow, match="12-element"):
        parse_rest_row([1, "2"], "BTCUSDT", "1m")
    with pytest.raises(InvalidData, match="not JSON"):
        parse_rest_page(b"<html>", "BTCUSDT", "1m")
    with pytest.raises(InvalidData, match="array"):
        parse_rest_page(b'{"code":-1121,"msg":"Invalid symbol."}', "BTCUSDT", "1m")


def test_lake_line_roundtrip_and_unknown_keys(jan2022: list[Kline]) -> None:
    line = jan2022[3].to_line()
    assert parse_lake_line(line) == jan2022[3]
    assert open_time_of_line(line) == jan2022[3].open_time
    with pytest.raises(InvalidRow, match="unknown field"):
        kline_from_dict({**jan2022[3].to_dict(), "ignore": "0"})
    with pytest.raises(InvalidRow, match="missing"):
        kline_from_dict({k: v for k, v in jan2022[3].to_dict().items() if k != "low"})


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[1,2]",
        b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{}}}',
        b'{"e":"kline","E":1617566591776,"s":"ETHUSDT","k":{"t":1617566580000,"T":1617566639999,'
        b'"s":"ETHUSDT","i":"1m","o":"x","c":"1","h":"1","l":"1","v":"1","n":1,"x":true,"q":"1",'
        b'"V":"1","Q":"1"}}',
        b'{"stream":"ethusdt@kline_1h","data":{"e":"kline","E":1617566591776,"s":"ETHUSDT","k":'
        b'{"t":1617566580000,"T":1617566639999,"s":"ETHUSDT","i":"1m","o":"1","c":"1","h":"1",'
        b'"l":"1","v":"1","n":1,"x":true,"q":"1","V":"1","Q":"1"}}}',
    ],
)
def test_malformed_ws_frames_raise_invalid_data(frame: bytes) -> None:
    with pytest.raises(InvalidData):
        parse_ws_frame(frame)


def test_ws_control_and_shutdown_frames() -> None:
    reply = parse_ws_frame(b'{"result":null,"id":1}')
    err = parse_ws_frame(b'{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":2}')
    shutdown = parse_ws_frame(b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":5}}')
    assert reply.__class__.__name__ == "ControlReply"
    assert getattr(err, "error_code", None) == 2
    assert shutdown.__class__.__name__ == "ServerShutdown"
    assert isinstance(parse_ws_frame(b'{"e":"trade","E":1}'), object)
    assert Kline.__slots__  # frozen + slotted: rows are cheap and immutable


@settings(derandomize=True, max_examples=2000)
@given(
    st.one_of(
        st.text(alphabet="0123456789.-+eE x٣١²\u0660\uff11", max_size=45),
        st.from_regex(r"[0-9]{1,31}(\.[0-9]{1,11})?", fullmatch=True),
    )
)
def test_decimal_check_equals_the_packaged_schema_pattern(text: str) -> None:
    """The bound lives in one place that readers see (the schema); the fast check agrees."""
    from klinelake.core.row import _is_decimal

    pattern = message_schema()["$defs"]["decimal"]["pattern"]
    assert _is_decimal(text) == bool(re.search(pattern, text))
