"""Reconnection pacing (pure: randomness and the clock are injected).

- `Backoff`: capped exponential with full jitter (delay uniform in [0, min(cap, base·2^n)]).
- `TokenBucket`: at most `capacity` connection attempts per `window_s`, refilled continuously;
  Binance allows 300 connection attempts per 5 minutes per IP (binance-spot-api.md §3).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        base_s: float = 0.5,
        cap_s: float = 60.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempts = 0
        self._rand = rand

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return float(self._rand() * ceiling)

    def reset(self) -> None:
        self.attempts = 0


class TokenBucket:
    def __init__(
        self,
        capacity: float = 300,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.rate = capacity / window_s
        self._clock = clock
        self._tokens = float(capacity)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_time(self) -> float:
        """Seconds until a token is available (0: take one now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def try_take(self) -> bool:
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
