"""REST routes: /api/v3/{klines,uiKlines,ping,time,exchangeInfo} (fact sheet §5-§9).

Every answer, errors included, carries `X-MBX-USED-WEIGHT`, `X-MBX-USED-WEIGHT-1M` and
`Content-Type: application/json;charset=UTF-8`; weight is charged before validation, so failed
requests cost weight too. Choices where Binance's behaviour is unconfirmed (§12), documented:

- `limit` outside 1..1000: -1130 by default (`--limit-over-max clamp` clamps instead).
- `timeZone`: only UTC (`0`, `+0`, `00:00`, ...) is served; any other value gets -1130.
- Several failing checks: the first in this order wins: duplicate (-1101), unknown (-1104),
  missing (-1102), empty (-1105), symbol (-1100/-1121), interval (-1120), times, limit, timeZone.
- `startTime > endTime`: -1023 `Start time is greater than end time.`
"""

from __future__ import annotations

import asyncio
import gzip
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from multidict import MultiMapping

from binance_sim.faults import block_answer
from binance_sim.market import rest_row
from klinelake.core.intervals import INTERVALS

if TYPE_CHECKING:
    from binance_sim.server import Sim

JSON_TYPE = "application/json;charset=UTF-8"
_DIGITS = re.compile(r"[0-9]{1,20}")
_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")
_UTC_ZONE = re.compile(r"[+-]?0{1,2}(?::00)?")
_MICROS_THRESHOLD = 10**14
KLINE_PARAMS = frozenset({"symbol", "interval", "startTime", "endTime", "timeZone", "limit"})
INFO_PARAMS = frozenset({"symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"})
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL")


class ApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def too_much_weight(limit: int, unit: str, num: int) -> str:
    return (
        f"Too much request weight used; current limit is {limit} request weight per {num} "
        f"{unit}. Please use WebSocket Streams for live updates to avoid polling the API."
    )


def futures_too_many(limit: int) -> str:
    """The futures -1003 text (binance-futures-api.md §8), not spot's."""
    return (
        f"Too many requests; current limit is {limit} requests per minute. Please use the "
        "websocket for live updates to avoid polling the API."
    )


def futures_banned_until(ms: int) -> str:
    return (
        f"Way too many requests; IP banned until {ms}. Please use the websocket for live "
        "updates to avoid bans."
    )


def banned_until(ms: int) -> str:
    return (
        f"Way too much request weight used; IP banned until {ms}. "
        "Please use WebSocket Streams for live updates to avoid bans."
    )


def error_body(code: int, msg: str) -> bytes:
    return orjson.dumps({"code": code, "msg": msg})


# --- parameter checks ---------------------------------------------------------------------------


def check_params(query: MultiMapping[str], allowed: frozenset[str]) -> dict[str, str]:
    keys = [k for k, _ in query.items()]  # .keys() folds duplicates in recent multidict
    if len(set(keys)) != len(keys):
        raise ApiError(-1101, "Duplicate values for a parameter detected.")
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        raise ApiError(
            -1104,
            f"Not all sent parameters were read; read '{len(keys) - len(unknown)}' "
            f"parameter(s) but was sent '{len(keys)}'.",
        )
    return {k: query[k] for k in keys}


