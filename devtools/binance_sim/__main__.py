"""`python -m binance_sim --host 127.0.0.1 --port 0 --data DIR [options]`: see `--help`."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
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


# SimConfig fields settable from the command line as --FIELD-NAME: each option's type and
# default are SimConfig's own (one definition); only the help text is said here.
_TUNABLE: dict[str, str | None] = {
    "speed": "simulated seconds per real second",
    "seed": None,
    "latency_ms": "added delay per REST request",
    "ping_interval": "real seconds",
    "pong_timeout": "real seconds",
    "max_conn_age": "simulated seconds",
    "max_update_hz": "forming frames/stream/real s",
    "max_streams": None,
    "max_msgs_per_s": "client frames/s before 1008",
    "ws_conn_limit": None,
    "ws_conn_window": "real seconds",
    "weight_limit": None,
    "weight_window": "real seconds, fixed windows",
    "ban_after": "429s in a window before a 418 ban",
    "shutdown_grace": "serverShutdown -> close, s",
    "futures_weight_limit": "one pool for fapi+dapi",
    "futures_ping_interval": "real seconds",
    "futures_pong_timeout": "real seconds",
    "futures_update_ms": "open-kline push, simulated ms",
}


def _sim_config_options(command: Callable[..., None]) -> Callable[..., None]:
    for name, help_text in reversed(_TUNABLE.items()):
        default = getattr(SimConfig, name)
        flag = "--" + name.replace("_", "-")
        command = click.option(flag, default=default, type=type(default), help=help_text)(command)
    return command


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
@_sim_config_options
@click.option("--synthetic", multiple=True, help="SYMBOL:INTERVAL[:START] synthesised stream")
@click.option(
    "--ban-seconds",
    default=",".join(str(int(s)) for s in DEFAULT_BAN_SECONDS),
    help="escalating 418 ban lengths, comma-separated real seconds",
)
@click.option("--limit-over-max", type=click.Choice(["error", "clamp"]), default="error")
@click.option(
    "--gzip",
    type=click.Choice(["off", "accepted", "always"]),
    default="off",
    help="gzip REST bodies: never, when the client accepts gzip (as Binance), or always",
)
@click.option(
    "--futures",
    multiple=True,
    help="a futures contract MARKET:SYMBOL[:onboard=T,delivery=T], e.g. um:BTCUSDT, "
    "um:BTCUSDT_260327:delivery=2026-03-27T08:00, cm:BTCUSD_PERP (default: um:BTCUSDT, "
    "um:ETHUSDT, cm:BTCUSD_PERP); served on /fapi, /dapi, ws /fstream/market, /dstream",
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
