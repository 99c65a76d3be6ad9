"""The local cloud's entry point for the ingest function: production's `ingest`, behind the
fault hook of `localcloud/faults.py` (the function's own bundle carries no test machinery).

    functions-framework --source localcloud/function_main.py --target ingest \
        --signature-type cloudevent
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import functions_framework
from cloudevents.http import CloudEvent

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # --source loads us by path

from ingest_function import main as production
from klinelake.logs import log_event
from localcloud.faults import FailFirstN, InjectedFailure

logger = logging.getLogger("ingest")


@functools.cache
def _fault() -> FailFirstN | None:
    return FailFirstN.from_env(os.environ)


@functions_framework.cloud_event
def ingest(cloud_event: CloudEvent) -> None:
    production.handler()  # sets up the function's logging, which the failure line goes to
    fault = _fault()
    if fault is not None:
        try:
            fault.check()
        except InjectedFailure as exc:
            message = (cloud_event.data or {}).get("message") or {}
            log_event(
                logger, "ERROR", f"ingest failed, Pub/Sub will redeliver: {exc}",
                message_id=str(message.get("messageId") or "unknown"),
                error=type(exc).__name__, reason=str(exc), transient=True,
            )  # fmt: skip
            raise
    production.ingest(cloud_event)
