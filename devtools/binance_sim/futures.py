"""USD-M and COIN-M futures markets in the simulator (binance-futures-api.md, "FS §n").

Each futures market is a venue: its own truth (synthetic klines per listed contract, every
futures interval, no `1s`), its own WebSocket hub, the futures limits, and the REST routes

    /fapi/v1/{klines,exchangeInfo,ping,time}   USD-M   (weight of klines by `limit`: FS §6)
    /dapi/v1/{klines,exchangeInfo,ping,time}   COIN-M  (klines: the 200-day window that returns
                                                        the NEWEST `limit` bars: FS §6)

with one 2400/min weight pool per IP shared by both (FS §8) and the futures -1003 wording.
A venue is a `Sim` over its own market that shares the run's clock, faults and counters, so the
spot machinery (rate limiter, 429/418, hub, pinger, pusher) serves it unchanged.

WebSocket bases (a client's `--ws-url`; one server stands in for several Binance hosts):

    ws://HOST:PORT/fstream   USD-M: klines on the `/market` route, `/fstream/market/ws/<s>` and
                             `/fstream/market/stream?streams=`; the unrouted `/fstream/ws...`
                             acks kline subscriptions and never pushes them (post-2026-04-23
                             rule, FS §1)
    ws://HOST:PORT/dstream   COIN-M: `/dstream/ws/<s>`, `/dstream/stream?streams=` (unrouted)

Futures connections ping every 180 s and drop after 600 s without a pong, allow 10 client
frames per second, push the open kline every 250 ms (FS §2, §3; all configurable).

Admin (with `--admin`): POST /_sim/futures/list {"market","symbol"[,"delivery"]} lists a
contract now; POST /_sim/futures/delist {"market","symbol"} ends it now (status CLOSE on USD-M,
DELIVERED on COIN-M; no kline opens from then on); POST /_sim/futures/halt {"market","symbol",
"interval","start","end"} (an exchange halt); GET /_sim/futures/truth?market=&symbol=
&interval=&start=&end= the closed klines as lake lines under the market's row keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from binance_sim import rest, vision
from binance_sim.contracts import Contract
from binance_sim.market import Halt, SyntheticSpec, partial_kline, rest_row
from binance_sim.market import Market as Truth
from binance_sim.ratelimit import WeightLimiter
from binance_sim.rest import ApiError, Route
from klinelake.core.intervals import align_down
from klinelake.core.markets import SPECS, Market, MarketSpec, parse_market
from klinelake.core.row import Kline

if TYPE_CHECKING:
    from binance_sim.server import Sim

_FAR = 4_102_444_800_000  # 2100-01-01: "for ever" that calendar arithmetic (1M) still handles
KLINE_PARAMS = frozenset({"symbol", "interval", "startTime", "endTime", "limit"})


@dataclasses.dataclass
class Venue:
    """One futures market: its contracts, its `Sim` (truth, hub, shared limiter/faults)."""

    market: Market
    sim: Sim
    contracts: dict[str, Contract]

    @property
    def spec(self) -> MarketSpec:
        return SPECS[self.market]

    def add(self, contract: Contract) -> None:
        """List `contract`: klines from its onboard bar on, none from its end on."""
        self.contracts[contract.symbol] = contract
        for interval in self.spec.intervals:
            start = align_down(contract.onboard_ms, interval)
            self.sim.market.add_synthetic(SyntheticSpec(contract.symbol, interval, start))
        self._end(contract)

    def delist(self, symbol: str, now_ms: int) -> Contract:
        contract = self.contracts[symbol]
        contract.delisted_ms = now_ms
        self._end(contract)
        return contract

    def _end(self, contract: Contract) -> None:
        end = contract.end_ms
        if end is None:
            return
        for interval in self.spec.intervals:  # no bar opens at or after the end
            self.sim.market.add_halt(Halt(contract.symbol, interval, end, _FAR))

    def truth_lines(self, symbol: str, interval: str, start: int, end: int) -> bytes:
        now = self.sim.clock.now_ms()
        rows = self.sim.market.closed(symbol, interval, now, start, end)
        return b"".join(dataclasses.replace(k, market=self.market).to_line() for k in rows)


def make_venues(sim: Sim, contracts: tuple[Contract, ...]) -> dict[str, Venue]:
    """Both futures venues of a run, sharing `sim`'s clock, faults, counters (server.make_sim)."""
    from binance_sim.server import Sim as SimClass

    cfg = sim.config
    limiter = WeightLimiter(
        limit=cfg.futures_weight_limit,
        window_s=cfg.weight_window,
        ban_after=cfg.ban_after,
        ban_seconds=cfg.ban_seconds,
    )
    venues: dict[str, Venue] = {}
    for offset, market in enumerate((Market.UM, Market.CM), start=1):
        venue_cfg = dataclasses.replace(
            cfg,
            venue_market=market,  # the market's WS rules (ws_control.ws_rules)
            ping_interval=cfg.futures_ping_interval,
            pong_timeout=cfg.futures_pong_timeout,
            max_msgs_per_s=SPECS[market].max_incoming_msgs_per_s,
            max_streams=SPECS[market].max_streams_per_connection,
            forming_update_ms=cfg.futures_update_ms,
            weight_limit=cfg.futures_weight_limit,
        )
        truth = Truth(seed=cfg.seed + offset)
        vsim = SimClass(venue_cfg, sim.clock, truth, limiter, sim.faults, sim.stats)
        venues[market] = Venue(market, vsim, {})
    for contract in contracts:
        venues[contract.market].add(dataclasses.replace(contract))
    return venues


