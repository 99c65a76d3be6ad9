"""`python -m streamer`: flags and environment at the edge, typed Settings inward."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import click

from klinelake.errors import InvalidData
from klinelake.logs import setup_logging
from klinelake.markets import Market, spec
from klinelake.selector import parse_symbol_set
from streamer.config import Settings, StreamSpec, parse_intervals, parse_streams
from streamer.shards import MAX_STREAMS_PER_CONNECTION


def default_state_dir() -> str:
    # systemd's StateDirectory= sets $STATE_DIRECTORY (colon-separated if several).
    return os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "./state"


@click.command(context_settings={"show_default": True})
@click.option(
    "--market",
    envvar="MARKET",
    type=click.Choice([m.value for m in Market]),
    default="spot",
    help="spot, um (USD-M futures) or cm (COIN-M futures): one market per process",
)
@click.option(
    "--symbols",
    envvar="SYMBOLS",
    default="BTCUSDC",
    help="comma-separated symbols, or a selector followed as the market changes: "
    "[MARKET:]KEY=VALUE[|VALUE],... with KEY quote, base, status (default TRADING), contract, "
    "e.g. 'um:quote=USDT', 'quote=USDC', 'cm:contract=PERPETUAL' (docs/markets.md)",
)
@click.option("--intervals", envvar="INTERVALS", default="1h", help="comma-separated intervals")
@click.option("--topic", envvar="KLINES_TOPIC", default=None, help="projects/P/topics/T")
@click.option("--lake", "lake_uri", envvar="LAKE_URI", default="./lake", help="without --topic")
@click.option(
    "--rest-url", envvar="BINANCE_REST_URL", default=None, help="[default: the market's REST host]"
)
@click.option(
    "--ws-url",
    envvar="BINANCE_WS_URL",
    default=None,
    help="[default: the market's: stream.binance.com:9443, fstream, dstream; "
    "the USD-M /market route is added]",
)
@click.option("--state-dir", default=None, help="default: $STATE_DIRECTORY, else ./state")
@click.option(
    "--streams-per-connection",
    type=click.IntRange(1, MAX_STREAMS_PER_CONNECTION),
    default=MAX_STREAMS_PER_CONNECTION,
)
@click.option("--health-port", type=int, default=None, help="HTTP health on 127.0.0.1:PORT")
@click.option("--clock-speed", type=float, default=1.0, help="server time / real time")
@click.option("--drain-timeout", type=float, default=10.0, help="seconds allowed after SIGTERM")
@click.option(
    "--max-conn-age", type=float, default=23 * 3600.0, help="replace connections after S (server)"
)
@click.option("--stall-grace", type=float, default=30.0, help="seconds (server) after a close")
@click.option("--subscribe-timeout", type=float, default=10.0, help="seconds to wait for acks")
@click.option("--publish-timeout", type=float, default=60.0, help="seconds per Pub/Sub publish")
@click.option(
    "--exchange-info-interval",
    type=float,
    default=60.0,
    help="seconds between exchangeInfo re-reads (listings, delistings; futures weight 1, spot 20)",
)
@click.option("--log-level", default="INFO")
def main(  # noqa: PLR0917 - click passes every option
    market: str,
    symbols: str,
    intervals: str,
    topic: str | None,
    lake_uri: str,
    rest_url: str | None,
    ws_url: str | None,
    state_dir: str | None,
    streams_per_connection: int,
    health_port: int | None,
    clock_speed: float,
    drain_timeout: float,
    max_conn_age: float,
    stall_grace: float,
    subscribe_timeout: float,
    publish_timeout: float,
    exchange_info_interval: float,
    log_level: str,
) -> None:
    """Stream Binance closed klines into the lake (or Pub/Sub), gap-free, once each."""
    setup_logging(log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per REST request is noise
    try:
        symbol_set = parse_symbol_set(symbols)
        if symbol_set.market is not None:
            if market not in ("spot", symbol_set.market.value):
                raise ValueError(f"--symbols says {symbol_set.market}, --market says {market}")
            market = symbol_set.market.value
        ivs = parse_intervals(intervals, Market(market))
        if not ivs:
            raise ValueError("at least one interval is needed")
        if symbol_set.is_selector:
            streams: tuple[StreamSpec, ...] = ()
        else:
            streams = parse_streams(",".join(symbol_set.symbols), intervals, Market(market))
    except (ValueError, InvalidData) as exc:
        raise click.BadParameter(str(exc), param_hint="--symbols/--intervals") from exc
    settings = Settings(
        streams=streams,
        topic=topic or None,
        lake_uri=lake_uri,
        rest_url=rest_url or spec(market).rest_url,
        ws_url=ws_url or spec(market).ws_url,
        market=Market(market),
        symbol_set=symbol_set,
        intervals=ivs,
        exchange_info_interval_s=exchange_info_interval,
        state_dir=Path(state_dir or default_state_dir()),
        streams_per_connection=streams_per_connection,
        health_port=health_port,
        clock_speed=clock_speed,
        drain_timeout_s=drain_timeout,
        max_conn_age_s=max_conn_age,
        stall_grace_s=stall_grace,
        subscribe_timeout_s=subscribe_timeout,
        publish_timeout_s=publish_timeout,
        log_level=log_level,
    )
    from streamer.service import Service

    raise SystemExit(asyncio.run(Service(settings).run()))
