"""Futures through main's halts, archive home and bulk message decode (the merge of main)."""

from __future__ import annotations

import io
import zipfile

import pytest

from klinelake.backends.local_store import LocalStore
from klinelake.core.contract import KlineBatch, decode_message, encode_batch
from klinelake.core.halts_writer import read_empty
from klinelake.core.markets import Market
from klinelake.core.row import parse_rest_page, regular_message_rows
from klinelake.core.vision import checksum_text, cover, parse_archive_path, read_archive
from klinelake.core.writer import LakeWriter
from tests.http_stub import Reply, StubRequest, http_stub

from .test_core import CM_REST

CM_SYMBOL = "BTCUSD_200626"


def _cm_rows() -> tuple[object, ...]:
    return tuple(parse_rest_page(CM_REST, CM_SYMBOL, "1m", Market.CM))


@pytest.mark.parametrize("market", [Market.UM, Market.CM])
def test_bulk_decode_handles_futures_rows_like_the_row_path(market: Market) -> None:
    # the bulk path takes decimals with a fractional part ("206" goes row by row)
    page = CM_REST.replace(b'"206"', b'"206.5"').replace(b'"119"', b'"119.5"')
    rows = tuple(parse_rest_page(page, CM_SYMBOL, "1m", market))
    msg = encode_batch(KlineBatch(CM_SYMBOL, "1m", rows, market=market), "rest")
    batch = decode_message(msg.data, msg.attributes)
    assert batch.market is market and batch.rows == rows
    # the bulk path took it: each row carries its lake line
    assert [r._line for r in batch.rows] == [r.to_line() for r in rows]
    if market is Market.CM:
        assert b'"base_volume":"2.13660389"' in batch.rows[0].to_line()
    # rows of the other key set never pass the bulk check: the row path names the problem
    other = Market.UM if market is Market.CM else Market.CM
    klines = [r.to_dict() for r in rows]
    assert regular_message_rows(klines, CM_SYMBOL, "1m", other) is None


def test_futures_halts_go_to_the_market_meta_object(tmp_path: object) -> None:
    store = LocalStore(str(tmp_path))
    rows = _cm_rows()
    t = rows[0].open_time  # type: ignore[attr-defined]
    halt = (t + 120_000, t + 180_000)
    batch = KlineBatch(CM_SYMBOL, "1m", rows, (halt,), market=Market.CM)
    result = LakeWriter(store).write_batch(decode_message(encode_batch(batch, "rest").data))
    assert result.object_name == "raw/binance-cm_btcusd_200626_1m.jsonl"
    assert result.halts is not None
    assert result.halts.object_name == "meta/binance-cm_btcusd_200626_1m.empty.jsonl"
    assert read_empty(store, CM_SYMBOL, "1m", "binance-cm") == [halt]
    assert read_empty(store, CM_SYMBOL, "1m") == []  # spot's meta object is another stream


def test_futures_archives_live_under_data_futures_with_a_header_and_ms() -> None:
    archives, _ = cover(CM_SYMBOL, "1m", 1_735_689_600_000, 1_735_689_600_000 + 86_400_000 - 1,
                        Market.CM)  # fmt: skip
    (day,) = archives
    assert day.path == (
        "data/futures/cm/daily/klines/BTCUSD_200626/1m/BTCUSD_200626-1m-2025-01-01.zip"
    )
    assert not day.micros  # futures keep ms in 2025
    assert parse_archive_path(CM_SYMBOL, "1m", "BTCUSD_200626-1m-2025-01-01.zip", Market.CM) == (
        day, False,
    )  # fmt: skip
    (row,) = _cm_rows()
    shifted = row.open_time - 1_591_258_320_000 + day.start  # type: ignore[attr-defined]
    csv = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore\n"
        f"{shifted},9640.7,9642.4,9640.6,9642.0,206,{shifted + 59_999},2.13660389,48,119,"
        "1.23424865,0\n"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(day.stem + ".csv", csv)
    body = buf.getvalue()
    (got,) = read_archive(body, checksum_text(body, day), day, "test")
    assert got.market is Market.CM and got.open_time == shifted
    assert got.to_dict()["base_volume"] == "2.13660389"


def test_verify_vision_compares_a_coin_m_stream_with_its_futures_archive(tmp_path: object) -> None:
    import asyncio

    from klinelake.binance.vision_client import VisionClient
    from klinelake.commands.verify_vision import check_stream
    from klinelake.core.vision import day as day_archive

    start = 1_735_689_600_000  # 2025-01-01: futures archives keep ms
    (row,) = _cm_rows()
    times = [(start + k * 60_000, start + k * 60_000 + 59_999) for k in range(3)]
    lake_rows = tuple(
        type(row)(**{**_slots(row), "open_time": o, "close_time": c}) for o, c in times
    )
    store = LocalStore(str(tmp_path))
    name = (
        LakeWriter(store)
        .write_batch(KlineBatch(CM_SYMBOL, "1m", lake_rows, market=Market.CM))
        .object_name
    )
    archive = day_archive(CM_SYMBOL, "1m", start, Market.CM)
    csv = b"open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    csv += b"taker_buy_quote_volume,ignore\n"
    for k in lake_rows:
        csv += (
            f"{k.open_time},{k.open},{k.high},{k.low},{k.close},{k.volume},{k.close_time},"
            f"{k.quote_volume},{k.trades},{k.taker_buy_base_volume},"
            f"{k.taker_buy_quote_volume},0\n"
        ).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(archive.stem + ".csv", csv)
    body = buf.getvalue()
    served: list[str] = []

    def handler(request: StubRequest) -> Reply:
        served.append(request.path)
        if request.path == "/" + archive.path:
            return Reply(200, body)
        if request.path == "/" + archive.path + ".CHECKSUM":
            return Reply(200, checksum_text(body, archive).encode())
        return Reply(404)

    async def run() -> object:
        async with http_stub(handler) as url:
            client = VisionClient(url)
            try:
                return await check_stream(store, client, name)
            finally:
                await client.aclose()

    check = asyncio.run(run())
    assert check is not None
    assert check.stream == "cm:BTCUSD_200626@1m"  # type: ignore[attr-defined]
    assert check.rows_compared == 3 and check.ok  # type: ignore[attr-defined]
    assert "/data/futures/cm/daily/klines/BTCUSD_200626/1m/" + archive.stem + ".zip" in served


def _slots(row: object) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row) if f.init}  # type: ignore[arg-type]
