"""Builders shared by the function tests: real rows from the fixture CSVs, push events."""

from __future__ import annotations

import base64
import functools
from typing import Any

from klinelake.core.contract import KlineBatch, encode_batch
from klinelake.core.row import Kline, parse_csv
from tests.recorded import recorded_csv

CSV_NAME = "BTCUSDT-1h-2022-01.csv"
# The function's environment that makes the stack's small objects "large" (issue 12 item 6):
# a merge into anything above 8 KiB is staged in pieces over deliveries of 0.1 s of work each.
STAGED_MERGES = {"MERGE_PIECE_BYTES": "8192", "ACK_DEADLINE_S": "0.3"}


@functools.cache
def _csv_text() -> bytes:
    return recorded_csv(CSV_NAME)


def klines(symbol: str, n: int | None = None, interval: str = "1h") -> list[Kline]:
    """Real January 2022 BTCUSDT 1h candles, relabelled as `symbol` (one stream per test)."""
    rows = parse_csv(_csv_text(), symbol, interval)
    return rows if n is None else rows[:n]


def batch(rows: list[Kline]) -> KlineBatch:
    return KlineBatch(rows[0].symbol, rows[0].interval, tuple(rows))


def message(rows: list[Kline], source: str = "ws") -> tuple[bytes, dict[str, str], str]:
    """(data, attributes, ordering_key) exactly as a publisher sends them."""
    msg = encode_batch(batch(rows), source)
    return msg.data, msg.attributes, msg.ordering_key


def lines(rows: list[Kline]) -> bytes:
    return b"".join(r.to_line() for r in rows)


def push_event(
    data: bytes | str, attributes: dict[str, str] | None = None, message_id: str = "m1"
) -> dict[str, Any]:
    """The CloudEvent `data` functions-framework builds from a Pub/Sub push body."""
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    return {
        "message": {
            "data": encoded,
            "attributes": attributes or {},
            "messageId": message_id,
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": "projects/p/subscriptions/s",
    }
