from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localcloud import Stack
from tests.function.helpers import STAGED_MERGES
from tests.streamer.tinyfs import umount, why_no_mount


@pytest.fixture(scope="module")
def e2e_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the fault suite restarts Pub/Sub and the function, and its logs and
        dead letters must not mix with the other tests' (nor theirs with its). Its function stages
    every merge above 8 KiB over several deliveries (issue 12 item 6)."""
    running = Stack(tmp_path_factory.mktemp("e2e-stack"), project="e2e-project")
    running.state.function_env = dict(STAGED_MERGES)  # every merge in the suite is staged
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def streamer_state(tmp_path: Path) -> Iterator[tuple[Path, str | None]]:
    """The streamer's state directory: a 16 MiB tmpfs when we may mount one (so the suite can
    fill it to the last byte), else a plain directory and the reason the disk-full fault is
    skipped."""
    state = tmp_path / "state"
    reason = why_no_mount(state, "size=16m,mode=0755")
    try:
        yield state, reason
    finally:
        if reason is None:
            umount(state)
