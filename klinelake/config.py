"""The configuration table (DESIGN.md, "Configuration names") as code: one row per setting, with
its environment variable, its flag, what it means and its default. Every entry point builds its
options from these rows (`option(...)`), so a name or a default is spelled once, and `--help`
shows every variable (click's `show_envvar`).

    env var             flag           default
    KLINES_TOPIC        --topic        unset: write the lake directly
    LAKE_URI            --lake         ./lake
    BINANCE_REST_URL    --rest-url     https://api.binance.com
    BINANCE_WS_URL      --ws-url       wss://stream.binance.com:9443
    BINANCE_VISION_URL  --vision-url   https://data.binance.vision
    SYMBOLS             --symbols      BTCUSDC
    INTERVALS           --intervals    1h
    DEAD_LETTER_TOPIC   (function)     unset: log poison messages only
    ACK_DEADLINE_S      (function)     300 (the push subscription's --ack-deadline)
    MERGE_PIECE_BYTES   (function)     33554432 (32 MiB: see klinelake/core/staged_merge.py)
    DEAD_LETTER_SUBSCRIPTION --subscription  (klinelake deadletters)
    FLUSH_WINDOW_S      --flush-window 0 (streamer: publish each closed kline at once)

Endpoints (binance-spot-api.md §1, §5): Binance also serves public market data from hosts that
carry nothing else, `https://data-api.binance.vision` (REST) and
`wss://data-stream.binance.vision:443` (WS); `https://api-gcp.binance.com` is a REST host for
clients on Google Cloud. The defaults are the main hosts; docs/deploy.md says when to choose which.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_REST_URL = "https://api.binance.com"
DEFAULT_WS_URL = "wss://stream.binance.com:9443"
MARKET_DATA_REST_URL = "https://data-api.binance.vision"
MARKET_DATA_WS_URL = "wss://data-stream.binance.vision:443"
GCP_REST_URL = "https://api-gcp.binance.com"
DEFAULT_VISION_URL = "https://data.binance.vision"
DEFAULT_LAKE_URI = "./lake"

# Exit codes shared by the streamer and backfill (each documents the rest in its --help).
EXIT_BAD_CONFIG = 2  # the command or configuration cannot work as given
EXIT_BLOCKED = 4  # Binance refuses this client (HTTP 451/403) or never answers exchangeInfo
DISTRIBUTION = "smart-money-raw-layer"


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the table. `flag` is None for a variable without a command-line flag."""

    env: str | None
    flag: str | None
    meaning: str
    default: str | None

    def __post_init__(self) -> None:
        if self.env is None and self.flag is None:
            raise ValueError("a setting needs an environment variable or a flag")
        if self.flag is not None and not self.flag.startswith("--"):
            raise ValueError(f"flag {self.flag!r} must start with --")

    def value(self, environ: Mapping[str, str]) -> str | None:
        """The value from `environ` (empty counts as unset), else the default."""
        if self.env is not None and environ.get(self.env):
            return environ[self.env]
        return self.default


TOPIC = Setting("KLINES_TOPIC", "--topic", "projects/P/topics/T to publish to", None)
LAKE = Setting(
    "LAKE_URI", "--lake", "gs://BUCKET or a directory (without a topic)", DEFAULT_LAKE_URI
)
REST_URL = Setting(
    "BINANCE_REST_URL",
    "--rest-url",
    f"Binance REST base; market data only: {MARKET_DATA_REST_URL}",
    DEFAULT_REST_URL,
)
WS_URL = Setting(
    "BINANCE_WS_URL",
    "--ws-url",
    f"Binance WS base; market data only: {MARKET_DATA_WS_URL}",
    DEFAULT_WS_URL,
)
VISION_URL = Setting(
    "BINANCE_VISION_URL", "--vision-url", "base URL of the monthly dumps", DEFAULT_VISION_URL
)
SYMBOLS = Setting(
    "SYMBOLS", "--symbols", "comma-separated symbols, e.g. BTCUSDC,ETHUSDT", "BTCUSDC"
)
INTERVALS = Setting(
    "INTERVALS", "--intervals", "comma-separated intervals, e.g. 1h,1m (case-sensitive)", "1h"
)
DEAD_LETTER_SUBSCRIPTION = Setting(
    "DEAD_LETTER_SUBSCRIPTION",
    "--subscription",
    "projects/P/subscriptions/S of the dead-letter topic",
    None,
)
DEAD_LETTER_TOPIC = Setting(
    "DEAD_LETTER_TOPIC", None, "the function's poison messages (unset: log only)", None
)
ACK_DEADLINE = Setting(
    "ACK_DEADLINE_S",
    None,
    "the push subscription's ack deadline in seconds: bounds the function's work per message",
    "300",
)
MERGE_PIECE_BYTES = Setting(
    "MERGE_PIECE_BYTES",
    None,
    "bytes of a large merge one piece re-uploads (a delivery stages pieces within its budget)",
    str(32 * 1024 * 1024),
)
FLUSH_WINDOW = Setting(
    "FLUSH_WINDOW_S",
    "--flush-window",
    "streamer: hold a stream's closed klines up to S seconds and publish them as one message "
    "(fewer messages and GCS writes, rows land up to S later; docs/cost.md); 0: at once",
    "0",
)

