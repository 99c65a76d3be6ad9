"""Fault injection for the local cloud's function (never shipped in the function's bundle).

`INGEST_FAIL_FIRST_N=N` with `INGEST_FAIL_STATE=PATH` makes the first N invocations fail
transiently (Pub/Sub redelivers them), counted in PATH under an exclusive lock, so every worker
process and every restart of the function share one counter. The local cloud serves the
function through `localcloud/function_main.py`, which checks this before production's `ingest`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

from klinelake.core.errors import TransientError


class InjectedFailure(TransientError):
    """The test fault hook (INGEST_FAIL_FIRST_N) made this invocation fail."""


class FailFirstN:
    """Fails the first `n` invocations, counted in a file under an exclusive lock."""

    def __init__(self, n: int, state_path: str) -> None:
        self.n = n
        self.path = Path(state_path)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FailFirstN | None:
        n = int(env.get("INGEST_FAIL_FIRST_N") or 0)
        state = env.get("INGEST_FAIL_STATE") or None
        if n and not state:
            raise ValueError("INGEST_FAIL_FIRST_N needs INGEST_FAIL_STATE (a counter file path)")
        return cls(n, state) if n and state else None

    def check(self) -> None:
        if self.n <= 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # read-write without O_APPEND (which would write at the end whatever the seek)
        with os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            text = f.read().strip()
            count = (int(text) if text else 0) + 1
            f.seek(0)  # no truncate: the count only grows, so a reader never sees it empty
            f.write(str(count))
            f.flush()
            os.fsync(f.fileno())
        if count <= self.n:
            raise InjectedFailure(f"injected failure {count} of {self.n} (INGEST_FAIL_FIRST_N)")
