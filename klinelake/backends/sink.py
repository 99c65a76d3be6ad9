"""Where publishers (streamer, backfill) hand batches: the Pub/Sub topic or, by default, the
local lake through the same writer the function uses (the embedded default).

`send()` returns only once the batch is durable (Pub/Sub acknowledged the publish, or the lake
write finished), so callers can drop their own copy (spool entry, checkpoint) afterwards.
Callers send one stream's batches one after another, in open_time order, except history
(backfill), which goes newest first where the lake behind the sink prepends cheaply:
`history_newest_first` (issue 15: GCS composes a batch in front of an object in O(batch), while
the local disk can only rewrite the rows after a batch, so it wants history oldest first, and
in large writes: `rows_per_send`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from klinelake.backends.lake import is_gcs_uri, open_store
from klinelake.backends.local_store import LocalStore, clean_leftovers
from klinelake.core.contract import MAX_ROWS, KlineBatch, Source
from klinelake.core.writer import LakeWriter, WriteResult

log = logging.getLogger(__name__)
LOCAL_ROWS_PER_WRITE = 20 * MAX_ROWS  # ~33 MB of 1m lines held per write


class Sink(Protocol):
    async def send(self, batch: KlineBatch, source: Source) -> None: ...
    async def send_all(self, batches: Sequence[KlineBatch], source: Source) -> None:
        """Consecutive ascending batches of one stream (at most `rows_per_send` rows in all),
        durable when it returns: one lake write where the lake takes it, else one by one."""

    @property
    def rows_per_send(self) -> int:
        """The rows one `send_all` may carry."""

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

    @property
    def rows_per_send(self) -> int:
        # The local disk puts history in front of newer rows by rewriting those rows (a file
        # has no prepend): a backfill behind a week rewrites the week once per write, so fewer,
        # larger writes rewrite it less (issue 15). GCS prepends a batch in O(batch).
        return MAX_ROWS if self.history_newest_first else LOCAL_ROWS_PER_WRITE

    async def send(self, batch: KlineBatch, source: Source) -> None:
        await self.send_all((batch,), source)

    async def send_all(self, batches: Sequence[KlineBatch], source: Source) -> None:
        if not self._cleaned:  # once per run: what crashed writers left (issue 12 item 8)
            self._cleaned = True
            await asyncio.to_thread(self._clean_leftovers)
        self.last_result = await asyncio.to_thread(self.writer.write_batches, batches)

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
