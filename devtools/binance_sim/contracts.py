"""Futures contracts the simulator lists (binance-futures-api.md §0, §7): pure, no I/O.

`--futures MARKET:SYMBOL[:key=value,...]` on the command line, e.g.

    um:BTCUSDT                                  a USD-M perpetual
    um:BTCUSDT_260327:delivery=2026-03-27T08:00 a USD-M delivery contract settling then
    cm:BTCUSD_PERP                              a COIN-M perpetual
    um:XRPUSDT:onboard=2026-01-02               listed at that simulated time

Keys: `onboard` (listing time; klines exist from its bar on), `delivery` (a dated contract:
status DELIVERED and no kline with open_time >= delivery afterwards). A contract can also be
delisted mid-run (admin route): status `CLOSE` (USD-M) / `DELIVERED` (COIN-M, whose docs list
no CLOSE), klines end the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from binance_sim.market import parse_time
from klinelake.core.markets import PERPETUAL_DELIVERY_DATE, Market, parse_market

# USD-M futures opened in 2019-09; synthetic history starts there unless `onboard` says otherwise.
DEFAULT_ONBOARD_MS = 1_567_296_000_000  # 2019-09-01 00:00 UTC
_QUOTES = ("USDT", "USDC", "BUSD", "USD", "BTC", "ETH", "BNB")


@dataclass
class Contract:
    market: Market
    symbol: str
    onboard_ms: int = DEFAULT_ONBOARD_MS
    delivery_ms: int | None = None  # None: a perpetual
    delisted_ms: int | None = None  # set by the admin `delist` route

    @property
    def perpetual(self) -> bool:
        return self.delivery_ms is None

    @property
    def end_ms(self) -> int | None:
        """The first open time with no kline (delivery or delisting), None while it trades."""
        ends = [t for t in (self.delivery_ms, self.delisted_ms) if t is not None]
        return min(ends) if ends else None

    @property
    def pair(self) -> str:
        head = self.symbol.split("_", 1)[0]
        return head

    def status(self, now_ms: int) -> str:
        """PENDING_TRADING → TRADING → DELIVERED/CLOSE (FS §7 status values)."""
        if now_ms < self.onboard_ms:
            return "PENDING_TRADING"
        end = self.end_ms
        if end is not None and now_ms >= end:
            if self.delisted_ms == end and self.market is Market.UM:
                return "CLOSE"
            return "DELIVERED"
        return "TRADING"

    def contract_type(self) -> str:
        if self.perpetual:
            return "PERPETUAL"
        return "CURRENT_QUARTER"

    def assets(self) -> tuple[str, str, str]:
        """(base, quote, margin) as Binance names them (CM quote is USD, margin the base)."""
        pair = self.pair
        quote = next((q for q in _QUOTES if pair.endswith(q) and len(pair) > len(q)), pair[-4:])
        base = pair[: -len(quote)] or pair
        if self.market is Market.CM:
            return base, "USD", base
        return base, quote, quote

    def info(self, now_ms: int) -> dict[str, object]:
        """One `symbols[]` entry of exchangeInfo: `status` on USD-M, `contractStatus` on COIN-M."""
        base, quote, margin = self.assets()
        status_key = "contractStatus" if self.market is Market.CM else "status"
        out: dict[str, object] = {
            "symbol": self.symbol, "pair": self.pair, "contractType": self.contract_type(),
            "deliveryDate": self.delivery_ms or PERPETUAL_DELIVERY_DATE,
            "onboardDate": self.onboard_ms, status_key: self.status(now_ms),
            "baseAsset": base, "quoteAsset": quote, "marginAsset": margin,
            "pricePrecision": 8, "quantityPrecision": 3, "underlyingType": "COIN",
            "filters": [], "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC"],
        }  # fmt: skip
        if self.market is Market.CM:
            out["contractSize"] = 100 if base == "BTC" else 10
        return out


def parse_contract(text: str) -> Contract:
    """`MARKET:SYMBOL[:key=value,...]` (see the module docstring); ValueError names the problem."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[1]:
        raise ValueError(f"--futures {text!r}: expected MARKET:SYMBOL[:key=value,...]")
    market = parse_market(parts[0])
    if market is Market.SPOT:
        raise ValueError(f"--futures {text!r}: the market must be um or cm")
    contract = Contract(market, parts[1].upper())
    for item in filter(None, (parts[2] if len(parts) == 3 else "").split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in ("onboard", "delivery"):
            raise ValueError(f"--futures {text!r}: unknown option {item!r} (onboard=, delivery=)")
        if key == "onboard":
            contract.onboard_ms = parse_time(value)
        else:
            contract.delivery_ms = parse_time(value)
    return contract


def default_contracts() -> tuple[Contract, ...]:
    """What the simulator lists without `--futures`: two USD-M and one COIN-M perpetual."""
    return (
        Contract(Market.UM, "BTCUSDT"),
        Contract(Market.UM, "ETHUSDT"),
        Contract(Market.CM, "BTCUSD_PERP"),
    )
