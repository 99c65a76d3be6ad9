"""Shared session fixtures.

`stack`: one local cloud (fake-gcs-server, Pub/Sub emulator, the ingest function under
functions-framework) for the whole session, started the first time a test asks for it and
stopped, by PID, at the end. Tests that use it are marked `@pytest.mark.stack`.

`wait_for(predicate, timeout, interval)`: poll a condition with a deadline (never sleep to
synchronise). Import it as `from localcloud import wait_for`, or take the `wait_for` fixture.

Hypothesis runs derandomized (the "seeded" profile below).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Every property test is reproducible: the same examples on every run and every machine (a
# failure found once is kept with @example, not left to chance).
settings.register_profile("seeded", derandomize=True)
settings.load_profile("seeded")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(ROOT))

from localcloud import Stack, wait_for  # noqa: E402

__all__ = ["stack", "wait_for"]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The session's local cloud; see `localcloud.Stack` for its helpers."""
    running = Stack(tmp_path_factory.mktemp("stack"), project="test-project").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for
