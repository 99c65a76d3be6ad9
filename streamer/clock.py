"""The server's clock as the streamer estimates it (pure: the real clock is injected).

Server time runs `speed` times faster than real time (1 in production; the simulator's speed in
tests, so that deadlines in server time work at accelerated time). It is anchored on REST
`/api/v3/time` and nudged forward by the event times (`E`) of frames, never backward by them.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ServerClock:
    def __init__(
        self, speed: float = 1.0, real: Callable[[], float] = time.monotonic, now_ms: int = 0
    ) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self._real = real
        self._anchor_server = now_ms or int(time.time() * 1000)
        self._anchor_real = real()

    def now_ms(self) -> int:
        return self._anchor_server + int((self._real() - self._anchor_real) * 1000 * self.speed)

    def sync(self, server_ms: int) -> None:
        """Set the clock from an authoritative reading (REST server time)."""
        self._anchor_server = server_ms
        self._anchor_real = self._real()

    def observe(self, event_ms: int) -> None:
        """An event stamped `event_ms` has happened, so the server's time is at least that."""
        if event_ms > self.now_ms():
            self.sync(event_ms)

    def real_seconds(self, server_ms: float) -> float:
        """How long `server_ms` of server time lasts in real seconds."""
        return server_ms / 1000 / self.speed
