"""klinelake.logs: one Cloud Logging JSON object per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from klinelake.logs import log_event, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_log_event_writes_one_json_line_with_fields() -> None:
    out = io.StringIO()
    setup_logging("DEBUG", out)
    try:
        log = logging.getLogger("t.logs")
        log_event(log, "WARNING", "poison", message_id="7", rows=3, calls={"stat": 1})
        log.info("plain", extra={"fields": {"severity": "spoof", "k": b"v"}})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        setup_logging("WARNING")
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(recs) == 3
    first = recs[0]
    assert first["severity"] == "WARNING" and first["message"] == "poison"
    assert first["message_id"] == "7" and first["rows"] == 3 and first["calls"] == {"stat": 1}
    assert first["time"].endswith("Z") and first["logger"] == "t.logs"
    assert recs[1]["severity"] == "INFO"
    assert recs[1]["field_severity"] == "spoof" and recs[1]["k"] == "v"
    assert recs[2]["severity"] == "ERROR" and "RuntimeError: boom" in recs[2]["exception"]


def test_setup_logging_is_idempotent() -> None:
    setup_logging("INFO")
    setup_logging("INFO")
    marked = [h for h in logging.getLogger().handlers if getattr(h, "_klinelake_json_handler", 0)]
    assert len(marked) == 1


def test_unknown_severity_is_refused() -> None:
    with pytest.raises(ValueError):
        log_event(logging.getLogger("t"), "LOUD", "x")