def _mandatory(params: dict[str, str], name: str) -> str:
    if name not in params:
        raise ApiError(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return params[name]


def _no_empty(params: dict[str, str]) -> None:
    for k, v in params.items():
        if v == "":
            raise ApiError(-1105, f"Parameter '{k}' was empty.")


def _digits(params: dict[str, str], name: str) -> int | None:
    if name not in params:
        return None
    value = params[name]
    if not _DIGITS.fullmatch(value):
        raise ApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(value)


def _to_ms(value: int | None) -> int | None:
    """ms or µs by magnitude (fact sheet §5; the real server's rule is unconfirmed)."""
    if value is None:
        return None
    return value // 1000 if value >= _MICROS_THRESHOLD else value


def time_unit_us(request: web.Request) -> bool:
    unit = request.headers.get("X-MBX-TIME-UNIT")
    if unit is None or unit in ("MILLISECOND", "millisecond"):
        return False
    if unit in ("MICROSECOND", "microsecond"):
        return True
    raise ApiError(
        -1194, "Invalid value for time unit; expected either MICROSECOND or MILLISECOND."
    )


def check_symbol(sim: Sim, symbol: str) -> str:
    if sim.market.has_symbol(symbol):
        return symbol
    if not _SYMBOL.fullmatch(symbol):
        raise ApiError(
            -1100,
            "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
        )
    raise ApiError(-1121, "Invalid symbol.")


# --- handlers: (sim, request) -> JSON bytes ---------------------------------------------------


def klines(sim: Sim, request: web.Request) -> bytes:
    params = check_params(request.query, KLINE_PARAMS)
    symbol = _mandatory(params, "symbol")
    interval = _mandatory(params, "interval")
    _no_empty(params)
    check_symbol(sim, symbol)
    if interval not in INTERVALS:
        raise ApiError(-1120, "Invalid interval.")
    start = _to_ms(_digits(params, "startTime"))
    end = _to_ms(_digits(params, "endTime"))
    limit = _digits(params, "limit")
    if limit is None:
        limit = 500
    elif not 1 <= limit <= 1000:
        if sim.config.limit_over_max != "clamp":
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        limit = min(max(limit, 1), 1000)
    zone = params.get("timeZone")
    if zone is not None and not _UTC_ZONE.fullmatch(zone):
        raise ApiError(-1130, "Data sent for parameter 'timeZone' is not valid.")
    if start is not None and end is not None and start > end:
        raise ApiError(-1023, "Start time is greater than end time.")
    us = time_unit_us(request)
    now = sim.clock.now_ms()
    if start is not None and not us:  # history: served from pre-rendered rows where it can
        page = sim.market.closed_page_json(symbol, interval, now, start=start, end=end, limit=limit)
        if page is not None:
            return page
    rows = sim.market.select(symbol, interval, now, start=start, end=end, limit=limit)
    return orjson.dumps([rest_row(k, us) for k in rows])


def ping(sim: Sim, request: web.Request) -> bytes:
    check_params(request.query, frozenset())
    return b"{}"


def server_time(sim: Sim, request: web.Request) -> bytes:
    check_params(request.query, frozenset())
    now = sim.clock.now_ms()
    return orjson.dumps({"serverTime": now * 1000 if time_unit_us(request) else now})


def _symbol_info(symbol: str) -> dict[str, Any]:
    quote = next((q for q in _QUOTES if symbol.endswith(q) and len(symbol) > len(q)), symbol[-4:])
    base = symbol[: -len(quote)] or symbol
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
             "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
             "stepSize": "0.00001000"},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }  # fmt: skip


def exchange_info(sim: Sim, request: web.Request) -> bytes:
    params = check_params(request.query, INFO_PARAMS)
    _no_empty(params)
    if "symbol" in params and "symbols" in params:
        raise ApiError(-1128, "Combination of optional parameters invalid.")
    wanted = sim.market.symbols
    if "symbol" in params:
        wanted = [check_symbol(sim, params["symbol"])]
    elif "symbols" in params:
        try:
            names = orjson.loads(params["symbols"])
        except orjson.JSONDecodeError:
            names = None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ApiError(-1130, "Data sent for parameter 'symbols' is not valid.")
        wanted = [check_symbol(sim, n) for n in names]
    status = params.get("symbolStatus")
    if status is not None and status not in ("TRADING", "HALT", "BREAK"):
        raise ApiError(-1130, "Data sent for parameter 'symbolStatus' is not valid.")
    if status not in (None, "TRADING"):
        wanted = []
    now = sim.clock.now_ms()
    unit, num = sim.limiter.describe_window()
    return orjson.dumps(
        {
            "timezone": "UTC",
            "serverTime": now * 1000 if time_unit_us(request) else now,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": unit,
                    "intervalNum": num,
                    "limit": sim.limiter.limit,
                },
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_info(s) for s in wanted],
        }
    )


@dataclass(frozen=True)
class Route:
    path: str
    weight: int
    handler: Callable[[Sim, web.Request], bytes]
    # Futures klines cost by `limit` (binance-futures-api.md §6): the weight from the request.
    weight_of: Callable[[web.Request], int] | None = None
    futures: bool = False  # futures -1003 wording


