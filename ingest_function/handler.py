"""What the ingest function does with one Pub/Sub CloudEvent, without any server.

    event data ──unwrap──> ReceivedMessage ──decode──> KlineBatch ──LakeWriter──> WriteResult
         │                        │                        │
         └── InvalidData (poison) ┴────────────────────────┘──> WARNING log, dead-letter copy, ack
                  WorkDeferred (a staged merge goes on, or another delivery holds the object's
                  lease) ──> WARNING log, re-raise (Pub/Sub redelivers later)
                                       anything else ──> ERROR log, re-raise (Pub/Sub redelivers)

`main.py` only builds an `IngestHandler` from the environment and calls `handle()`; tests
build one over a LocalStore and a list-appending dead-letter callable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from klinelake.backends.lake import open_store
from klinelake.config import (
    ACK_DEADLINE,
    DEAD_LETTER_TOPIC,
    DEFAULT_LAKE_URI,
    LAKE,
    MERGE_PIECE_BYTES,
)
from klinelake.core.contract import (
    DL_TRUNCATED,
    ReceivedMessage,
    dead_letter_copy,
    decode_received,
    unwrap_pubsub_event,
)
from klinelake.core.errors import InvalidData, TransientError, WorkDeferred
from klinelake.core.staged_merge import DEFAULT_PIECE_BYTES, MergeBudget
from klinelake.core.storage import ObjectStore
from klinelake.core.writer import LakeWriter, WriteResult
from klinelake.logs import log_event

DeadLetterSink = Callable[[bytes, dict[str, str]], None]
"""Publishes (data, attributes) to the dead-letter topic and returns once Pub/Sub accepted it;
raises if it did not (the message is then redelivered, never lost)."""

logger = logging.getLogger("ingest")


@dataclass(frozen=True, slots=True)
class IngestConfig:
    lake_uri: str
    dead_letter_topic: str | None
    project: str | None
    ack_deadline_s: float = 300.0
    merge_piece_bytes: int = DEFAULT_PIECE_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IngestConfig:
        return cls(
            lake_uri=LAKE.value(env) or DEFAULT_LAKE_URI,
            dead_letter_topic=DEAD_LETTER_TOPIC.value(env),
            project=env.get("GOOGLE_CLOUD_PROJECT") or None,
            ack_deadline_s=_positive(ACK_DEADLINE.env, ACK_DEADLINE.value(env), float),
            merge_piece_bytes=_positive(MERGE_PIECE_BYTES.env, MERGE_PIECE_BYTES.value(env), int),
        )


N = TypeVar("N", int, float)


def _positive(env: str | None, raw: str | None, kind: Callable[[str], N]) -> N:
    """A positive number from the environment, or a clear error naming the variable."""
    try:
        value = kind(raw or "")
    except ValueError:
        raise ValueError(f"{env}={raw!r}: not a number ({kind.__name__})") from None
    if not value > 0:
        raise ValueError(f"{env}={raw!r}: must be positive")
    return value


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
        log: logging.Logger = logger,
        clock: Callable[[], float] = time.perf_counter,
        merge_budget: MergeBudget | None = None,
    ) -> None:
        # the budget keeps every delivery within the ack deadline (a large merge is staged
        # over several deliveries: klinelake/core/staged_merge.py)
        self.writer = LakeWriter(store, merge_budget=merge_budget)
        self.dead_letter = dead_letter
        self.log = log
        self.clock = clock

    @classmethod
    def from_config(cls, config: IngestConfig) -> IngestHandler:
        dead_letter = (
            PubsubDeadLetter(config.dead_letter_topic) if config.dead_letter_topic else None
        )
        budget = MergeBudget.for_ack_deadline(config.ack_deadline_s, config.merge_piece_bytes)
        return cls(open_store(config.lake_uri), dead_letter, merge_budget=budget)

    def handle(self, event_data: object) -> WriteResult | None:
        """Write the message's batch; None if it was poison (dead-lettered). Raises if transient."""
        started = self.clock()
        message_id = "unknown"
        try:
            received = unwrap_pubsub_event(event_data)
            message_id = received.message_id
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
        except WorkDeferred as exc:
            # not a failure: the rest is left for the redelivery, on purpose (docs/runbook.md)
            log_event(
                self.log, "WARNING", f"ingest deferred, Pub/Sub will redeliver: {exc}",
                message_id=message_id, error=type(exc).__name__, reason=str(exc),
                transient=True, latency_ms=round((self.clock() - started) * 1000, 3),
            )  # fmt: skip
            raise
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
            # the freshness alert's log-based metric (infra/monitoring.sh) reads these two
            interval=batch.interval,
            newest_open_time=batch.rows[-1].open_time if batch.rows else None,
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
