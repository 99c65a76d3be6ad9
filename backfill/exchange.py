"""What the backfill asks exchangeInfo before planning: are the symbols listed (unknown ones
are bad input), and which request-weight limit does the server announce.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backfill.settings import BadInput
from klinelake.binance.rest import BinanceRest, NoAnswer
from klinelake.core.errors import TransientError
from klinelake.core.publish import (
    UnlistedSymbols,
    check_listed,
)


async def check_symbols(rest: BinanceRest, symbols: Sequence[str]) -> dict[str, Any]:
    """exchangeInfo for all symbols (`klinelake.core.publish.check_listed`); unknown ones are bad
    input."""
    try:
        return await check_listed(rest, symbols, rest.market)
    except TransientError as exc:  # the client's retries are spent: nothing can be fetched
        raise NoAnswer(rest.base_url, f"{rest.max_attempts} attempts", repr(exc)) from exc
    except UnlistedSymbols as exc:
        raise BadInput(f"unknown symbol {exc}") from None


_UNIT_MS = {"SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


def request_weight_limit(info: dict[str, Any]) -> tuple[int, int] | None:
    """(limit, window ms) of the REQUEST_WEIGHT rate limit exchangeInfo announces, e.g.
    `{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":6000}`."""
    for entry in info.get("rateLimits", []):
        if not isinstance(entry, dict) or entry.get("rateLimitType") != "REQUEST_WEIGHT":
            continue
        limit, num, unit = entry.get("limit"), entry.get("intervalNum"), entry.get("interval")
        if isinstance(limit, int) and isinstance(num, int) and unit in _UNIT_MS:
            return limit, num * _UNIT_MS[unit]
    return None
