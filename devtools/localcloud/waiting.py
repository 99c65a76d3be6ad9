"""Waiting on a condition with a deadline: the only way tests synchronise with the stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline (an AssertionError, so pytest shows it)."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str | None = None,
    *,
    fatal: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `predicate` until it returns something truthy and return that; raise WaitTimeout
    after `timeout` seconds (the last exception the predicate raised, if any, is chained).
    Exceptions of a `fatal` type end the wait at once (e.g. the awaited process died)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except fatal:
            raise
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            label = what or getattr(predicate, "__name__", "condition")
            raise WaitTimeout(f"{label}: not true after {timeout:.1f}s") from last_exc
        time.sleep(interval)  # a polling interval, not synchronisation
