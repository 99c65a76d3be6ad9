from __future__ import annotations

from collections.abc import Iterator

import pytest

from localcloud import Stack


@pytest.fixture(scope="module")
def e2e_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the fault suite restarts Pub/Sub and the function, and its logs and
    dead letters must not mix with the other tests' (nor theirs with its)."""
    running = Stack(tmp_path_factory.mktemp("e2e-stack"), project="e2e-project").start()
    try:
        yield running
    finally:
        running.stop()
