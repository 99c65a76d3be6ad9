"""`python -m streamer` (or `streamer`): flags and environment at the edge, typed Settings inward.

Exit codes: 0 stopped on SIGTERM/SIGINT, 1 a supervised task died, 2 bad configuration (a
symbol Binance does not list, bad flags), 4 blocked (Binance answered 451/403, or exchangeInfo
never answered): docs/runbook.md, "Blocked".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import click

from klinelake import config as cfg
from klinelake.core.binance_limits import MAX_STREAMS_PER_CONNECTION
from klinelake.core.errors import InvalidData
from klinelake.core.markets import Market, spec
from klinelake.core.selector import parse_symbol_set
from klinelake.logs import setup_logging
from streamer.config import Settings, StreamSpec, parse_intervals, parse_streams

EPILOG = (
    cfg.env_help(cfg.STATE_DIRECTORY, cfg.NOTIFY_SOCKET, *cfg.EMULATORS)
    + "\n\n\bExit codes: 0 stopped (SIGTERM), 1 a task died, 2 bad configuration,"
    + "\n4 blocked by Binance (HTTP 451/403) or exchangeInfo never answered."
    + "\n\n\b\n--symbols also takes a selector followed as the market changes (docs/markets.md):"
    + "\n  [MARKET:]KEY=VALUE[|VALUE],...  KEY: quote, base, status (default TRADING),"
    + "\n  contract, symbol; e.g. 'um:quote=USDT', 'quote=USDC', 'cm:contract=PERPETUAL'."
    + "\nListings start streaming, symbols leaving TRADING are retired; a renamed symbol is a"
    + "\nnew stream."
)


# Tuning flags of the settings object's float fields: (flag, Settings field, help). The default
# is the field's own (one definition); click names the parameter after the flag.
_TUNING = (
    ("--clock-speed", "clock_speed", "server time / real time"),
    ("--drain-timeout", "drain_timeout_s", "seconds allowed after SIGTERM"),
    ("--max-conn-age", "max_conn_age_s", "replace connections after S (server)"),
    ("--stall-grace", "stall_grace_s", "seconds (server) after a close"),
    ("--subscribe-timeout", "subscribe_timeout_s", "seconds to wait for acks"),
    ("--publish-timeout", "publish_timeout_s", "seconds per Pub/Sub publish"),
    (
        "--exchange-info-deadline",
        "exchange_info_deadline_s",
        "seconds exchangeInfo may fail at startup before exiting 4 (blocked)",
    ),
    (
        "--exchange-info-interval",
        "exchange_info_interval_s",
        "seconds between exchangeInfo re-reads (listings, delistings; futures weight 1, spot 20)",
    ),
)


def _tuning_options(command: Callable[..., None]) -> Callable[..., None]:
    for flag, field, help_text in reversed(_TUNING):
        default = getattr(Settings, field)
        command = click.option(flag, type=float, default=default, help=help_text)(command)
    return command


def default_state_dir() -> str:
    # systemd's StateDirectory= sets $STATE_DIRECTORY (colon-separated if several).
    return (cfg.STATE_DIRECTORY.value(os.environ) or "").split(":")[0] or "./state"


@click.command(context_settings=cfg.CONTEXT_SETTINGS, epilog=EPILOG)
@cfg.version_option("streamer")
@cfg.market_option()
@cfg.option(cfg.SYMBOLS)
@cfg.option(cfg.INTERVALS)
@cfg.option(cfg.TOPIC)
@cfg.option(cfg.LAKE, "lake_uri")
@cfg.option(cfg.REST_URL)
@cfg.option(cfg.WS_URL)
@click.option("--state-dir", default=None, help="default: $STATE_DIRECTORY, else ./state")
@click.option(
    "--streams-per-connection",
    type=click.IntRange(1, MAX_STREAMS_PER_CONNECTION),
    default=Settings.streams_per_connection,
)
@cfg.option(cfg.FLUSH_WINDOW, type=click.FloatRange(0, 86_400))
@click.option("--health-port", type=int, default=None, help="HTTP health on 127.0.0.1:PORT")
@_tuning_options
@click.option(
    "--check",
    is_flag=True,
    help="preflight: exchangeInfo answers and a WS frame arrives for every stream; "
    "print one line, exit 0 or non-zero",
)
@click.option("--check-timeout", type=float, default=20.0, help="seconds per --check step")
@click.option("--log-level", default=Settings.log_level)
def main(  # noqa: PLR0917 - click passes every option
    market: str,
    symbols: str,
    intervals: str,
    topic: str | None,
    lake_uri: str,
    rest_url: str,
    ws_url: str,
    state_dir: str | None,
    streams_per_connection: int,
    health_port: int | None,
    flush_window: float,
    clock_speed: float,
    drain_timeout: float,
    max_conn_age: float,
    stall_grace: float,
    subscribe_timeout: float,
    publish_timeout: float,
    exchange_info_deadline: float,
    check: bool,
    check_timeout: float,
    exchange_info_interval: float,
    log_level: str,
) -> None:
    """Stream Binance closed klines into the lake (or Pub/Sub), gap-free, once each."""
    setup_logging(log_level)
    try:
        symbol_set = parse_symbol_set(symbols)
        if symbol_set.market is not None:
            if market not in ("spot", symbol_set.market.value):
                raise ValueError(f"--symbols says {symbol_set.market}, --market says {market}")
            market = symbol_set.market.value
        ivs = parse_intervals(intervals, Market(market))
        if not ivs:
            raise ValueError("at least one interval is needed")
        streams: tuple[StreamSpec, ...] = ()
        if not symbol_set.is_selector:
            streams = parse_streams(",".join(symbol_set.symbols), intervals, Market(market))
        if market != "spot":  # the spot defaults do not serve futures
            rest_url = spec(market).rest_url if rest_url == cfg.DEFAULT_REST_URL else rest_url
            ws_url = spec(market).ws_url if ws_url == cfg.DEFAULT_WS_URL else ws_url
        settings = Settings(
            streams=streams,
            market=Market(market),
            symbol_set=symbol_set,
            intervals=ivs,
            exchange_info_interval_s=exchange_info_interval,
            topic=topic or None,
            lake_uri=lake_uri,
            rest_url=rest_url,
            ws_url=ws_url,
            state_dir=Path(state_dir or default_state_dir()),
            streams_per_connection=streams_per_connection,
            health_port=health_port,
            flush_window_s=flush_window,
            clock_speed=clock_speed,
            drain_timeout_s=drain_timeout,
            max_conn_age_s=max_conn_age,
            stall_grace_s=stall_grace,
            subscribe_timeout_s=subscribe_timeout,
            publish_timeout_s=publish_timeout,
            exchange_info_deadline_s=exchange_info_deadline,
            log_level=log_level,
        )
    except (ValueError, InvalidData) as exc:
        raise click.UsageError(str(exc)) from exc
    if check:
        from streamer.preflight import preflight

        code, line = asyncio.run(preflight(settings, check_timeout))
        click.echo(f"streamer --check: {line}", err=code != 0)
        raise SystemExit(code)
    from streamer.service import Service

    raise SystemExit(asyncio.run(Service(settings).run()))
