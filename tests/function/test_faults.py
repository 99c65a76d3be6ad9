"""The local cloud's fault hook (INGEST_FAIL_FIRST_N) lives in its own entry point, in front of
production's `ingest`: production code carries none of it (issue 14)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from klinelake.backends.lake import read_object
from klinelake.backends.local_store import LocalStore
from klinelake.core.symbols import object_name
from localcloud.faults import FailFirstN, InjectedFailure
from tests.function.helpers import klines, lines, message, push_event

REPO = Path(__file__).resolve().parents[2]


def test_production_carries_no_fault_hook() -> None:
    for source in (REPO / "ingest_function").glob("*.py"):
        text = source.read_text()
        assert "INGEST_FAIL" not in text and "FailFirstN" not in text, source


def test_the_local_entry_point_fails_exactly_n_invocations_then_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest_function import main as production
    from localcloud import function_main

    monkeypatch.setenv("LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("INGEST_FAIL_FIRST_N", "2")
    monkeypatch.setenv("INGEST_FAIL_STATE", str(tmp_path / "fails"))
    monkeypatch.delenv("DEAD_LETTER_TOPIC", raising=False)
    function_main._fault.cache_clear()
    production._build_handler.cache_clear()
    rows = klines("FAULT", 3)
    data, attrs, _ = message(rows)
    event = CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub/t"},
        push_event(data, attrs, "m1"),
    )
    try:
        for _ in range(2):
            with pytest.raises(InjectedFailure):
                function_main.ingest(event)
        function_main.ingest(event)
    finally:
        function_main._fault.cache_clear()
        production._build_handler.cache_clear()
    store = LocalStore(tmp_path / "lake")
    assert read_object(store, object_name("FAULT", "1h")) == lines(rows)
    assert (tmp_path / "fails").read_text() == "3"


def test_fail_first_n_needs_its_state_file() -> None:
    with pytest.raises(ValueError):
        FailFirstN.from_env({"INGEST_FAIL_FIRST_N": "3"})
    assert FailFirstN.from_env({}) is None


def _hammer(path: str, out: Any) -> None:
    fault = FailFirstN(7, path)
    failures = 0
    for _ in range(10):
        try:
            fault.check()
        except InjectedFailure:
            failures += 1
    out.put(failures)


def test_fail_first_n_counter_is_shared_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path / "n"), out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sum(out.get(timeout=10) for _ in procs) == 7
    assert (tmp_path / "n").read_text() == "20"
