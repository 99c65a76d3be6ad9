"""Per-IP REST request weight in fixed windows, 429 then escalating 418 bans (fact sheet §8).

The window is fixed (aligned to multiples of `window_s` real seconds), as a 2020 report
observed (JKorf/Binance.Net#288). Over the limit, a request gets 429 with `Retry-After` = seconds
until the window resets; after `ban_after` such 429s in one window, the next over-limit request
bans the IP: 418 with `Retry-After` = seconds until the ban ends, lengths escalating along
`ban_seconds` (2 min ... 3 days by default) per repeat offence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from klinelake.binance.weight import WEIGHT_LIMIT_1M
from klinelake.core.binance_limits import WEIGHT_WINDOW_S

DEFAULT_BAN_SECONDS: tuple[float, ...] = (120, 600, 3600, 21600, 86400, 259200)


@dataclass
class _IpState:
    window: int = -1
    used: int = 0
    rejections: int = 0  # 429s answered in this window
    banned_until: float = 0.0  # wall-clock seconds
    bans: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """`status` 200 (go ahead), 429 or 418; `used` is the weight to report in the headers."""

    status: int
    used: int
    retry_after: int = 0
    banned_until_ms: int = 0


@dataclass
class WeightLimiter:
    limit: int = WEIGHT_LIMIT_1M
    window_s: float = WEIGHT_WINDOW_S
    ban_after: int = 3
    ban_seconds: tuple[float, ...] = DEFAULT_BAN_SECONDS
    wall: Callable[[], float] = time.time
    _ips: dict[str, _IpState] = field(default_factory=dict)

    def _state(self, ip: str, now: float) -> _IpState:
        st = self._ips.setdefault(ip, _IpState())
        window = int(now // self.window_s)
        if window != st.window:
            st.window, st.used, st.rejections = window, 0, 0
        return st

    def used(self, ip: str) -> int:
        return self._state(ip, self.wall()).used

    def ban(self, ip: str, seconds: float) -> Verdict:
        """Ban `ip` now for `seconds` (the admin `rest_418` fault)."""
        now = self.wall()
        st = self._state(ip, now)
        st.banned_until = now + seconds
        return self._banned(st, now)

    def _banned(self, st: _IpState, now: float) -> Verdict:
        return Verdict(418, st.used, math.ceil(st.banned_until - now), int(st.banned_until * 1000))

    def banned(self, ip: str) -> Verdict | None:
        now = self.wall()
        st = self._state(ip, now)
        return self._banned(st, now) if now < st.banned_until else None

    def charge(self, ip: str, weight: int) -> Verdict:
        """Count `weight` for `ip` and say whether the request may proceed."""
        now = self.wall()
        st = self._state(ip, now)
        if now < st.banned_until:
            return self._banned(st, now)
        st.used += weight
        if st.used <= self.limit:
            return Verdict(200, st.used)
        if st.rejections >= self.ban_after:
            length = self.ban_seconds[min(st.bans, len(self.ban_seconds) - 1)]
            st.bans += 1
            st.banned_until = now + length
            return self._banned(st, now)
        st.rejections += 1
        return Verdict(429, st.used, self.seconds_to_reset())

    def seconds_to_reset(self) -> int:
        """Whole seconds until the current fixed window ends (at least 1): a 429's Retry-After."""
        now = self.wall()
        return max(1, math.ceil((int(now // self.window_s) + 1) * self.window_s - now))

    def describe_window(self) -> tuple[str, int]:
        """(`interval`, `intervalNum`) for exchangeInfo's rateLimits and the -1003 message."""
        s = int(self.window_s)
        for unit, size in (("DAY", 86400), ("HOUR", 3600), ("MINUTE", 60)):
            if s >= size and s % size == 0:
                return unit, s // size
        return "SECOND", max(1, s)

    def header_suffix(self) -> str:
        """`1M` for X-MBX-USED-WEIGHT-1M (interval letters S, M, H, D)."""
        unit, num = self.describe_window()
        return f"{num}{unit[0]}"
