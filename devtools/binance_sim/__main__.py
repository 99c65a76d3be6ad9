"""`python -m binance_sim --host 127.0.0.1 --port 0 --data DIR [options]`: see `--help`."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import click

from binance_sim.config import SimConfig
from binance_sim.contracts import parse_contract
from binance_sim.market import DataFileError, SyntheticSpec, parse_time
from binance_sim.ratelimit import DEFAULT_BAN_SECONDS
from binance_sim.server import make_sim, serve
from klinelake.config import CONTEXT_SETTINGS, version_option

BUNDLED_DATA = Path(__file__).parent / "data"


@click.command(context_settings=CONTEXT_SETTINGS)
@version_option("binance_sim")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=0, type=int, help="0 binds a free port (see the READY line)")
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="dir of {SYMBOL}-{INTERVAL}-*.csv|zip (default: bundled)",
)
@click.option(
    "--start",
    default=None,
    help="simulated now at startup: ISO time or epoch ms (default: the real clock)",
)
@click.option(
    "--speed", default=SimConfig.speed, type=float, help="simulated seconds per real second"
)
@click.option("--synthetic", multiple=True, help="SYMBOL:INTERVAL[:START] synthesised stream")
@click.option("--seed", default=SimConfig.seed, type=int)
@click.option(
    "--latency-ms", default=SimConfig.latency_ms, type=int, help="added delay per REST request"
)
@click.option("--ping-interval", default=SimConfig.ping_interval, type=float, help="real seconds")
@click.option("--pong-timeout", default=SimConfig.pong_timeout, type=float, help="real seconds")
@click.option(
    "--max-conn-age", default=SimConfig.max_conn_age, type=float, help="simulated seconds"
)
@click.option(
    "--max-update-hz",
    default=SimConfig.max_update_hz,
    type=float,
    help="forming frames/stream/real s",
)
@click.option("--max-streams", default=SimConfig.max_streams, type=int)
@click.option(
    "--max-msgs-per-s",
    default=SimConfig.max_msgs_per_s,
    type=int,
    help="client frames/s before 1008",
)
@click.option("--ws-conn-limit", default=SimConfig.ws_conn_limit, type=int)
@click.option("--ws-conn-window", default=SimConfig.ws_conn_window, type=float, help="real seconds")
@click.option("--weight-limit", default=SimConfig.weight_limit, type=int)
@click.option(
    "--weight-window",
    default=SimConfig.weight_window,
    type=float,
    help="real seconds, fixed windows",
)
@click.option(
    "--ban-after", default=SimConfig.ban_after, type=int, help="429s in a window before a 418 ban"
)
@click.option(
    "--ban-seconds",
    default=",".join(str(int(s)) for s in DEFAULT_BAN_SECONDS),
    help="escalating 418 ban lengths, comma-separated real seconds",
)
@click.option("--limit-over-max", type=click.Choice(["error", "clamp"]), default="error")
@click.option(
    "--shutdown-grace",
    default=SimConfig.shutdown_grace,
    type=float,
    help="serverShutdown -> close, s",
)
@click.option(
    "--futures",
    multiple=True,
    help="a futures contract MARKET:SYMBOL[:onboard=T,delivery=T], e.g. um:BTCUSDT, "
    "um:BTCUSDT_260327:delivery=2026-03-27T08:00, cm:BTCUSD_PERP (default: um:BTCUSDT, "
    "um:ETHUSDT, cm:BTCUSD_PERP); served on /fapi, /dapi, ws /fstream/market, /dstream",
)
@click.option(
    "--futures-weight-limit",
    default=SimConfig.futures_weight_limit,
    type=int,
    help="one pool for fapi+dapi",
)
@click.option(
    "--futures-ping-interval",
    default=SimConfig.futures_ping_interval,
    type=float,
    help="real seconds",
)
@click.option(
    "--futures-pong-timeout",
    default=SimConfig.futures_pong_timeout,
    type=float,
    help="real seconds",
)
@click.option(
    "--futures-update-ms",
    default=SimConfig.futures_update_ms,
    type=int,
    help="open-kline push, simulated ms",
)
@click.option("--admin/--no-admin", default=True, help="serve /_sim/ admin routes")
@click.option(
    "--block-rest",
    type=click.Choice(["0", "403", "451"]),
    default="0",
    help="answer every REST request with this status (451: restricted location, 403: WAF)",
)
@click.option(
    "--block-ws", type=click.Choice(["0", "403", "451"]), default="0", help="refuse WS handshakes"
)
@click.option("--ready-file", default=None, type=click.Path(path_type=Path))
@click.option("--log-level", default="WARNING")
def main(**options: Any) -> None:
    """A Binance spot, USD-M and COIN-M futures market-data simulator (REST + WebSocket
    streams) for tests and demos."""
    host, port, ready_file = options.pop("host"), options.pop("port"), options.pop("ready_file")
    logging.basicConfig(level=options.pop("log_level").upper(), stream=sys.stderr)
    start = options.pop("start")
    blocks = {
        "rest_block": int(options.pop("block_rest")),
        "ws_block": int(options.pop("block_ws")),
    }
    try:
        config = SimConfig(
            data_dirs=options.pop("data_dirs") or (BUNDLED_DATA,),
            start_ms=parse_time(start) if start else None,
            synthetic=tuple(SyntheticSpec.parse(s) for s in options.pop("synthetic")),
            futures=tuple(parse_contract(s) for s in options.pop("futures")),
            ban_seconds=tuple(float(s) for s in options.pop("ban_seconds").split(",")),
            **options,
        )
        sim = make_sim(config)
        sim.faults.update(blocks)
    except (DataFileError, ValueError) as exc:
        click.echo(f"binance_sim: {exc}", err=True)
        sys.exit(2)
    asyncio.run(serve(sim, host, port, ready_file))


if __name__ == "__main__":
    main()
