"""What a backfill run is asked to do (`Settings`), validated when built: what can be refused
before any request raises `BadInput` (exit code 2, one clear line).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from klinelake.config import DEFAULT_LAKE_URI, DEFAULT_REST_URL, DEFAULT_VISION_URL
from klinelake.core.contract import MAX_ROWS, Source
from klinelake.core.errors import InvalidData
from klinelake.core.intervals import (
    check_interval,
)
from klinelake.core.markets import Market, check_market_interval, spec
from klinelake.core.symbols import validate_symbol


class BadInput(Exception):
    """The command cannot succeed as given (exit code 2); the message is one clear line."""


DEFAULT_DAYS = 30


@dataclass(frozen=True)
class Settings:
    symbols: tuple[str, ...] = ("BTCUSDC",)
    intervals: tuple[str, ...] = ("1h",)
    start_ms: int | None = None
    end_ms: int | None = None  # inclusive: klines whose open_time <= end_ms
    days: int | None = None
    topic: str | None = None
    lake: str = DEFAULT_LAKE_URI
    rest_url: str = DEFAULT_REST_URL
    state_dir: Path = Path("./state")
    budget_share: float = 0.8
    concurrency: int = 10
    missing_only: bool = False
    dry_run: bool = False
    source: Source = "rest"
    vision_url: str = DEFAULT_VISION_URL
    page_limit: int | None = None  # None: the market's cheapest (spot 1000, futures 499)
    batch_rows: int = MAX_ROWS
    market: Market = Market.SPOT

    @property
    def limit(self) -> int:
        return self.page_limit or spec(self.market).cheapest_page_limit

    def __post_init__(self) -> None:
        check_settings(self)  # validated when built: a Settings that exists can run

    @property
    def sink_target(self) -> str:
        return f"pubsub:{self.topic}" if self.topic else f"lake:{self.lake}"


def check_settings(settings: Settings) -> None:
    """What can be refused before any request."""
    for interval in settings.intervals:
        try:
            check_market_interval(settings.market, check_interval(interval))
        except InvalidData as exc:
            raise BadInput(str(exc)) from None
    for symbol in settings.symbols:
        try:
            validate_symbol(symbol.upper())  # typed in any case, used uppercased
        except InvalidData as exc:
            raise BadInput(str(exc)) from None
    if not settings.symbols or not settings.intervals:
        raise BadInput("no symbols or no intervals given")
    if settings.end_ms is not None and settings.days is not None:
        raise BadInput("--end and --days are mutually exclusive")
    if settings.days is not None and settings.days <= 0:
        raise BadInput(f"--days must be positive, got {settings.days}")
    if (
        settings.start_ms is not None
        and settings.end_ms is not None
        and settings.start_ms > settings.end_ms
    ):
        raise BadInput(f"start {iso(settings.start_ms)} is after end {iso(settings.end_ms)}")
    if not 0 < settings.budget_share <= 1:
        raise BadInput(f"--budget-share must be in (0, 1], got {settings.budget_share}")
    if settings.concurrency < 1:
        raise BadInput("--concurrency must be at least 1")
    ceiling = spec(settings.market).max_limit
    if not 1 <= settings.limit <= ceiling:
        raise BadInput(f"--page-limit must be 1..{ceiling}")
    if settings.source not in ("rest", "vision"):
        raise BadInput(f"source {settings.source!r} is not supported (only 'rest' or 'vision')")
    if settings.source == "vision" and settings.missing_only:
        raise BadInput("--missing-only is not supported with --source vision")


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
