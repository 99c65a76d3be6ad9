"""The per-stream flush window (pure): when a stream's spooled closed klines are sent.

With a window of W seconds (server time) a closed kline is held in the spool until W after the
oldest held kline *closed*, or until the held klines could fill one contract batch, whichever
comes first; then everything held goes out as one message. So no kline lands more than W (plus
the publish time) after its close, and a stream sends at most one message per W (docs/cost.md).

The due time depends only on the oldest held kline, not on when this process saw it: after a
crash or restart, klines whose window has passed are sent at once and the others keep their
deadline; repaired gaps (old klines) are due at once. W = 0 sends every kline as it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from klinelake.core.contract import MAX_ROWS
from klinelake.core.intervals import DAY, interval_ms


@dataclass(frozen=True, slots=True)
class FlushWindow:
    window_ms: int = 0
    max_rows: int = MAX_ROWS

    def __post_init__(self) -> None:
        if self.window_ms < 0:
            raise ValueError(f"flush window must be >= 0 ms, got {self.window_ms}")
        if not 1 <= self.max_rows <= MAX_ROWS:
            raise ValueError(f"max_rows must be 1..{MAX_ROWS}, got {self.max_rows}")

    @classmethod
    def of_seconds(cls, seconds: float, max_rows: int = MAX_ROWS) -> FlushWindow:
        return cls(round(seconds * 1000), max_rows)

    def due_at(self, first_open_time: int, first_close_time: int, interval: str) -> int:
        """Server ms at which held klines starting with this one must be sent: W after it
        closed, or when `max_rows` klines of the stream can have closed (consecutive open_times
        from the first: there can be no more than that many by then)."""
        shortest = 28 * DAY if interval == "1M" else interval_ms(interval)  # (1M varies)
        full = first_open_time + self.max_rows * shortest - 1
        return min(first_close_time + self.window_ms, full)

    def wait_ms(
        self, *, now_ms: int, first_open_time: int, first_close_time: int, interval: str,
        held: int, draining: bool = False,
    ) -> int:  # fmt: skip
        """0: send now; else how long (server ms) the held klines may still wait."""
        if self.window_ms == 0 or draining or held >= self.max_rows:
            return 0
        return max(0, self.due_at(first_open_time, first_close_time, interval) - now_ms)
