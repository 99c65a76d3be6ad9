"""Pub/Sub admin and client calls against the emulator: topics, subscriptions (push, ordered,
dead-letter policies), publish and pull. The stack (`stack.py`) decides what exists; this module
only talks to the emulator, over one insecure gRPC channel per client.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any


@dataclass
class SubscriptionSpec:
    """A subscription the stack (re)creates; `push_endpoint` None means a pull subscription."""

    name: str
    topic: str
    push_endpoint: str | None = None
    ordered: bool = False
    dead_letter_topic: str | None = None
    max_delivery_attempts: int = 5
    min_backoff_s: float = 0.1
    max_backoff_s: float = 1.0
    ack_deadline_s: int = 60


class PubsubAdmin:
    def __init__(self, host: str, project: str) -> None:
        self.host = host
        self.project = project
        self._publisher: Any = None
        self._subscriber: Any = None

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, sub: str) -> str:
        return f"projects/{self.project}/subscriptions/{sub}"

    def _channel(self) -> Any:
        import grpc

        return grpc.insecure_channel(
            self.host,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )

    @property
    def publisher(self) -> Any:
        if self._publisher is None:
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport

            self._publisher = pubsub_v1.PublisherClient(
                publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
                transport=PublisherGrpcTransport(channel=self._channel()),
            )
        return self._publisher

    @property
    def subscriber(self) -> Any:
        if self._subscriber is None:
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.subscriber.transports.grpc import (
                SubscriberGrpcTransport,
            )

            self._subscriber = pubsub_v1.SubscriberClient(
                transport=SubscriberGrpcTransport(channel=self._channel())
            )
        return self._subscriber

    def close(self) -> None:
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                self._publisher.stop()
            with contextlib.suppress(Exception):
                self._publisher.transport.close()
        if self._subscriber is not None:
            with contextlib.suppress(Exception):
                self._subscriber.close()
        self._publisher = self._subscriber = None

    def ensure_topic(self, topic: str) -> None:
        from google.api_core import exceptions as gexc

        with contextlib.suppress(gexc.AlreadyExists):
            self.publisher.create_topic(request={"name": self.topic_path(topic)})

    def ensure_subscription(self, spec: SubscriptionSpec) -> None:
        from google.api_core import exceptions as gexc

        with contextlib.suppress(gexc.AlreadyExists):
            self.subscriber.create_subscription(request=self.subscription_request(spec))

    def subscription_request(self, spec: SubscriptionSpec) -> dict[str, Any]:
        from google.protobuf import duration_pb2

        def dur(s: float) -> duration_pb2.Duration:
            return duration_pb2.Duration(seconds=int(s), nanos=int((s % 1) * 1e9))

        req: dict[str, Any] = {
            "name": self.subscription_path(spec.name),
            "topic": self.topic_path(spec.topic),
            "ack_deadline_seconds": spec.ack_deadline_s,
            "enable_message_ordering": spec.ordered,
            "retry_policy": {
                "minimum_backoff": dur(spec.min_backoff_s),
                "maximum_backoff": dur(spec.max_backoff_s),
            },
        }
        if spec.push_endpoint:
            req["push_config"] = {"push_endpoint": spec.push_endpoint}
        if spec.dead_letter_topic:
            req["dead_letter_policy"] = {
                "dead_letter_topic": self.topic_path(spec.dead_letter_topic),
                "max_delivery_attempts": spec.max_delivery_attempts,
            }
        return req

    def publish(
        self,
        topic_path: str,
        data: bytes,
        attributes: dict[str, str] | None = None,
        *,
        ordering_key: str = "",
        timeout: float = 60,
    ) -> str:
        """Publish one message and return its id once the emulator accepted it."""
        future = self.publisher.publish(
            topic_path, data, ordering_key=ordering_key, **(attributes or {})
        )
        try:
            message_id: str = future.result(timeout=timeout)
        except Exception:
            if ordering_key:  # a failed ordered publish pauses the key until resumed
                self.publisher.resume_publish(topic_path, ordering_key)
            raise
        return message_id

    def pull(self, path: str, max_messages: int = 100, timeout: float = 5) -> list[Any]:
        """Pull and ack up to `max_messages` (PubsubMessage objects: data, attributes, ...)."""
        from google.api_core import exceptions as gexc

        try:
            resp = self.subscriber.pull(
                request={"subscription": path, "max_messages": max_messages,
                         "return_immediately": True},
                timeout=timeout,
            )  # fmt: skip
        except gexc.DeadlineExceeded:
            return []
        if resp.received_messages:
            self.subscriber.acknowledge(
                request={"subscription": path,
                         "ack_ids": [m.ack_id for m in resp.received_messages]}
            )  # fmt: skip
        return [m.message for m in resp.received_messages]
