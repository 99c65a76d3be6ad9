"""Types of the compiled REST page parser (klinelake/core/_rest_page.c)."""

from klinelake.core.markets import Market
from klinelake.core.row import Kline

def configure(
    kline_type: type[Kline],
    slot_names: tuple[str, ...],
    min_ms: int,
    max_ms: int,
    max_trades: int,
    max_whole: int,
    max_frac: int,
    /,
) -> None: ...
def klines(
    body: bytes,
    symbol: str,
    interval: str,
    market: Market,
    fragments: tuple[bytes, ...],
    step: int,
    anchor: int,
    check_anchor: bool,
    /,
) -> list[Kline] | None: ...
