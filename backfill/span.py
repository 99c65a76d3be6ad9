"""Which open times a stream's run covers (pure): the requested range resolved against the
server's clock (closed klines only), clamped to a futures contract's listing.
"""

from __future__ import annotations

from backfill.plan import (
    first_open_at_or_after,
)
from backfill.settings import DEFAULT_DAYS, BadInput, Settings, iso
from klinelake.core.exchange_info import SymbolInfo
from klinelake.core.intervals import (
    DAY,
    Gap,
    align_down,
    last_closed_open_time,
)


def resolve_range(settings: Settings, interval: str, now_ms: int) -> tuple[int, int]:
    """(first, last) open times for one interval: closed klines only (by the server's time)."""
    if settings.start_ms is not None and settings.start_ms > now_ms:
        raise BadInput(
            f"range in the future: start {iso(settings.start_ms)} is after the server time "
            f"{iso(now_ms)}"
        )
    end = settings.end_ms
    if end is None:
        end = now_ms
        if settings.start_ms is not None and settings.days is not None:
            end = min(now_ms, settings.start_ms + settings.days * DAY - 1)
    start = settings.start_ms
    if start is None:
        start = end - (settings.days or DEFAULT_DAYS) * DAY + 1
    last = min(align_down(end, interval), last_closed_open_time(now_ms, interval))
    return first_open_at_or_after(start, interval), last


def clamp_to_listing(first: int, last: int, interval: str, info: SymbolInfo | None) -> Gap:
    """Futures: nothing before the onboard bar, nothing from a passed delivery on (a settled
    contract's stream has ended; its absence after delivery is not a hole)."""
    if info is None:
        return first, last
    if info.onboard_ms is not None:
        first = max(first, align_down(info.onboard_ms, interval))
    if info.delivery_ms is not None:
        last = min(last, align_down(info.delivery_ms - 1, interval))
    return first, last
