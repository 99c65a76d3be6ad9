"""Structured JSON logs that Cloud Logging reads: one JSON object per line.

Cloud Logging (Cloud Run functions, the Ops Agent on a VM) parses a JSON line on stdout/stderr
into a structured entry: `severity` sets the level, `message` the summary, `time` the timestamp,
and every other key lands in `jsonPayload` where it can be filtered
(https://cloud.google.com/logging/docs/structured-logging#special-payload-fields).

    setup_logging("INFO")
    log_event(logger, "INFO", "batch written", message_id="1", stream="BTCUSDC@1h", rows=1)

emits

    {"severity":"INFO","message":"batch written","time":"2026-01-01T00:00:00.000000Z",
     "logger":"ingest","message_id":"1","stream":"BTCUSDC@1h","rows":1}

Structured fields can also be passed as `logger.info("...", extra={"fields": {...}})`.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

# Python level name -> Cloud Logging LogSeverity
_SEVERITY = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}
_RESERVED = frozenset({"severity", "message", "time", "logger"})
_HANDLER_MARK = "_klinelake_json_handler"


def _default(value: object) -> object:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


class JsonFormatter(logging.Formatter):
    """Formats a record as one compact JSON line for Cloud Logging."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, record.levelname),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                name = str(key)
                entry[f"field_{name}" if name in _RESERVED else name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        line: bytes = orjson.dumps(entry, default=_default, option=orjson.OPT_NON_STR_KEYS)
        return line.decode("utf-8")


def setup_logging(level: int | str = "INFO", stream: IO[str] | None = None) -> None:
    """Send every log record to `stream` (stderr by default) as JSON lines. Idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


def log_event(logger: logging.Logger, severity: int | str, message: str, **fields: object) -> None:
    """Log `message` with structured `fields` (they become keys of the JSON line)."""
    level = severity if isinstance(severity, int) else logging.getLevelName(severity.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown severity {severity!r}")
    logger.log(level, message, extra={"fields": fields})
