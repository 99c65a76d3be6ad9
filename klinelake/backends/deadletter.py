"""Dead-letter inspection and redrive (google-cloud-pubsub, at the edge).

The function copies each poison message to the dead-letter topic with the attributes named
in `klinelake.core.contract` (`dead_letter_reason`, `original_message_id`); the subscription's
dead-letter policy adds messages that failed transiently too often. An operator lists them,
fixes the cause, and re-publishes the selected ones to the main topic (ordering key
`SYMBOL@interval`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from klinelake.core.contract import (
    DL_ORIGINAL_ID,
    DL_REASON,
    decode_message,
    without_dead_letter_attributes,
)
from klinelake.core.errors import InvalidData
from klinelake.core.markets import Market, stream_key


@dataclass(frozen=True, slots=True)
class DeadLetter:
    ack_id: str
    message_id: str
    original_message_id: str
    reason: str
    stream: str
    size: int
    data: bytes
    attributes: dict[str, str]

    def republish_attributes(self) -> dict[str, str]:
        return without_dead_letter_attributes(self.attributes)


_MARKETS = frozenset(m.value for m in Market)


def _stream_of(data: bytes, attributes: dict[str, str]) -> str:
    market = attributes.get("market", "spot")
    if "symbol" in attributes and "interval" in attributes and market in _MARKETS:
        # the ordering key: `BTCUSDT@1m`, `um:BTCUSDT@1m` (DESIGN.md contract 3)
        return stream_key(market, attributes["symbol"], attributes["interval"])
    try:
        return decode_message(data, {}).stream
    except InvalidData:
        return ""


def pull_dead_letters(
    subscription: str, max_messages: int = 100, timeout: float = 5.0, client: Any = None
) -> list[DeadLetter]:
    """Pull (lease) up to `max_messages`; the caller acks or releases them."""
    sub = client or pubsub_v1.SubscriberClient()
    out: list[DeadLetter] = []
    while len(out) < max_messages:
        try:
            resp = sub.pull(
                request={"subscription": subscription, "max_messages": max_messages - len(out)},
                timeout=timeout,
            )
        except gexc.DeadlineExceeded:
            break
        if not resp.received_messages:
            break
        for m in resp.received_messages:
            attrs = dict(m.message.attributes)
            data = bytes(m.message.data)
            out.append(
                DeadLetter(
                    ack_id=m.ack_id,
                    message_id=m.message.message_id,
                    original_message_id=attrs.get(DL_ORIGINAL_ID, ""),
                    reason=attrs.get(DL_REASON, "dead-lettered by the subscription"),
                    stream=_stream_of(data, attrs),
                    size=len(data),
                    data=data,
                    attributes=attrs,
                )
            )
    return out


def release(subscription: str, letters: Collection[DeadLetter], client: Any) -> None:
    """Give leased messages back at once (ack deadline 0), so they stay dead-lettered."""
    if letters:
        client.modify_ack_deadline(
            request={
                "subscription": subscription,
                "ack_ids": [d.ack_id for d in letters],
                "ack_deadline_seconds": 0,
            }
        )


def redrive(
    subscription: str,
    topic: str,
    select: Collection[str] | None,
    *,
    dry_run: bool = False,
    subscriber: Any = None,
    publisher: Any = None,
) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Re-publish the selected dead letters (by message id or original id; None = all).

    Returns (redriven, kept). Redriven messages are acked only after Pub/Sub accepted the
    re-publish, so a failure leaves them dead-lettered.
    """
    sub = subscriber or pubsub_v1.SubscriberClient()
    letters = pull_dead_letters(subscription, client=sub)
    chosen = [
        d
        for d in letters
        if select is None or d.message_id in select or d.original_message_id in select
    ]
    kept = [d for d in letters if d not in chosen]
    if dry_run:
        release(subscription, letters, sub)
        return chosen, kept
    pub = publisher or pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    )
    done: list[DeadLetter] = []
    try:
        for d in chosen:
            future = pub.publish(topic, d.data, ordering_key=d.stream, **d.republish_attributes())
            future.result(timeout=60)
            done.append(d)
    finally:
        if done:
            sub.acknowledge(
                request={"subscription": subscription, "ack_ids": [d.ack_id for d in done]}
            )
        release(subscription, [d for d in letters if d not in done], sub)
    return done, kept