# Read by the processes, set by their environment rather than by an operator's flag.
STATE_DIRECTORY = Setting(
    "STATE_DIRECTORY", None, "set by systemd's StateDirectory=: the default --state-dir", None
)
NOTIFY_SOCKET = Setting(
    "NOTIFY_SOCKET", None, "set by systemd: READY=1 and WATCHDOG=1 go there", None
)
PUBSUB_EMULATOR_HOST = Setting(
    "PUBSUB_EMULATOR_HOST", None, "HOST:PORT of a Pub/Sub emulator (the Google client's)", None
)
STORAGE_EMULATOR_HOST = Setting(
    "STORAGE_EMULATOR_HOST", None, "http://HOST:PORT of a GCS emulator (the Google client's)", None
)
GOOGLE_CLOUD_PROJECT = Setting(
    "GOOGLE_CLOUD_PROJECT",
    None,
    "the project the Google clients bill (else from credentials)",
    None,
)
EMULATORS = (PUBSUB_EMULATOR_HOST, STORAGE_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT)

TABLE: tuple[Setting, ...] = (
    TOPIC,
    LAKE,
    REST_URL,
    WS_URL,
    VISION_URL,
    SYMBOLS,
    INTERVALS,
    DEAD_LETTER_TOPIC,
    DEAD_LETTER_SUBSCRIPTION,
    ACK_DEADLINE,
    MERGE_PIECE_BYTES,
    FLUSH_WINDOW,
    STATE_DIRECTORY,
    NOTIFY_SOCKET,
    *EMULATORS,
)


def option(setting: Setting, *param_decls: str, **overrides: Any) -> Callable[[F], F]:
    """`@option(LAKE, "lake_uri")`: a click option for a row of the table, its variable shown
    in `--help`. `param_decls` may add the Python name; `overrides` any click keyword."""
    if setting.flag is None:
        raise ValueError(f"{setting.env} has no flag")
    kwargs: dict[str, Any] = {
        "envvar": setting.env,
        "show_envvar": setting.env is not None,
        "default": setting.default,
        "help": setting.meaning,
        "show_default": setting.default is not None,
    }
    kwargs.update(overrides)
    decorator: Callable[[F], F] = click.option(setting.flag, *param_decls, **kwargs)
    return decorator


def env_help(*settings: Setting) -> str:
    """An epilog naming the variables that have no flag (click shows the others itself)."""
    return "\b\nAlso read from the environment:\n" + "\n".join(
        f"  {s.env:<22} {s.meaning}" for s in settings if s.env is not None
    )


# The conventions every entry point follows: -h as well as --help, and --version.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True}


def version() -> str:
    """The installed distribution's version (for entry points that do not use click)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def version_option(prog: str) -> Callable[[F], F]:
    # Resolved when --version is given (no metadata read at import). The second line says
    # whether the compiled REST page parser is built here (setup.py; else pure Python, slower).
    from klinelake.core.row import COMPILED_ROW_PATH, ROW_PATH

    row_path = ROW_PATH if COMPILED_ROW_PATH else f"{ROW_PATH} (the compiled module is not built)"
    decorator: Callable[[F], F] = click.version_option(
        None, "--version", package_name=DISTRIBUTION, prog_name=prog,
        message=f"%(prog)s %(version)s\nrow path: {row_path}",
    )  # fmt: skip
    return decorator


_TOPIC = re.compile(r"projects/[^/\s]+/topics/[^/\s]+")


def check_topic(topic: str) -> str:
    if not _TOPIC.fullmatch(topic):
        raise ValueError(f"{TOPIC.env} {topic!r}: expected projects/PROJECT/topics/TOPIC")
    return topic


def split_csv(text: str) -> tuple[str, ...]:
    """`"BTCUSDC, ETHUSDC"` → `("BTCUSDC", "ETHUSDC")`: commas or spaces, empties dropped."""
    return tuple(p for p in text.replace(" ", ",").split(",") if p)


def market_option() -> Callable[[F], F]:
    """`--market spot|um|cm` (env MARKET), the same on every entry point (docs/markets.md)."""
    return click.option(
        "--market",
        envvar="MARKET",
        show_envvar=True,
        type=click.Choice(["spot", "um", "cm"]),
        default="spot",
        help="spot, um (USD-M futures, /fapi, fstream) or cm (COIN-M futures, /dapi, dstream); "
        "with um/cm the spot default REST/WS bases become the market's (docs/markets.md)",
    )
