"""Stall detection by the expected closed klines, not by a fixed message timeout (pure).

Binance sends one `x:true` frame when each kline closes, even for a quiet symbol with no trades.
So for every stream on a connection we know the deadline by which its next closed kline must
arrive: that kline's close time plus a grace. A connection is stalled when a stream's deadline has
passed and no closed kline of any stream arrived on it since then (a single quiet stream on an
otherwise flowing connection, e.g. a halted symbol, is reported as quiet, not as a stall).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from klinelake.intervals import align_down, next_open_time


def expected_close(now_ms: int, interval: str) -> int:
    """Close time of the kline forming at `now_ms` (its x:true frame comes after that)."""
    return next_open_time(align_down(now_ms, interval), interval) - 1


@dataclass
class _Watch:
    interval: str
    deadline: int


class StallTracker:
    """Per connection. `grace_ms` is in server time."""

    def __init__(self, streams: Iterable[tuple[str, str]], now_ms: int, grace_ms: int) -> None:
        self.grace_ms = grace_ms
        self._watch = {
            name: _Watch(interval, expected_close(now_ms, interval) + grace_ms)
            for name, interval in streams
        }
        self.last_closed_at = now_ms  # server time of the latest closed kline on this connection

    def on_closed(self, stream: str, open_time: int, now_ms: int) -> None:
        w = self._watch.get(stream)
        if w is None:
            return
        after = next_open_time(open_time, w.interval)
        w.deadline = max(w.deadline, next_open_time(after, w.interval) - 1 + self.grace_ms)
        # The kline forming now closes no earlier than that; never expect one in the past.
        w.deadline = max(w.deadline, expected_close(now_ms, w.interval) + self.grace_ms)
        self.last_closed_at = max(self.last_closed_at, now_ms)

    def add(self, stream: str, interval: str, now_ms: int) -> None:
        """A stream subscribed on the live connection (a new listing)."""
        self._watch.setdefault(
            stream, _Watch(interval, expected_close(now_ms, interval) + self.grace_ms)
        )

    def remove(self, stream: str) -> None:
        """A retired stream (delivered, delisted): nothing is expected of it any more."""
        self._watch.pop(stream, None)

    def overdue(self, now_ms: int) -> list[str]:
        return [name for name, w in self._watch.items() if w.deadline < now_ms]

    def stalled(self, now_ms: int) -> bool:
        """Some deadline passed and nothing closed arrived on the connection since it passed."""
        earliest = min((w.deadline for w in self._watch.values()), default=None)
        return earliest is not None and earliest < now_ms and self.last_closed_at <= earliest

    def excuse(self, stream: str, now_ms: int) -> None:
        """A quiet stream on a flowing connection: expect its next kline instead."""
        w = self._watch.get(stream)
        if w is not None:
            w.deadline = expected_close(now_ms, w.interval) + self.grace_ms

    def next_check(self) -> int | None:
        """The earliest deadline (server ms): when to look again."""
        return min((w.deadline for w in self._watch.values()), default=None)
