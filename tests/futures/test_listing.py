"""Symbol sets and listing changes (pure): the selector grammar, exchangeInfo per market, and
which streams to add and retire."""

from __future__ import annotations

import pytest

from klinelake.core.exchange_info import SymbolInfo, parse_exchange_info
from klinelake.core.markets import PERPETUAL_DELIVERY_DATE, Market
from klinelake.core.selector import SymbolSet, parse_symbol_set
from streamer.listing import Retirement, next_delivery, plan_changes

NOW = 1_767_225_600_000


def info(symbol: str, status: str = "TRADING", quote: str = "USDT", **kw: object) -> SymbolInfo:
    return SymbolInfo(symbol, status, symbol.removesuffix(quote), quote, **kw)  # type: ignore[arg-type]


def test_symbol_set_forms() -> None:
    assert parse_symbol_set("BTCUSDT, ethusdt") == SymbolSet(None, ("BTCUSDT", "ETHUSDT"))
    assert parse_symbol_set("um:BTCUSDT,BTCUSDT_260327") == SymbolSet(
        Market.UM, ("BTCUSDT", "BTCUSDT_260327")
    )
    sel = parse_symbol_set("um:quote=USDT|usdc,contract=PERPETUAL")
    assert sel.market is Market.UM and sel.is_selector
    assert dict(sel.terms) == {"quote": {"USDT", "USDC"}, "contract": {"PERPETUAL"}}
    assert parse_symbol_set("quote=USDC").market is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "at least one symbol"),
        ("um:", "at least one symbol"),
        ("xx:BTCUSDT", "unknown market"),
        ("quote=USDT,BTCUSDT", "not a selector term"),
        ("colour=red", "not a selector term"),
        ("quote=", "not a selector term"),
        ("quote=USDT,quote=USDC", "given twice"),
        ("BTC/USDT", "contains"),
    ],
)
def test_symbol_set_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_symbol_set(text)


def test_exchange_info_per_market() -> None:
    um = parse_exchange_info({"symbols": [
        {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
         "contractType": "PERPETUAL", "deliveryDate": PERPETUAL_DELIVERY_DATE,
         "onboardDate": 1569398400000},
        {"symbol": "BTCUSDT_260327", "status": "TRADING", "baseAsset": "BTC",
         "quoteAsset": "USDT", "contractType": "CURRENT_QUARTER", "deliveryDate": NOW},
        {"no": "symbol"},
    ]}, Market.UM)  # fmt: skip
    assert set(um) == {"BTCUSDT", "BTCUSDT_260327"}
    assert um["BTCUSDT"].delivery_ms is None and um["BTCUSDT"].onboard_ms == 1569398400000
    assert um["BTCUSDT_260327"].delivered_by(NOW) and not um["BTCUSDT"].delivered_by(NOW)
    cm = parse_exchange_info(
        {"symbols": [{"symbol": "BTCUSD_PERP", "contractStatus": "TRADING", "status": "IGNORED"}]},
        Market.CM,
    )
    assert cm["BTCUSD_PERP"].trading  # COIN-M says contractStatus (FS §7)
    spot = parse_exchange_info({"symbols": [{"symbol": "A", "status": "BREAK"}]}, Market.SPOT)
    assert not spot["A"].trading and spot["A"].contract_type is None


def test_plan_changes_selector() -> None:
    sel = parse_symbol_set("um:quote=USDT")
    listing = {
        "AUSDT": info("AUSDT"),
        "BUSDT": info("BUSDT", status="CLOSE"),  # delisted
        "CUSDC": info("CUSDC", quote="USDC"),  # not selected
        "DUSDT": info("DUSDT"),  # new
        "EUSDT": info("EUSDT", delivery_ms=NOW - 1),  # settled
        "FUSDT": info("FUSDT", delivery_ms=NOW + 60_000),  # settles soon
    }
    add, gone = plan_changes(sel, listing, {"AUSDT", "BUSDT", "EUSDT", "FUSDT", "GUSDT"}, NOW)
    assert add == ["DUSDT"]
    assert gone == [
        Retirement("BUSDT", "CLOSE", NOW),
        Retirement("EUSDT", "TRADING", NOW - 1),  # the delivery time, whatever the status says
        Retirement("GUSDT", "not listed", NOW),
    ]
    assert next_delivery(listing, {"AUSDT", "FUSDT"}, NOW) == NOW + 60_000
    assert next_delivery(listing, {"AUSDT"}, NOW) is None


def test_plan_changes_explicit() -> None:
    explicit = parse_symbol_set("AUSDT,BUSDT")
    listing = {"AUSDT": info("AUSDT", status="BREAK"), "BUSDT": info("BUSDT")}
    add, gone = plan_changes(explicit, listing, {"AUSDT", "BUSDT"}, NOW)
    assert add == [] and gone == [Retirement("AUSDT", "BREAK", NOW)]
    listing["AUSDT"] = info("AUSDT")  # back from BREAK: streamed again
    add, gone = plan_changes(explicit, listing, {"BUSDT"}, NOW)
    assert add == ["AUSDT"] and gone == []


def test_stall_tracker_follows_subscription_changes() -> None:
    from streamer.stall import StallTracker

    t = StallTracker([("um:A@1m", "1m")], NOW, 5_000)
    t.add("um:B@1m", "1m", NOW)
    late = NOW + 10 * 60_000
    assert sorted(t.verdict(late).silent) == ["um:A@1m", "um:B@1m"]
    t.remove("um:B@1m")  # retired: nothing is expected of it any more
    assert not t.watches("um:B@1m")
    t.on_closed("um:A@1m", late - 60_000, late)
    assert t.verdict(late).silent == () and not t.verdict(late).dead
