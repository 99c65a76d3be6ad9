"""What the ingest function does with one Pub/Sub CloudEvent, without any server.

    event data ──unwrap──> ReceivedMessage ──decode──> KlineBatch ──LakeWriter──> WriteResult
         │                        │                        │
         └── InvalidData (poison) ┴────────────────────────┘──> WARNING log, dead-letter copy, ack
                                       anything else ──> ERROR log, re-raise (Pub/Sub redelivers)

`main.py` only builds an `IngestHandler` from the environment and calls `handle()`; tests
build one over a LocalStore and a list-appending dead-letter callable.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klinelake.contract import (
    DL_TRUNCATED,
    ReceivedMessage,
    dead_letter_copy,
    decode_received,
    unwrap_pubsub_event,
)
from klinelake.errors import InvalidData, TransientError
from klinelake.lake import open_store
from klinelake.logs import log_event
from klinelake.storage import ObjectStore
from klinelake.writer import LakeWriter, WriteResult

DeadLetterSink = Callable[[bytes, dict[str, str]], None]
"""Publishes (data, attributes) to the dead-letter topic and returns once Pub/Sub accepted it;
raises if it did not (the message is then redelivered, never lost)."""

logger = logging.getLogger("ingest")


@dataclass(frozen=True, slots=True)
class IngestConfig:
    lake_uri: str
    dead_letter_topic: str | None
    project: str | None
    fail_first_n: int = 0
    fail_state: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IngestConfig:
        fail_n = int(env.get("INGEST_FAIL_FIRST_N") or 0)
        fail_state = env.get("INGEST_FAIL_STATE") or None
        if fail_n and not fail_state:
            raise ValueError("INGEST_FAIL_FIRST_N needs INGEST_FAIL_STATE (a counter file path)")
        return cls(
            lake_uri=env.get("LAKE_URI") or "./lake",
            dead_letter_topic=env.get("DEAD_LETTER_TOPIC") or None,
            project=env.get("GOOGLE_CLOUD_PROJECT") or None,
            fail_first_n=fail_n,
            fail_state=fail_state,
        )


class InjectedFailure(TransientError):
    """The test fault hook (INGEST_FAIL_FIRST_N) made this invocation fail."""


class FailFirstN:
    """Fails the first `n` invocations, counted in a file under an exclusive lock so that every
    worker process (and every restart of the function) shares one counter."""

    def __init__(self, n: int, state_path: str) -> None:
        self.n = n
        self.path = Path(state_path)

    def check(self) -> None:
        if self.n <= 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            text = f.read().strip()
            count = (int(text) if text else 0) + 1
            f.seek(0)
            f.truncate()
            f.write(str(count))
            f.flush()
            os.fsync(f.fileno())
        if count <= self.n:
            raise InjectedFailure(f"injected failure {count} of {self.n} (INGEST_FAIL_FIRST_N)")


class PubsubDeadLetter:
    """DeadLetterSink over a google-cloud-pubsub PublisherClient, created at first use (the
    client honours PUBSUB_EMULATOR_HOST)."""

    def __init__(self, topic: str, timeout_s: float = 60.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._client: Any = None
        self._lock = threading.Lock()

    def _publisher(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import pubsub_v1

                self._client = pubsub_v1.PublisherClient()
            return self._client

    def __call__(self, data: bytes, attributes: dict[str, str]) -> None:
        future = self._publisher().publish(self.topic, data, **attributes)
        future.result(timeout=self.timeout_s)


class IngestHandler:
    def __init__(
        self,
        store: ObjectStore,
        dead_letter: DeadLetterSink | None,
        *,
        fault: FailFirstN | None = None,
        log: logging.Logger = logger,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.writer = LakeWriter(store)
        self.dead_letter = dead_letter
        self.fault = fault
        self.log = log
        self.clock = clock

    @classmethod
    def from_config(cls, config: IngestConfig) -> IngestHandler:
        dead_letter = (
            PubsubDeadLetter(config.dead_letter_topic) if config.dead_letter_topic else None
        )
        fault = (
            FailFirstN(config.fail_first_n, config.fail_state)
            if config.fail_first_n and config.fail_state
            else None
        )
        return cls(open_store(config.lake_uri), dead_letter, fault=fault)

    def handle(self, event_data: object) -> WriteResult | None:
        """Write the message's batch; None if it was poison (dead-lettered). Raises if transient."""
        started = self.clock()
        message_id = "unknown"
        try:
            received = unwrap_pubsub_event(event_data)
            message_id = received.message_id
            if self.fault is not None:
                self.fault.check()
            try:
                batch = decode_received(received)
            except InvalidData as exc:
                self._poison(received, exc)
                return None
            try:
                result = self.writer.write_batch(batch)
            except InvalidData as exc:
                self._poison(received, exc)
                return None
        except Exception as exc:
            log_event(
                self.log, "ERROR", f"ingest failed, Pub/Sub will redeliver: {exc}",
                message_id=message_id, error=type(exc).__name__, reason=str(exc),
                transient=isinstance(exc, TransientError),
                latency_ms=round((self.clock() - started) * 1000, 3),
            )  # fmt: skip
            raise
        fields = result.log_fields()
        log_event(
            self.log, "INFO", f"{batch.stream}: {result.action} {result.rows_in} rows",
            message_id=message_id, stream=batch.stream, publish_time=received.publish_time,
            source=received.attributes.get("source"),
            latency_ms=round((self.clock() - started) * 1000, 3), **fields,
        )  # fmt: skip
        return result

    def _poison(self, received: ReceivedMessage, exc: InvalidData) -> None:
        data, attributes = received.data, received.attributes
        reason = f"{type(exc).__name__}: {exc}"
        dl_data, dl_attrs = dead_letter_copy(data, attributes, reason, received.message_id)
        log_event(
            self.log, "WARNING", f"poison message {received.message_id}: {reason}",
            message_id=received.message_id, reason=reason, error=type(exc).__name__,
            data_bytes=len(data), dead_letter_topic_set=self.dead_letter is not None,
            dead_letter_truncated=dl_attrs.get(DL_TRUNCATED),
        )  # fmt: skip
        if self.dead_letter is not None:
            # If this raises, the message is not acked and comes back: never lose a message.
            self.dead_letter(dl_data, dl_attrs)
