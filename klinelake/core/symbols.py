"""Symbol validation and object naming (DESIGN.md, contract 2; the rule: docs/contracts.md).

The object name must be an injective function of (symbol, interval): two distinct accepted
symbols never share an object, and the name gives the symbol back. Lowercasing alone is not
injective over Unicode (U+212A KELVIN SIGN lowercases to ASCII `k`, so `LIN\u212aUSDT` would
write into LINKUSDT's object), so a symbol is accepted only if

1. it is 1..40 letters (L*) or digits (N*) of any script, or the separators `-` `_` `.`,
   starts with a letter or digit, and holds no `..`;
2. it is NFKC-stable: `NFKC(s) == s` (refuses fullwidth `ＢＴＣ`, the Kelvin sign, ligatures,
   superscripts and every other compatibility form of another spelling);
3. it is case-canonical: `s.lower().upper() == s` (the exchange's uppercase spelling; refuses
   lowercase, `ß`, `ẞ`, Turkish `ı` and `İ`, title-case digraphs, and every letter whose case
   mapping does not come back).

Rule 3 makes `str.upper` a left inverse of `str.lower` on the accepted set, so `lower` is
injective there: `lower(a) == lower(b)` gives `a == upper(lower(a)) == upper(lower(b)) == b`.
The interval is the last `_`-separated token and never contains `_`, so the name is injective
in the pair, and `parse_object_name` recovers both.
"""

from __future__ import annotations

import functools
import unicodedata

from klinelake.core.errors import InvalidData, InvalidSymbol
from klinelake.core.intervals import check_interval
from klinelake.core.markets import Market, check_market_interval, market_of_token, spec, stream_key

MAX_SYMBOL_LEN = 40
# Binance's historic legal range is ^[A-Z0-9-_.]{1,20}$; since 2025-12 symbols may be Unicode.
# So: letters and digits of any script, plus the three ASCII separators Binance has used
# (`_` also separates futures symbols such as BTCUSD_PERP).
_SEPARATORS = frozenset("-_.")
OBJECT_PREFIX = "raw/"
SPOT_MARKET = spec(Market.SPOT).object_token  # "binance" (klinelake.core.markets)
_SUFFIX = ".jsonl"


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
        # format characters such as zero-width joiners, combining marks, punctuation) is refused.
        if cat[0] not in "LN":
            raise InvalidSymbol(
                f"symbol {symbol!r} contains {ch!r} (U+{ord(ch):04X}, {cat}): only letters, "
                "digits and - _ . are allowed"
            )
    if symbol[0] in _SEPARATORS:
        raise InvalidSymbol(f"symbol {symbol!r} must start with a letter or digit")
    normal = unicodedata.normalize("NFKC", symbol)
    if normal != symbol:
        raise InvalidSymbol(
            f"symbol {symbol!r} is not in NFKC form (it is a compatibility spelling of "
            f"{normal!r}: fullwidth, Kelvin sign, ligature...)"
        )
    if symbol.lower().upper() != symbol:
        raise InvalidSymbol(
            f"symbol {symbol!r} must be the uppercase exchange symbol whose lowercase form "
            f"maps back to it ({symbol.lower()!r} uppercases to {symbol.lower().upper()!r})"
        )
    return symbol


@functools.lru_cache(maxsize=65536)  # asked per page and per batch; a pure function of its args
def stream_id(symbol: str, interval: str, market: Market | str = Market.SPOT) -> str:
    """`BTCUSDC@1h` (spot) or `um:BTCUSDT@1m`: the Pub/Sub ordering key, the name in logs/state."""
    check_market_interval(market, check_interval(interval))
    return stream_key(market, validate_symbol(symbol), interval)


def object_name(symbol: str, interval: str, market: Market | str = Market.SPOT) -> str:
    """`raw/binance_btcusdc_1h.jsonl`, `raw/binance-um_btcusdt_1m.jsonl` (DESIGN.md contract 2:
    the first `_`-token names the market, spot's is `binance` as ever)."""
    validate_symbol(symbol)
    check_market_interval(market, check_interval(interval))
    return f"{OBJECT_PREFIX}{spec(market).object_token}_{symbol.lower()}_{interval}{_SUFFIX}"


def parse_object_name(name: str) -> tuple[str, str] | None:
    """(symbol, interval) of a canonical spot lake object name, None for anything else
    (futures objects included: see `parse_stream_object`).

    Canonical means `object_name(*parse_object_name(name)) == name`: `raw/binance_BTCUSDT_1h.jsonl`
    or `raw/binance_btcusdt_1H.jsonl` are strays, not streams.
    """
    parsed = parse_stream_object(name)
    if parsed is None or parsed[0] is not Market.SPOT:
        return None
    return parsed[1], parsed[2]


def parse_stream_object(name: str) -> tuple[Market, str, str] | None:
    """(market, symbol, interval) of a canonical lake object name of any market, else None.

    The market is the first `_`-separated token (`binance`, `binance-um`, `binance-cm`), the
    interval the last, the symbol what lies between (futures symbols contain `_`:
    `raw/binance-cm_btcusd_perp_1h.jsonl` → (cm, BTCUSD_PERP, 1h)).
    """
    if not (name.startswith(OBJECT_PREFIX) and name.endswith(_SUFFIX)):
        return None
    token, sep, stem = name[len(OBJECT_PREFIX) : -len(_SUFFIX)].partition("_")
    market = market_of_token(token)
    lowered, sep2, interval = stem.rpartition("_")
    if market is None or not sep or not sep2:
        return None
    symbol = lowered.upper()
    try:
        canonical = object_name(symbol, interval, market)
    except InvalidData:  # not a symbol, not an interval, or not one of this market
        return None
    return (market, symbol, interval) if canonical == name else None
