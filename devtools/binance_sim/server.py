"""One aiohttp application: REST, WebSocket streams and (optionally) the admin routes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from aiohttp import web

from binance_sim import admin, futures, rest, vision
from binance_sim.clock import SimClock
from binance_sim.config import SimConfig
from binance_sim.contracts import default_contracts
from binance_sim.faults import Faults, Stats
from binance_sim.market import Market, Series, load_dir
from binance_sim.ratelimit import WeightLimiter
from binance_sim.ws import Hub


@dataclass
class Sim:
    """Everything one simulator run holds; built by `make_sim`, shared by the routes."""

    config: SimConfig
    clock: SimClock
    market: Market
    limiter: WeightLimiter
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    hub: Hub = field(init=False)
    venues: dict[str, futures.Venue] = field(default_factory=dict)  # "um", "cm" (futures.py)

    def __post_init__(self) -> None:
        self.hub = Hub(self)


def make_sim(config: SimConfig) -> Sim:
    """Load the data (raises market.DataFileError on a refused file) and build the state."""
    series: dict[tuple[str, str], Series] = {}
    for d in config.data_dirs:
        series.update(load_dir(d))
    start = config.start_ms if config.start_ms is not None else int(time.time() * 1000)
    sim = Sim(
        config=config,
        clock=SimClock(start, config.speed),
        market=Market(series, list(config.synthetic), seed=config.seed),
        limiter=WeightLimiter(
            limit=config.weight_limit,
            window_s=config.weight_window,
            ban_after=config.ban_after,
            ban_seconds=config.ban_seconds,
        ),
    )
    sim.faults.latency_ms = config.latency_ms
    sim.venues.update(futures.make_venues(sim, config.futures or default_contracts()))
    return sim


def build_app(sim: Sim) -> web.Application:
    app = web.Application()
    for route in rest.ROUTES:
        app.router.add_get(route.path, partial(rest.serve, sim, route))
    app.router.add_get("/ws", sim.hub.handle)
    app.router.add_get("/ws/", sim.hub.handle)
    app.router.add_get("/ws/{names:.+}", sim.hub.handle)
    app.router.add_get("/stream", sim.hub.handle)
    app.add_routes(vision.routes(sim))
    futures.add_to_app(app, sim, sim.venues)
    if sim.config.admin:
        app.add_routes(admin.routes(sim))
    app.router.add_route("*", "/{tail:.*}", rest.not_found(sim))

    async def close_ws(_: web.Application) -> None:
        await sim.hub.close_all(1001, b"Server shutdown")

    app.on_shutdown.append(close_ws)
    return app


async def serve(sim: Sim, host: str, port: int, ready_file: Path | None = None) -> None:
    """Serve until SIGTERM/SIGINT; print `READY http://HOST:PORT` once listening."""
    runner = web.AppRunner(build_app(sim), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None and isinstance(server, asyncio.Server)
    bound = server.sockets[0].getsockname()[1]
    url = f"http://{host}:{bound}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(url + "\n")
        tmp.replace(ready_file)
    sys.stdout.write(f"READY {url}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner.cleanup(), 5)
