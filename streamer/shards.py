"""Streams → connections, and the SUBSCRIBE frames for each (pure).

Binance allows 1024 streams per connection and 5 incoming messages per second, pings, pongs and
control frames included (binance-spot-api.md §3): subscriptions are sent in frames of at most
`max_params` streams, paced at `frames_per_s` (4 by default, leaving room for pongs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import orjson

from klinelake.core.binance_limits import MAX_STREAMS_PER_CONNECTION

DEFAULT_FRAMES_PER_S = 4.0
T = TypeVar("T")


def shard(streams: Sequence[T], per_connection: int) -> list[list[T]]:
    """Split stream names into groups of at most `per_connection`, balanced, order kept."""
    if not 1 <= per_connection <= MAX_STREAMS_PER_CONNECTION:
        raise ValueError(f"streams per connection must be 1..{MAX_STREAMS_PER_CONNECTION}")
    if not streams:
        return []
    n = -(-len(streams) // per_connection)
    size, extra = divmod(len(streams), n)
    out: list[list[T]] = []
    i = 0
    for k in range(n):
        step = size + (1 if k < extra else 0)
        out.append(list(streams[i : i + step]))
        i += step
    return out


def subscribe_frames(
    streams: Sequence[str], first_id: int, max_params: int, method: str = "SUBSCRIBE"
) -> list[tuple[int, bytes]]:
    """`(id, frame)` pairs: `{"method":"SUBSCRIBE","params":[...],"id":N}` (or UNSUBSCRIBE)."""
    if max_params < 1:
        raise ValueError("max_params must be positive")
    frames = []
    for k, i in enumerate(range(0, len(streams), max_params)):
        frame_id = first_id + k
        body = {"method": method, "params": list(streams[i : i + max_params]), "id": frame_id}
        frames.append((frame_id, orjson.dumps(body)))
    return frames


def send_offsets(n_frames: int, frames_per_s: float = DEFAULT_FRAMES_PER_S) -> list[float]:
    """Seconds after the connection opens at which each frame may be sent."""
    if frames_per_s <= 0:
        raise ValueError("frames_per_s must be positive")
    return [k / frames_per_s for k in range(n_frames)]


def slot_with_room(slot_sizes: Sequence[int], per_connection: int) -> int | None:
    """The first connection slot that can take one more stream (a new listing subscribes there,
    no reconnect); None: open a new connection."""
    return next((i for i, n in enumerate(slot_sizes) if n < per_connection), None)
