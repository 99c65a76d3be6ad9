"""Cloud Run functions entry point: `ingest`, a Pub/Sub-triggered CloudEvent function.

Deployed with `--entry-point=ingest --trigger-topic=...`; locally served by
`functions-framework --source ingest_function/main.py --target ingest --signature-type cloudevent`.
Everything it does lives in `handler.py`; configuration (LAKE_URI, DEAD_LETTER_TOPIC,
GOOGLE_CLOUD_PROJECT) is read from the environment at the first call and kept.
"""

from __future__ import annotations

import functools
import os
import sys
import threading

import functions_framework
from cloudevents.http import CloudEvent

from ingest_function.handler import IngestConfig, IngestHandler
from klinelake.logs import setup_logging
from klinelake.runtime import tune_gc_for_bulk_rows

_lock = threading.Lock()


@functools.cache
def _build_handler() -> IngestHandler:
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"), sys.stdout)
    tune_gc_for_bulk_rows()  # a backfill message is 5,000 rows of acyclic objects
    return IngestHandler.from_config(IngestConfig.from_env(os.environ))


@functions_framework.cloud_event
def ingest(cloud_event: CloudEvent) -> None:
    handler().handle(cloud_event.data)


def handler() -> IngestHandler:
    """The process's handler (and its logging), built at the first call, once."""
    with _lock:  # even with many threads
        return _build_handler()