ROUTES = (
    Route("/api/v3/klines", 2, klines),
    Route("/api/v3/uiKlines", 2, klines),
    Route("/api/v3/ping", 1, ping),
    Route("/api/v3/time", 1, server_time),
    Route("/api/v3/exchangeInfo", 20, exchange_info),
)


# --- the common path: faults, weight, headers --------------------------------------------------


def _response(sim: Sim, status: int, body: bytes, used: int, retry: int = 0) -> web.Response:
    headers = {
        "Content-Type": JSON_TYPE,
        "X-MBX-USED-WEIGHT": str(used),
        f"X-MBX-USED-WEIGHT-{sim.limiter.header_suffix()}": str(used),
        "x-mbx-uuid": str(uuid.uuid4()),
    }
    if retry:
        headers["Retry-After"] = str(retry)
    return web.Response(status=status, body=body, headers=headers)


async def serve(sim: Sim, route: Route, request: web.Request) -> web.Response:
    stats, limiter, faults = sim.stats, sim.limiter, sim.faults
    stats.requests += 1
    stats.rest_requests[request.path] += 1
    ip = request.remote or "unknown"
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.rest_block:
        stats.responses_blocked += 1
        body, content_type = block_answer(faults.rest_block)
        return web.Response(status=faults.rest_block, body=body, content_type=content_type)
    verdict = limiter.banned(ip)
    if verdict is not None:
        stats.requests_while_banned += 1
    elif faults.take("rest_418"):
        verdict = limiter.ban(ip, faults.ban_seconds)
    else:
        weight = route.weight if route.weight_of is None else route.weight_of(request)
        stats.weight += weight
        verdict = limiter.charge(ip, weight)
    if verdict.status == 418:
        stats.responses_418 += 1
        until = verdict.banned_until_ms
        text = futures_banned_until(until) if route.futures else banned_until(until)
        body = error_body(-1003, text)
        return _response(sim, 418, body, verdict.used, max(1, verdict.retry_after))
    unit, num = limiter.describe_window()
    if verdict.status == 429 or faults.take("rest_429"):
        stats.responses_429 += 1
        retry = verdict.retry_after or limiter.seconds_to_reset()
        if route.futures:
            body = error_body(-1003, futures_too_many(limiter.limit))
        else:
            body = error_body(-1003, too_much_weight(limiter.limit, unit, num))
        return _response(sim, 429, body, verdict.used, retry)
    if faults.take("rest_5xx"):
        stats.responses_5xx += 1
        if faults.rest_5xx_status == 500:
            body = error_body(-1000, "An unknown error occurred while processing the request.")
        else:
            body = error_body(
                -1008,
                "Server is currently overloaded with other requests. Please try again in a few "
                "minutes.",
            )
        return _response(sim, faults.rest_5xx_status, body, verdict.used)
    try:
        response = _response(sim, 200, route.handler(sim, request), verdict.used)
    except ApiError as exc:
        return _response(sim, exc.status, error_body(exc.code, exc.msg), verdict.used)
    return _compressed(sim, request, response)


def _compressed(sim: Sim, request: web.Request, response: web.Response) -> web.Response:
    """The answer gzipped where the run's `gzip` mode says so (SimConfig.gzip)."""
    mode = sim.config.gzip
    accepts = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    if mode == "always" or (mode == "accepted" and accepts):
        assert isinstance(response.body, bytes)
        response.body = gzip.compress(response.body, compresslevel=6)
        response.headers["Content-Encoding"] = "gzip"
        sim.stats.responses_gzipped += 1
    return response


def not_found(sim: Sim) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """404 for unknown paths: JSON unless the client asks for HTML (fact sheet §5)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if "text/html" in request.headers.get("Accept", ""):
            return web.Response(status=404, text="<html><body><h1>404 Not Found</h1></body></html>",
                                content_type="text/html")  # fmt: skip
        ip = request.remote or "unknown"
        return _response(sim, 404, b"", sim.limiter.used(ip))

    return handler