# --- REST handlers -----------------------------------------------------------------------------


def _kline_weight(market: Market, request: web.Request) -> int:
    """FS §6: weight by `limit` (default 500 → 5); a malformed limit costs the default."""
    raw = request.query.get("limit", "")
    limit = int(raw) if raw.isdigit() and len(raw) < 10 else SPECS[market].default_limit
    return SPECS[market].weight_for_limit(limit)


def _check_symbol(venue: Venue, symbol: str) -> Contract:
    contract = venue.contracts.get(symbol)
    if contract is None:
        raise ApiError(-1121, "Invalid symbol.")
    return contract


def klines(venue: Venue, sim: Sim, request: web.Request) -> bytes:
    params = rest.check_params(request.query, KLINE_PARAMS)
    symbol = rest._mandatory(params, "symbol")
    interval = rest._mandatory(params, "interval")
    rest._no_empty(params)
    _check_symbol(venue, symbol)
    spec = venue.spec
    if interval not in spec.intervals:
        raise ApiError(-1120, "Invalid interval.")
    start, end = rest._digits(params, "startTime"), rest._digits(params, "endTime")
    limit = rest._digits(params, "limit")
    if limit is None:
        limit = spec.default_limit
    elif not 1 <= limit <= spec.max_limit:
        if sim.config.limit_over_max != "clamp":
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        limit = min(max(limit, 1), spec.max_limit)
    if start is not None and end is not None and start > end:
        raise ApiError(-1023, "Start time is greater than end time.")
    now = sim.clock.now_ms()
    if spec.max_window_ms is None:
        rows = sim.market.select(symbol, interval, now, start=start, end=end, limit=limit)
    else:
        rows = _newest_in_window(
            venue, symbol, interval, now=now, start=start, end=end, limit=limit
        )
    return orjson.dumps([rest_row(k, False) for k in rows])


def _newest_in_window(
    venue: Venue, symbol: str, interval: str, *, now: int, start: int | None, end: int | None,
    limit: int,
) -> list[Kline]:  # fmt: skip
    """COIN-M (FS §6): endTime − startTime ≤ 200 days; the NEWEST `limit` bars of the window;
    only startTime: endTime = startTime + 200 days (capped at now); only endTime: startTime =
    endTime − 200 days; neither: the newest bars up to now. Over 200 days: -4088 (the code is
    unconfirmed, FS §9)."""
    window = venue.spec.max_window_ms
    assert window is not None
    if start is not None and end is not None and end - start > window:
        raise ApiError(-4088, f"Maximum time interval is {window // 86_400_000} days")
    if end is None:
        end = now if start is None else min(start + window, now)
    if start is None:
        start = end - window
    hi = min(end, now)
    rows: list[Kline] = []
    for k in venue.sim.market.iter_backward(symbol, interval, start, hi):
        rows.append(k)
        if len(rows) >= limit:
            break
    rows.reverse()
    if rows and rows[-1].close_time >= now:
        rows[-1] = partial_kline(rows[-1], now)
    return rows


def exchange_info(venue: Venue, sim: Sim, request: web.Request) -> bytes:
    """No parameters on futures (FS §7); `status` (UM) vs `contractStatus` (CM)."""
    rest.check_params(request.query, frozenset())
    now = sim.clock.now_ms()
    unit, num = sim.limiter.describe_window()
    return orjson.dumps(
        {
            "timezone": "UTC",
            "serverTime": now,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": unit, "intervalNum": num,
                 "limit": sim.limiter.limit},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [],
            "symbols": [c.info(now) for c in venue.contracts.values()],
        }
    )  # fmt: skip


