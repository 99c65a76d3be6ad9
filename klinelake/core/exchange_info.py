"""exchangeInfo of any market, read into one shape (pure: a parsed JSON body in, values out).

Spot and USD-M name a symbol's state `status`, COIN-M `contractStatus`; futures add `pair`,
`contractType`, `onboardDate`, `deliveryDate` (4133404800000 for perpetuals)
(binance-futures-api.md §7). Sample USD-M entry:

    {"symbol":"BTCUSDT_260327","pair":"BTCUSDT","contractType":"CURRENT_QUARTER",
     "deliveryDate":1774598400000,"onboardDate":1758873600000,"status":"TRADING",
     "baseAsset":"BTC","quoteAsset":"USDT","marginAsset":"USDT",...}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from klinelake.core.markets import PERPETUAL_DELIVERY_DATE, TRADING, Market, spec


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    symbol: str
    status: str
    base: str
    quote: str
    contract_type: str | None = None  # futures only
    onboard_ms: int | None = None
    delivery_ms: int | None = None  # None: spot or a perpetual

    @property
    def trading(self) -> bool:
        return self.status == TRADING

    def delivered_by(self, now_ms: int) -> bool:
        """A dated contract whose delivery has passed: its klines have ended for good."""
        return self.delivery_ms is not None and self.delivery_ms <= now_ms


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def parse_exchange_info(info: Mapping[str, Any], market: Market) -> dict[str, SymbolInfo]:
    """Every well-formed `symbols[]` entry by symbol; malformed entries are skipped."""
    status_key = spec(market).status_key
    out: dict[str, SymbolInfo] = {}
    for entry in info.get("symbols", []):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("symbol"), str):
            continue
        delivery = _int(entry.get("deliveryDate"))
        out[entry["symbol"]] = SymbolInfo(
            symbol=entry["symbol"],
            status=str(entry.get(status_key, "")),
            base=str(entry.get("baseAsset", "")),
            quote=str(entry.get("quoteAsset", "")),
            contract_type=entry.get("contractType") if market is not Market.SPOT else None,
            onboard_ms=_int(entry.get("onboardDate")),
            delivery_ms=None if delivery in (None, PERPETUAL_DELIVERY_DATE) else delivery,
        )
    return out
