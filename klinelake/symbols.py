"""Symbol validation and object naming (DESIGN.md, contract 2)."""

from __future__ import annotations

import unicodedata

from klinelake.errors import InvalidSymbol
from klinelake.intervals import check_interval

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


def stream_id(symbol: str, interval: str) -> str:
    """`BTCUSDC@1h`: the Pub/Sub ordering key and the name used in logs and state."""
    return f"{validate_symbol(symbol)}@{check_interval(interval)}"


def object_name(symbol: str, interval: str) -> str:
    """`raw/binance_btcusdc_1h.jsonl`."""
    validate_symbol(symbol)
    check_interval(interval)
    return f"{OBJECT_PREFIX}binance_{symbol.lower()}_{interval}.jsonl"


def parse_object_name(name: str) -> tuple[str, str] | None:
    """(lowercased symbol, interval) for a lake object name, None for anything else."""
    if not (name.startswith(OBJECT_PREFIX + "binance_") and name.endswith(".jsonl")):
        return None
    stem = name[len(OBJECT_PREFIX + "binance_") : -len(".jsonl")]
    symbol, sep, interval = stem.rpartition("_")
    if not sep or not symbol:
        return None
    try:
        check_interval(interval)
        validate_symbol(symbol)
    except Exception:
        return None
    return symbol, interval
