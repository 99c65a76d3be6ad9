"""Simulated time: `now = start + (monotonic elapsed) * speed`, in integer milliseconds."""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """The simulator's "now". `speed` 3600 makes a simulated hour pass in one real second."""

    def __init__(
        self, start_ms: int, speed: float = 1.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._monotonic = monotonic
        self._base_sim = start_ms
        self._base_real = monotonic()
        self.speed = speed

    def now_ms(self) -> int:
        return self._base_sim + int((self._monotonic() - self._base_real) * self.speed * 1000)

    def set_speed(self, speed: float) -> None:
        """Change speed from now on, without a jump in simulated time."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._base_sim = self.now_ms()
        self._base_real = self._monotonic()
        self.speed = speed

    def real_seconds_until(self, sim_ms: int) -> float:
        """Real seconds until the simulated instant `sim_ms` (0 if it has passed)."""
        return max(0.0, (sim_ms - self.now_ms()) / 1000 / self.speed)
