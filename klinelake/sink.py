"""Where publishers (streamer, backfill) hand batches: the Pub/Sub topic or, by default, the
local lake through the same writer the function uses (the embedded default).

`send()` returns only once the batch is durable (Pub/Sub acknowledged the publish, or the lake
write finished), so callers can drop their own copy (spool entry, checkpoint) afterwards.
Callers send one stream's batches one after another, in open_time order.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from klinelake.contract import KlineBatch, Source
from klinelake.lake import open_store
from klinelake.writer import LakeWriter, WriteResult


class Sink(Protocol):
    async def send(self, batch: KlineBatch, source: Source) -> None: ...

    async def close(self) -> None: ...

    @property
    def description(self) -> str: ...


class LakeSink:
    def __init__(self, lake_uri: str) -> None:
        self.lake_uri = lake_uri
        self.writer = LakeWriter(open_store(lake_uri))
        self.last_result: WriteResult | None = None

    @property
    def description(self) -> str:
        return f"lake {self.lake_uri}"

    async def send(self, batch: KlineBatch, source: Source) -> None:
        self.last_result = await asyncio.to_thread(self.writer.write_batch, batch)

    async def close(self) -> None:
        return None


def make_sink(topic: str | None, lake_uri: str) -> Sink:
    """`KLINES_TOPIC` set → Pub/Sub; otherwise the local lake (DESIGN.md, embedded default)."""
    if topic:
        from klinelake.pubsub_sink import PubsubSink  # the cloud client only when asked for

        return PubsubSink(topic)
    return LakeSink(lake_uri)
