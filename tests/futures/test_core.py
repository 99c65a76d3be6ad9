"""Markets in the core: names, keys, rows and messages per market (DESIGN.md contracts 2, 3)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core.binance_ws import parse_ws_frame
from klinelake.core.contract import KlineBatch, decode_message, encode_batch
from klinelake.core.errors import InvalidData, InvalidInterval, InvalidMessage
from klinelake.core.intervals import INTERVALS
from klinelake.core.markets import (
    CM_ROW_KEYS,
    SPECS,
    Market,
    archive_path,
    page_bars,
    parse_market,
    split_stream_key,
    stream_key,
    window_for_page,
)
from klinelake.core.row import iter_csv, kline_from_dict, parse_rest_page
from klinelake.core.symbols import object_name, parse_object_name, parse_stream_object, stream_id

# binance-futures-api.md §6: the COIN-M REST example row.
CM_REST = (
    b'[[1591258320000,"9640.7","9642.4","9640.6","9642.0","206",1591258379999,"2.13660389",48,'
    b'"119","1.23424865","0"]]'
)
CM_LINE = (
    b'{"open_time":1591258320000,"close_time":1591258379999,"symbol":"BTCUSD_200626",'
    b'"interval":"1m","open":"9640.7","high":"9642.4","low":"9640.6","close":"9642.0",'
    b'"volume":"206","base_volume":"2.13660389","trades":48,"taker_buy_volume":"119",'
    b'"taker_buy_base_volume":"1.23424865"}\n'
)


def test_names_per_market() -> None:
    assert object_name("BTCUSDT", "1m") == "raw/binance_btcusdt_1m.jsonl"
    assert object_name("BTCUSDT", "1m", Market.UM) == "raw/binance-um_btcusdt_1m.jsonl"
    assert object_name("BTCUSD_PERP", "1h", "cm") == "raw/binance-cm_btcusd_perp_1h.jsonl"
    assert stream_id("BTCUSDC", "1h") == "BTCUSDC@1h"
    assert stream_id("BTCUSDT", "1m", "um") == "um:BTCUSDT@1m"
    assert stream_id("BTCUSD_PERP", "1m", "cm") == "cm:BTCUSD_PERP@1m"
    # a futures object is not a spot object
    assert parse_object_name("raw/binance-um_btcusdt_1m.jsonl") is None
    assert parse_object_name("raw/binance_btcusdt_1m.jsonl") == ("BTCUSDT", "1m")
    for bad in ("raw/binance-xx_btcusdt_1m.jsonl", "raw/binance-um_1m.jsonl",
                "raw/binance-um_btcusdt_1s.jsonl", "raw/binance-um_btcusdt.jsonl"):  # fmt: skip
        assert parse_stream_object(bad) is None, bad


def test_futures_have_no_1s() -> None:
    with pytest.raises(InvalidInterval, match="market um"):
        object_name("BTCUSDT", "1s", Market.UM)
    with pytest.raises(InvalidInterval):
        stream_id("BTCUSD_PERP", "1s", Market.CM)
    assert object_name("BTCUSDT", "1s") == "raw/binance_btcusdt_1s.jsonl"


_symbol_part = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789币安", min_size=1, max_size=8)
symbols = st.lists(_symbol_part, min_size=1, max_size=3).map("_".join)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(list(Market)), symbols, st.sampled_from(INTERVALS))
def test_object_names_round_trip(market: Market, symbol: str, interval: str) -> None:
    if market is not Market.SPOT and interval == "1s":
        return
    name = object_name(symbol, interval, market)
    assert parse_stream_object(name) == (market, symbol, interval)
    key = stream_id(symbol, interval, market)
    assert split_stream_key(key) == (market, symbol, interval)
    assert stream_key(market, symbol, interval) == key


def test_cm_rows_carry_cm_keys() -> None:
    (row,) = parse_rest_page(CM_REST, "BTCUSD_200626", "1m", Market.CM)
    assert row.to_line() == CM_LINE
    assert tuple(row.to_dict()) == CM_ROW_KEYS
    assert kline_from_dict(orjson.loads(CM_LINE), market=Market.CM) == row
    # the same values under spot keys would say "quote" of what is base: refused both ways
    with pytest.raises(InvalidData, match=r"'quote_volume' = None: missing \(a spot row"):
        kline_from_dict(orjson.loads(CM_LINE))
    with pytest.raises(InvalidData, match=r"'base_volume' = None: missing \(a cm row"):
        kline_from_dict(parse_rest_page(CM_REST, "BTCUSD_200626", "1m")[0].to_dict(), "", Market.CM)


def test_um_rows_are_contract_1_rows() -> None:
    body = CM_REST.replace(b"1591258320000", b"1591258320000")
    (um,) = parse_rest_page(body, "BTCUSDT", "1m", Market.UM)
    (spot,) = parse_rest_page(body, "BTCUSDT", "1m")
    assert um.to_line() == spot.to_line()
    assert um != spot  # the market is part of the identity


def test_futures_csv_with_header() -> None:
    csv = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore\r\n"
        "1591258320000,9640.7,9642.4,9640.6,9642.0,206,1591258379999,2.13660389,48,119,"
        "1.23424865,0\r\n"
    )
    (row,) = iter_csv(csv, "BTCUSD_200626", "1m", market=Market.CM)
    assert row.to_line() == CM_LINE


def test_ws_frame_of_cm() -> None:
    frame = orjson.dumps({
        "stream": "btcusd_200626@kline_1m",
        "data": {"e": "kline", "E": 1591258380001, "s": "BTCUSD_200626", "k": {
            "t": 1591258320000, "T": 1591258379999, "s": "BTCUSD_200626", "i": "1m", "f": 1,
            "L": 2, "o": "9640.7", "c": "9642.0", "h": "9642.4", "l": "9640.6", "v": "206",
            "n": 48, "x": True, "q": "2.13660389", "V": "119", "Q": "1.23424865", "B": "0"}},
    })  # fmt: skip
    event = parse_ws_frame(frame, Market.CM)
    assert event.kline.to_line() == CM_LINE  # type: ignore[union-attr]


def _cm_batch() -> KlineBatch:
    rows = tuple(parse_rest_page(CM_REST, "BTCUSD_200626", "1m", Market.CM))
    return KlineBatch("BTCUSD_200626", "1m", rows, market=Market.CM)


def test_message_round_trip_and_ordering_key() -> None:
    batch = _cm_batch()
    msg = encode_batch(batch, "rest")
    assert msg.ordering_key == "cm:BTCUSD_200626@1m"
    assert msg.attributes["market"] == "cm"
    assert msg.data.startswith(b'{"symbol":"BTCUSD_200626","interval":"1m","market":"cm","klines"')
    assert decode_message(msg.data, msg.attributes) == batch
    assert decode_message(msg.data) == batch  # a hand-typed replay without attributes


def test_spot_messages_unchanged() -> None:
    (spot,) = parse_rest_page(CM_REST, "BTCUSDT", "1m")
    msg = encode_batch(KlineBatch("BTCUSDT", "1m", (spot,)), "ws")
    assert b"market" not in msg.data and "market" not in msg.attributes
    assert msg.ordering_key == "BTCUSDT@1m"
    explicit = msg.data.replace(b'"klines"', b'"market":"spot","klines"')
    assert decode_message(explicit, {**msg.attributes, "market": "spot"}).market is Market.SPOT


@pytest.mark.parametrize(
    ("data_market", "attr_market", "error"),
    [
        ("cm", "um", "contradicts"),
        (None, "cm", "contradicts"),  # data says spot (absent) but the attribute says cm
        ("xx", None, "unknown market"),
        ("um", None, "'quote_volume' = None: missing"),  # COIN-M keys in a USD-M message
        (7, None, "'market' must be a JSON string"),
    ],
)
def test_market_poison(data_market: object, attr_market: str | None, error: str) -> None:
    obj = orjson.loads(encode_batch(_cm_batch(), "rest").data)
    del obj["market"]
    if data_market is not None:
        obj["market"] = data_market
    attrs = {"market": attr_market} if attr_market else {}
    with pytest.raises(InvalidMessage, match=error):
        decode_message(orjson.dumps(obj), attrs)


def test_market_table() -> None:
    um, cm, spot = SPECS[Market.UM], SPECS[Market.CM], SPECS[Market.SPOT]
    assert (spot.klines_path, um.klines_path, cm.klines_path) == (
        "/api/v3/klines", "/fapi/v1/klines", "/dapi/v1/klines",
    )  # fmt: skip
    assert [um.weight_for_limit(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [
        1, 1, 2, 2, 5, 5, 10, 10,
    ]  # fmt: skip
    assert spot.weight_for_limit(1000) == 2 and um.max_limit == cm.max_limit == 1500
    assert um.weight_limit_1m == cm.weight_limit_1m == 2400 and um.ws_route == "/market"
    assert "1s" not in um.intervals and "1s" in spot.intervals
    # COIN-M pages are bounded to `limit` bars from their start (the server returns the newest)
    assert window_for_page(Market.CM, 0, 10**12, "1m", 1500) == 1500 * 60_000 - 1
    assert window_for_page(Market.CM, 0, 10**12, "1d", 1500) == 200 * 86_400_000
    assert window_for_page(Market.UM, 0, 10**12, "1m", 1500) == 10**12
    assert page_bars(Market.CM, "4h", 1500) == 1200 and page_bars(Market.UM, "4h", 1500) == 1500
    assert page_bars(Market.CM, "1M", 499) == 6
    assert (spot.cheapest_page_limit, um.cheapest_page_limit) == (1000, 499)
    assert archive_path(Market.UM, "monthly", "BTCUSDT", "1M", "2024-01") == (
        "data/futures/um/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2024-01.zip"
    )
    with pytest.raises(ValueError, match="unknown market"):
        parse_market("usdm")


def test_message_schema_covers_markets() -> None:
    import jsonschema

    from klinelake.core.contract import message_schema

    schema = message_schema()
    cm = orjson.loads(encode_batch(_cm_batch(), "rest").data)
    jsonschema.validate(cm, schema)
    as_um = {**cm, "market": "um"}  # COIN-M keys under another market: refused
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(as_um, schema)


def test_writer_and_status_per_market(tmp_path: object) -> None:
    from pathlib import Path

    from klinelake.backends.lake import read_rows
    from klinelake.backends.local_store import LocalStore
    from klinelake.commands.main import collect
    from klinelake.core.writer import LakeWriter

    store = LocalStore(Path(str(tmp_path)))
    batch = _cm_batch()
    result = LakeWriter(store).write_batch(batch)
    assert result.object_name == "raw/binance-cm_btcusd_200626_1m.jsonl"
    assert list(read_rows(store, "BTCUSD_200626", "1m", Market.CM)) == list(batch.rows)
    (report,), unknown = collect(store, {}, None)
    assert unknown == []
    assert (report.market, report.stream, report.rows, report.ok) == (
        Market.CM, "cm:BTCUSD_200626@1m", 1, True,
    )  # fmt: skip


def test_cm_errors_name_cm_fields() -> None:
    bad = CM_REST.replace(b'"2.13660389"', b'"2.1x"')
    with pytest.raises(InvalidData, match=r"'base_volume' = '2\.1x'"):
        parse_rest_page(bad, "BTCUSD_200626", "1m", Market.CM)
    with pytest.raises(InvalidData, match=r"'quote_volume' = '2\.1x'"):  # the same column on UM
        parse_rest_page(bad, "BTCUSDT", "1m", Market.UM)
