"""The data.binance.vision kline archives (fact sheet §10), served from the simulator's truth.

`GET /data/spot/{monthly,daily}/klines/<SYMBOL>/<INTERVAL>/<SYMBOL>-<INTERVAL>-<YYYY>-<MM>.zip`
(daily: `...-<YYYY>-<MM>-<DD>.zip`) and its sibling `.zip.CHECKSUM`: the layout, names and
checksum format are `klinelake.core.vision`'s (one home; the backfill and `klinelake verify
--against vision` read what this serves). The zip
holds one headerless CSV in Binance's 12-column order (exact decimal strings, a trailing `,0`
ignore column), times in µs from 2025-01 on, ms before. A file exists only for a period that is
complete in simulated time and has rows (halts excluded); anything else is a 404. No weight is
charged. The bytes are deterministic (fixed zip date_time), so the CHECKSUM is stable.

Admin (with `--admin`): `POST /_sim/vision {"corrupt": true}` makes every CHECKSUM lie.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from klinelake.core.markets import Market, spec
from klinelake.core.row import Kline
from klinelake.core.vision import Archive, checksum_text, parse_archive_path

if TYPE_CHECKING:
    from binance_sim.server import Sim

PREFIX = "/data/spot/{period:monthly|daily}/klines"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass
class VisionFaults:
    corrupt: bool = False


def csv_bytes(rows: Iterable[Kline], micros: bool) -> bytes:
    out = io.StringIO()
    for k in rows:
        o, c = (
            (k.open_time * 1000, k.close_time * 1000 + 999)
            if micros
            else (k.open_time, k.close_time)
        )
        out.write(
            f"{o},{k.open},{k.high},{k.low},{k.close},{k.volume},{c},{k.quote_volume},"
            f"{k.trades},{k.taker_buy_base_volume},{k.taker_buy_quote_volume},0\n"
        )
    return out.getvalue().encode()


def zip_bytes(csv_name: str, data: bytes) -> bytes:
    """A deterministic zip of one CSV (fixed date_time), so its CHECKSUM is stable."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(csv_name, date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, data)
    return buf.getvalue()


# Futures CSVs start with this header and keep ms (binance-futures-api.md §10).
FUTURES_HEADER = (
    b"open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    b"taker_buy_quote_volume,ignore\n"
)


def build_archive(sim: Sim, archive: Archive) -> bytes | None:
    """The zip for one period, or None (incomplete in simulated time, unknown, or no rows).
    Futures archives: a header line, and ms times whatever the period (`Archive.micros`)."""
    now = sim.clock.now_ms()
    if archive.end > now:
        return None
    rows = list(sim.market.closed(archive.symbol, archive.interval, now, archive.start,
                                  archive.end - 1))  # fmt: skip
    if not rows:
        return None
    data = csv_bytes(rows, micros=archive.micros)
    if spec(archive.market).archive_has_header:
        data = FUTURES_HEADER + data
    return zip_bytes(archive.stem + ".csv", data)


def routes(sim: Sim, market: Market = Market.SPOT) -> list[web.RouteDef]:
    """The archive routes of `market` (futures: `/data/futures/um|cm/{monthly,daily}/klines`)."""
    faults = VisionFaults()
    futures = market != Market.SPOT
    prefix = f"/{spec(market).archive_prefix}/{{period:monthly|daily}}/klines"

    async def serve(request: web.Request) -> web.Response:
        info = request.match_info
        parsed = parse_archive_path(info["symbol"], info["interval"], info["name"], market)
        if parsed is None or parsed[0].period != info["period"]:
            raise web.HTTPNotFound()
        archive, checksum = parsed
        body = build_archive(sim, archive)
        if body is None:
            raise web.HTTPNotFound()
        sim.stats.archives_served[archive.period] += 0 if checksum else 1
        if not checksum:
            return web.Response(body=body, content_type="application/zip")
        if faults.corrupt:
            return web.Response(text=f"{hashlib.sha256(body + b'corrupt').hexdigest()}  "
                                     f"{archive.stem}.zip\n")  # fmt: skip
        return web.Response(text=checksum_text(body, archive), content_type="text/plain")

    async def admin(request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("corrupt"), bool):
            return web.json_response(
                {"ok": False, "error": 'expected {"corrupt": bool}'}, status=400
            )
        faults.corrupt = body["corrupt"]
        return web.json_response({"ok": True, "corrupt": faults.corrupt})

    out = [web.get(prefix + "/{symbol}/{interval}/{name}", serve)]
    if sim.config.admin and not futures:
        out.append(web.post("/_sim/vision", admin))
    return out
