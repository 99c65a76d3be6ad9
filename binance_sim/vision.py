"""The data.binance.vision monthly kline dumps (fact sheet §10), served from the simulator's truth.

`GET /data/spot/monthly/klines/<SYMBOL>/<INTERVAL>/<SYMBOL>-<INTERVAL>-<YYYY>-<MM>.zip` and its
sibling `.zip.CHECKSUM` (sha256sum format `<hex>  <name>`). The zip holds one headerless CSV
`<SYMBOL>-<INTERVAL>-<YYYY>-<MM>.csv` in Binance's 12-column order (exact decimal strings, a
trailing `,0` ignore column), times in µs for months from 2025-01 on, ms before. `1mo` stands for
`1M` in paths. A file exists only for a month that is complete in simulated time and has rows
(halts excluded); anything else is a 404. No weight is charged. The bytes are deterministic
(fixed zip date_time), so the CHECKSUM is stable.

Admin (with `--admin`): `POST /_sim/vision {"corrupt": true}` makes every CHECKSUM lie.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from klinelake.intervals import INTERVALS
from klinelake.row import Kline

if TYPE_CHECKING:
    from binance_sim.server import Sim

PREFIX = "/data/spot/monthly/klines"
MICROS_FROM_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC: µs timestamps from here on
_FILE = re.compile(
    r"(?P<symbol>[A-Z0-9_]+)-(?P<interval>[0-9]+[smhdw]|1mo)-(?P<y>\d{4})-(?P<m>\d{2})"
)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass
class VisionFaults:
    corrupt: bool = False


def path_interval(interval: str) -> str:
    return "1mo" if interval == "1M" else interval


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """(first ms of the month, first ms of the next month)."""
    start = datetime(year, month, 1, tzinfo=UTC)
    nxt = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(nxt.timestamp() * 1000)


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


def build_month(
    sim: Sim, symbol: str, interval: str, year: int, month: int, *, futures: bool = False
) -> bytes | None:
    """The zip for one month, or None (incomplete in simulated time, unknown, or no rows).
    `futures`: a header line and ms times whatever the month."""
    if interval not in INTERVALS or not 1 <= month <= 12:
        return None
    lo, nxt = month_bounds(year, month)
    now = sim.clock.now_ms()
    if nxt > now:
        return None
    rows = list(sim.market.closed(symbol, interval, now, lo, nxt - 1))
    if not rows:
        return None
    base = f"{symbol}-{path_interval(interval)}-{year:04d}-{month:02d}"
    if futures:
        return zip_bytes(base + ".csv", FUTURES_HEADER + csv_bytes(rows, micros=False))
    return zip_bytes(base + ".csv", csv_bytes(rows, micros=lo >= MICROS_FROM_MS))


def routes(sim: Sim, prefix: str = PREFIX, *, futures: bool = False) -> list[web.RouteDef]:
    """The dump routes under `prefix` (futures: `/data/futures/um|cm/monthly/klines`)."""
    faults = VisionFaults()

    async def serve(request: web.Request) -> web.Response:
        symbol, interval = request.match_info["symbol"], request.match_info["interval"]
        name = request.match_info["name"]
        checksum = name.endswith(".zip.CHECKSUM")
        stem = name.removesuffix(".CHECKSUM").removesuffix(".zip")
        if not name.endswith((".zip", ".zip.CHECKSUM")):
            raise web.HTTPNotFound()
        m = _FILE.fullmatch(stem)
        if m is None or m["symbol"] != symbol or m["interval"] != interval:
            raise web.HTTPNotFound()
        real_interval = "1M" if interval == "1mo" else interval
        if real_interval == "1M" and interval != "1mo":
            raise web.HTTPNotFound()  # Binance's paths never say 1M
        body = build_month(sim, symbol, real_interval, int(m["y"]), int(m["m"]), futures=futures)
        if body is None:
            raise web.HTTPNotFound()
        if not checksum:
            return web.Response(body=body, content_type="application/zip")
        digest = hashlib.sha256(body).hexdigest()
        if faults.corrupt:
            digest = hashlib.sha256(body + b"corrupt").hexdigest()
        return web.Response(text=f"{digest}  {stem}.zip\n", content_type="text/plain")

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
