"""Where publishers (streamer, backfill) hand batches: the Pub/Sub topic or, by default, the
local lake through the same writer the function uses (the embedded default).

`send()` returns only once the batch is durable (Pub/Sub acknowledged the publish, or the lake
write finished), so callers can drop their own copy (spool entry, checkpoint) afterwards.
Callers send one stream's batches one after another, in open_time order, except history
(backfill), which goes newest first where the lake behind the sink prepends cheaply:
`history_newest_first` (issue 15: GCS composes a batch in front of an object in O(batch), while
the local disk can only rewrite the rows after a batch, so it wants history oldest first).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from klinelake.backends.lake import is_gcs_uri, open_store
from klinelake.backends.local_store import LocalStore, clean_leftovers
from klinelake.core.contract import KlineBatch, Source
from klinelake.core.writer import LakeWriter, WriteResult

log = logging.getLogger(__name__)


class Sink(Protocol):
    async def send(self, batch: KlineBatch, source: Source) -> None: ...

    async def close(self) -> None: ...

    @property
    def description(self) -> str: ...

    @property
    def history_newest_first(self) -> bool: ...


class LakeSink:
    def __init__(self, lake_uri: str) -> None:
        self.lake_uri = lake_uri
        self.writer = LakeWriter(open_store(lake_uri))
        self.last_result: WriteResult | None = None
        self._cleaned = False

    @property
    def description(self) -> str:
        return f"lake {self.lake_uri}"

    @property
    def history_newest_first(self) -> bool:
        return is_gcs_uri(self.lake_uri)

    async def send(self, batch: KlineBatch, source: Source) -> None:
        if not self._cleaned:  # once per run: what crashed writers left (issue 12 item 8)
            self._cleaned = True
            await asyncio.to_thread(self._clean_leftovers)
        self.last_result = await asyncio.to_thread(self.writer.write_batch, batch)

    def _clean_leftovers(self) -> None:
        store = self.writer.store
        if isinstance(store, LocalStore):
            removed = clean_leftovers(store)
            if removed:
                log.info("removed %d crash leftover(s) from the lake", len(removed))

    async def close(self) -> None:
        return None


def make_sink(topic: str | None, lake_uri: str, *, publish_timeout_s: float = 60.0) -> Sink:
    """`KLINES_TOPIC` set → Pub/Sub; otherwise the local lake (DESIGN.md, embedded default).
    The one place both publishers build their sink."""
    if topic:
        from klinelake.backends.pubsub_sink import (
            PubsubSink,  # the cloud client only when asked for
        )

        return PubsubSink(topic, publish_timeout_s=publish_timeout_s)
    return LakeSink(lake_uri)
