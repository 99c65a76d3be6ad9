"""Symbol sets: an explicit list, or a selector resolved against exchangeInfo (pure).

`--symbols` takes either form, optionally prefixed by the market:

    BTCUSDT,ETHUSDT                      explicit (spot, or the --market given)
    um:BTCUSDT,BTCUSDT_260327            explicit, USD-M
    um:quote=USDT                        every USD-M symbol quoted in USDT that is TRADING
    quote=USDC,status=TRADING            every spot USDC pair that is TRADING
    cm:contract=PERPETUAL                every COIN-M perpetual that is TRADING
    um:quote=USDT|USDC,contract=PERPETUAL

A selector is comma-separated `key=value` terms (all must hold; `|` separates alternatives):
`quote`, `base`, `status` (default `TRADING`; a selector only ever follows TRADING symbols
unless it names another status), `contract` (futures `contractType`), `symbol`. Values are
matched exactly (case-insensitively for the asset names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from klinelake.core.errors import InvalidData
from klinelake.core.exchange_info import SymbolInfo
from klinelake.core.markets import TRADING, Market, parse_market
from klinelake.core.symbols import validate_symbol

KEYS = ("quote", "base", "status", "contract", "symbol")


@dataclass(frozen=True, slots=True)
class SymbolSet:
    """What `--symbols` asked for: explicit symbols, or a selector's terms."""

    market: Market | None  # None: not named (the --market flag decides)
    symbols: tuple[str, ...] = ()
    terms: tuple[tuple[str, frozenset[str]], ...] = ()

    @property
    def is_selector(self) -> bool:
        return bool(self.terms)

    def matches(self, info: SymbolInfo) -> bool:
        if not self.is_selector:
            return info.symbol in self.symbols
        values = {
            "quote": info.quote.upper(),
            "base": info.base.upper(),
            "status": info.status,
            "contract": info.contract_type or "",
            "symbol": info.symbol,
        }
        terms = dict(self.terms)
        terms.setdefault("status", frozenset({TRADING}))
        return all(values[key] in allowed for key, allowed in terms.items())

    def resolve(self, listing: Mapping[str, SymbolInfo]) -> list[str]:
        """The symbols of `listing` this set selects, sorted (explicit: in the order given)."""
        if not self.is_selector:
            return list(self.symbols)
        return sorted(s for s, info in listing.items() if self.matches(info))


def parse_symbol_set(text: str) -> SymbolSet:
    """`--symbols` text → `SymbolSet`; ValueError with one clear line for bad input."""
    text = text.strip()
    market: Market | None = None
    head, colon, rest = text.partition(":")
    if colon and "=" not in head and "," not in head:
        market, text = parse_market(head.lower()), rest
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise ValueError("--symbols: at least one symbol (or a selector) is needed")
    if not any("=" in p for p in parts):
        try:
            return SymbolSet(market, tuple(validate_symbol(p.upper()) for p in parts))
        except InvalidData as exc:
            raise ValueError(f"--symbols: {exc}") from None
    terms: dict[str, frozenset[str]] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in KEYS or not value.strip():
            raise ValueError(
                f"--symbols: {part!r} is not a selector term KEY=VALUE with KEY one of "
                f"{', '.join(KEYS)} (mixing symbols and terms is not allowed)"
            )
        if key in terms:
            raise ValueError(f"--symbols: {key} given twice (use {key}=A|B for alternatives)")
        values = [v.strip() for v in value.split("|") if v.strip()]
        upper = key != "symbol"
        terms[key] = frozenset(v.upper() if upper else v for v in values)
    return SymbolSet(market, (), tuple(sorted(terms.items())))
