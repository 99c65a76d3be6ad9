"""Publishing batches to Pub/Sub with one ordering key per stream (google-cloud-pubsub).

A failed publish pauses its ordering key in the client library; we resume the key and raise
`TransientError`, so the caller (which still holds the batch in its spool or checkpoint)
retries in order. google.api_core exceptions stop here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from klinelake.config import check_topic
from klinelake.core.contract import MAX_ROWS, KlineBatch, Source, encode_batch
from klinelake.core.errors import TransientError


class PubsubSink:
    def __init__(self, topic: str, *, publish_timeout_s: float = 60.0) -> None:
        self.topic = check_topic(topic)
        self.publish_timeout_s = publish_timeout_s
        self._client: Any = None

    @property
    def description(self) -> str:
        return f"pubsub {self.topic}"

    @property
    def history_newest_first(self) -> bool:
        return True  # the function writes GCS, which prepends by compose

    def _publisher(self) -> Any:
        if self._client is None:  # created lazily: no I/O in constructors
            self._client = pubsub_v1.PublisherClient(
                publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
                batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.005),
            )
        return self._client

    @property
    def rows_per_send(self) -> int:
        return MAX_ROWS  # a message holds one contract batch

    async def send_all(self, batches: Sequence[KlineBatch], source: Source) -> None:
        for batch in batches:
            await self.send(batch, source)

    async def send(self, batch: KlineBatch, source: Source) -> None:
        msg = encode_batch(batch, source)
        client = self._publisher()
        try:
            future = client.publish(
                self.topic, msg.data, ordering_key=msg.ordering_key, **msg.attributes
            )
            await asyncio.wait_for(asyncio.wrap_future(future), self.publish_timeout_s)
        except (gexc.GoogleAPIError, TimeoutError, RuntimeError, OSError) as exc:
            # The library pauses the key after a failure; later publishes on it fail fast
            # until resumed. We resume now: the caller re-sends this batch first.
            with contextlib.suppress(RuntimeError):  # "not paused": it was only slow
                client.resume_publish(self.topic, msg.ordering_key)
            raise TransientError(f"publish {msg.ordering_key} to {self.topic}: {exc!r}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.stop)
            self._client = None
