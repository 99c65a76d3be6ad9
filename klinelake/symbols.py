"""Symbol validation and object naming (DESIGN.md, contract 2)."""

from __future__ import annotations

import unicodedata

from klinelake.errors import InvalidSymbol
from klinelake.intervals import check_interval
from klinelake.markets import (
    Market,
    check_market_interval,
    market_of_token,
    parse_market,
    spec,
    stream_key,
)

MAX_SYMBOL_LEN = 40
# Binance's historic legal range is ^[A-Z0-9-_.]{1,20}$; since 2025-12 symbols may be Unicode.
# So: letters and digits of any script, plus the three ASCII separators Binance has used.
_SEPARATORS = frozenset("-_.")
OBJECT_PREFIX = "raw/"


def validate_symbol(symbol: object) -> str:
    """Return `symbol` unchanged if it may become part of an object name, else raise."""
    if not isinstance(symbol, str):
        raise InvalidSymbol(f"symbol must be a string, got {type(symbol).__name__}")
    if not symbol:
        raise InvalidSymbol("symbol is empty")
    if len(symbol) > MAX_SYMBOL_LEN:
        raise InvalidSymbol(f"symbol {symbol[:MAX_SYMBOL_LEN]!r}... longer than {MAX_SYMBOL_LEN}")
    if ".." in symbol:
        raise InvalidSymbol(f"symbol {symbol!r} contains '..'")
    for ch in symbol:
        if ch in _SEPARATORS:
            continue
        cat = unicodedata.category(ch)
        # L* letters, N* digits of any script; everything else (/, \, spaces, controls,
        # format characters such as zero-width joiners, punctuation) is refused.
        if cat[0] not in "LN":
            raise InvalidSymbol(
                f"symbol {symbol!r} contains {ch!r} (U+{ord(ch):04X}, {cat}): only letters, "
                "digits and - _ . are allowed"
            )
    if symbol[0] in _SEPARATORS:
        raise InvalidSymbol(f"symbol {symbol!r} must start with a letter or digit")
    return symbol


def stream_id(symbol: str, interval: str, market: Market | str = Market.SPOT) -> str:
    """`BTCUSDC@1h` (spot) or `um:BTCUSDT@1m`: the Pub/Sub ordering key, the name in logs/state."""
    check_market_interval(market, check_interval(interval))
    return stream_key(market, validate_symbol(symbol), interval)


def object_name(symbol: str, interval: str, market: Market | str = Market.SPOT) -> str:
    """`raw/binance_btcusdc_1h.jsonl`, `raw/binance-um_btcusdt_1m.jsonl` (DESIGN.md contract 2)."""
    validate_symbol(symbol)
    check_market_interval(market, check_interval(interval))
    return f"{OBJECT_PREFIX}{spec(market).object_token}_{symbol.lower()}_{interval}.jsonl"


def parse_object_name(name: str) -> tuple[str, str] | None:
    """(lowercased symbol, interval) for a spot lake object name, None for anything else
    (futures objects included: see `parse_stream_object`)."""
    parsed = parse_stream_object(name)
    if parsed is None or parsed[0] is not Market.SPOT:
        return None
    return parsed[1], parsed[2]


def parse_stream_object(name: str) -> tuple[Market, str, str] | None:
    """(market, lowercased symbol, interval) for any market's lake object name, else None.

    The market is the first `_`-separated token, the interval the last, the symbol what lies
    between (futures symbols contain `_`: `raw/binance-cm_btcusd_perp_1h.jsonl`).
    """
    if not (name.startswith(OBJECT_PREFIX) and name.endswith(".jsonl")):
        return None
    token, sep, stem = name[len(OBJECT_PREFIX) : -len(".jsonl")].partition("_")
    market = market_of_token(token)
    symbol, sep2, interval = stem.rpartition("_")
    if market is None or not sep or not sep2 or not symbol:
        return None
    try:
        check_market_interval(market, check_interval(interval))
        validate_symbol(symbol)
    except Exception:
        return None
    return parse_market(market), symbol, interval