def routes(venue: Venue) -> list[tuple[Route, Sim]]:
    """(route, venue sim) pairs for `rest.serve`."""
    prefix = venue.spec.api_prefix

    def bind(fn: Callable[[Venue, Sim, web.Request], bytes]) -> Callable[[Sim, web.Request], bytes]:
        return partial(fn, venue)

    kline_route = Route(
        f"{prefix}/klines", 5, bind(klines), partial(_kline_weight, venue.market), futures=True
    )
    return [
        (kline_route, venue.sim),
        (Route(f"{prefix}/exchangeInfo", 1, bind(exchange_info), futures=True), venue.sim),
        (Route(f"{prefix}/ping", 1, rest.ping, futures=True), venue.sim),
        (Route(f"{prefix}/time", 1, rest.server_time, futures=True), venue.sim),
    ]


def ws_paths(venue: Venue, silent: Sim) -> list[tuple[str, Sim]]:
    """(path prefix, sim whose hub serves it): USD-M klines only on the `/market` route."""
    if venue.market is Market.UM:
        return [("/fstream/market", venue.sim), ("/fstream", silent)]
    return [("/dstream", venue.sim)]


def add_to_app(app: web.Application, sim: Sim, venues: dict[str, Venue]) -> None:
    """Register every futures REST, WS (and admin) route on the simulator's app."""
    from binance_sim.server import Sim as SimClass

    first = next(iter(venues.values()))
    # the unrouted fstream: a hub over an empty truth acks kline subscriptions, pushes nothing
    silent = SimClass(first.sim.config, sim.clock, Truth(), first.sim.limiter, sim.faults,
                      sim.stats)  # fmt: skip
    for venue in venues.values():
        for route, vsim in routes(venue):
            app.router.add_get(route.path, partial(rest.serve, vsim, route))
        for prefix, hub_sim in ws_paths(venue, silent):
            app.router.add_get(f"{prefix}/ws", hub_sim.hub.handle)
            app.router.add_get(f"{prefix}/ws/{{names:.+}}", hub_sim.hub.handle)
            app.router.add_get(f"{prefix}/stream", hub_sim.hub.handle)
        # data.binance.vision: data/futures/um|cm/{monthly,daily}/klines/... (header line, ms)
        app.add_routes(vision.routes(venue.sim, venue.spec.market))
    if sim.config.admin:
        app.add_routes(admin_routes(sim, venues))


# --- admin -------------------------------------------------------------------------------------


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


def admin_routes(sim: Sim, venues: dict[str, Venue]) -> list[web.RouteDef]:
    async def body_of(request: web.Request) -> tuple[Venue, str, dict[str, Any]]:
        body = orjson.loads(await request.read())
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        market = parse_market(body.get("market"))
        if market not in venues:
            raise ValueError("market must be um or cm")
        return venues[market], str(body["symbol"]).upper(), body

    async def list_symbol(request: web.Request) -> web.Response:
        try:
            venue, symbol, body = await body_of(request)
            now = sim.clock.now_ms()
            delivery = body.get("delivery")
            contract = Contract(venue.market, symbol, now, int(delivery) if delivery else None)
            if symbol in venue.contracts:
                raise ValueError(f"{symbol} is already listed")
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return _json({"ok": False, "error": str(exc)}, 400)
        venue.add(contract)
        return _json({"ok": True, "at": now, "symbol": contract.info(now)})

    async def delist(request: web.Request) -> web.Response:
        try:
            venue, symbol, _ = await body_of(request)
            now = sim.clock.now_ms()
            contract = venue.delist(symbol, now)
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return _json({"ok": False, "error": str(exc)}, 400)
        return _json({"ok": True, "at": now, "symbol": contract.info(now)})

    async def halt(request: web.Request) -> web.Response:
        """{"market","symbol","interval","start","end"}: no kline opens in [start, end]."""
        try:
            venue, symbol, body = await body_of(request)
            gap = Halt(symbol, str(body["interval"]), int(body["start"]), int(body["end"]))
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return _json({"ok": False, "error": str(exc)}, 400)
        venue.sim.market.add_halt(gap)
        return _json({"ok": True})

    async def truth(request: web.Request) -> web.Response:
        q = request.query
        try:
            venue = venues[parse_market(q["market"])]
            symbol, interval = q["symbol"].upper(), q["interval"]
            start, end = int(q.get("start", "0")), int(q.get("end", str(_FAR)))
        except (KeyError, ValueError) as exc:
            return _json({"ok": False, "error": f"bad query: {exc!r}"}, 400)
        body = venue.truth_lines(symbol, interval, start, end)
        return web.Response(body=body, content_type="application/x-ndjson")

    return [
        web.post("/_sim/futures/list", list_symbol),
        web.post("/_sim/futures/delist", delist),
        web.post("/_sim/futures/halt", halt),
        web.get("/_sim/futures/truth", truth),
    ]
