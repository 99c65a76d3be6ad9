"""Opening a lake by URI and reading it (`gs://BUCKET` or a local directory)."""

from __future__ import annotations

from collections.abc import Iterator

from klinelake.core.errors import ObjectNotFound
from klinelake.core.markets import Market
from klinelake.core.row import Kline, parse_lake_line
from klinelake.core.storage import ObjectStore
from klinelake.core.symbols import object_name


def is_gcs_uri(uri: str) -> bool:
    return uri.startswith("gs://")


def open_store(uri: str) -> ObjectStore:
    if is_gcs_uri(uri):
        from klinelake.backends.gcs_store import GCSStore  # the cloud client only when asked for

        bucket = uri[len("gs://") :].strip("/")
        if not bucket or "/" in bucket:
            raise ValueError(f"LAKE_URI {uri!r}: expected gs://BUCKET")
        return GCSStore(bucket)
    from klinelake.backends.local_store import LocalStore

    return LocalStore(uri)


def read_lines(store: ObjectStore, name: str) -> Iterator[bytes]:
    """The object's current lines (nothing if it does not exist)."""
    info = store.stat(name)
    if info is None:
        return
    try:
        with store.open_lines(name, info.generation) as lines:
            yield from lines
    except ObjectNotFound:
        return


def read_object(store: ObjectStore, name: str) -> bytes:
    return b"".join(read_lines(store, name))


def read_rows(
    store: ObjectStore, symbol: str, interval: str, market: Market = Market.SPOT
) -> Iterator[Kline]:
    name = object_name(symbol, interval, market)
    for i, line in enumerate(read_lines(store, name)):
        yield parse_lake_line(line, f"{name} line {i + 1}", market)
