"""The weight limiter on a fake wall clock: fixed windows, 429, escalating 418 bans."""

from __future__ import annotations

from binance_sim.ratelimit import WeightLimiter


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_fixed_windows_429_then_escalating_bans() -> None:
    wall = Wall(1_000_040.0)  # 20 s into a minute-aligned window (1_000_020 = 16_667 min)
    lim = WeightLimiter(limit=10, window_s=60, ban_after=2, ban_seconds=(120, 600), wall=wall)
    assert [lim.charge("a", 5).status for _ in range(2)] == [200, 200]
    assert lim.charge("b", 10).status == 200  # per IP
    v = lim.charge("a", 2)
    assert (v.status, v.used, v.retry_after) == (429, 12, 40)  # until the window resets
    assert lim.charge("a", 2).status == 429
    v = lim.charge("a", 2)
    assert (v.status, v.retry_after, v.banned_until_ms) == (418, 120, 1_000_160_000)
    wall.t += 60
    assert lim.charge("a", 1).status == 418  # banned across windows
    wall.t += 61
    assert lim.charge("a", 10).status == 200  # the ban is over, a fresh window
    lim.charge("a", 1), lim.charge("a", 1), lim.charge("a", 1)
    assert lim.charge("a", 1).retry_after == 600  # the second ban is longer
    assert lim.describe_window() == ("MINUTE", 1) and lim.header_suffix() == "1M"
