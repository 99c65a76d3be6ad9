"""The GCS backend (google-cloud-storage), honouring STORAGE_EMULATOR_HOST as the client does.

google.api_core / google.cloud exceptions are translated here and never reach the core.

- Reads are ranged downloads of `_READ_CHUNK` bytes, split into lines here: the client's
  line-by-line `BlobReader` ran at ~2 MB/s of CPU (issue 15), a ranged download at the
  network's pace. Every range names the generation it reads, so a concurrent rewrite is a 404
  (ObjectNotFound: the writer re-reads) rather than a torn read.
- An object's first and last open_time ride in its custom metadata (`_FIRST`, `_LAST`), set by
  every write and compose, so a stat tells the writer where a batch goes without a read.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator
from typing import Any

import requests.utils
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.exceptions import InvalidResponse

from klinelake.core.errors import (
    LakeUnavailable,
    ObjectNotFound,
    PreconditionFailed,
    TransientError,
)
from klinelake.core.merge import split_lines
from klinelake.core.storage import Bounds, Chunks, Data, ObjectInfo, ObjectNames, OptBounds

_CHUNK = 8 * 1024 * 1024  # resumable uploads need multiples of 256 KiB
_READ_CHUNK = 16 * 1024 * 1024  # one ranged download: large enough that latency does not count
_FIRST = "klinelake-first-open-time"
_LAST = "klinelake-last-open-time"


@contextlib.contextmanager
def _translated(name: str) -> Iterator[None]:
    try:
        yield
    except gexc.PreconditionFailed as exc:
        raise PreconditionFailed(f"{name}: {exc.message}") from None
    except gexc.NotFound as exc:
        raise ObjectNotFound(f"{name}: {exc.message}") from None
    except (gexc.TooManyRequests, gexc.ServerError, gexc.ServiceUnavailable) as exc:
        raise TransientError(f"{name}: {exc}") from exc
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise LakeUnavailable(f"{name}: {exc.message}") from None
    except gexc.GoogleAPICallError as exc:
        if getattr(exc, "code", None) == 412:
            raise PreconditionFailed(f"{name}: {exc}") from None
        raise
    except InvalidResponse as exc:
        # resumable uploads report through google-resumable-media, not google.api_core: a
        # 412 when the last chunk lands means another write finalised first
        code = getattr(exc.response, "status_code", None)
        if code == 412:
            raise PreconditionFailed(f"{name}: 412 at upload finalisation") from None
        if code == 404:
            raise ObjectNotFound(f"{name}: 404") from None
        if code == 429 or (isinstance(code, int) and code >= 500):
            raise TransientError(f"{name}: {exc}") from exc
        raise
    except (ConnectionError, TimeoutError) as exc:
        raise TransientError(f"{name}: {exc}") from exc


def make_client(project: str | None = None) -> storage.Client:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(
            project=project or "local-emulator",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
    else:
        client = storage.Client(project=project)
    return without_env_lookups(client)


def without_env_lookups(client: storage.Client) -> storage.Client:
    """requests looks the proxy, CA bundle and netrc settings up in the environment on every
    request: a quarter of a live message's CPU in the function (issue 15, helper h). The
    client talks to one endpoint, so resolve them once, for it, exactly as requests would
    (`no_proxy` included), and stop the per-request lookups. (netrc is not consulted: the
    client authenticates with its credentials.)"""
    session = client._http  # the client's requests.Session (AuthorizedSession)
    session.proxies.update(requests.utils.get_environ_proxies(client._connection.API_BASE_URL))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False
    return client


class GCSStore:
    def __init__(self, bucket: str, client: storage.Client | None = None) -> None:
        self._client = client
        self.bucket_name = bucket

    @property
    def client(self) -> storage.Client:
        if self._client is None:  # created lazily: no I/O in constructors
            from google.auth.exceptions import DefaultCredentialsError

            try:
                self._client = make_client()
            except DefaultCredentialsError as exc:
                raise LakeUnavailable(f"no Google credentials: {exc}") from None
        return self._client

    def _bucket(self) -> Any:
        return self.client.bucket(self.bucket_name)

    def stat(self, name: str) -> ObjectInfo | None:
        with _translated(name):
            blob = self._bucket().get_blob(name)
        if blob is None:
            return None
        return _info(name, blob)

    def read_range(self, name: str, start: int, end: int, generation: int) -> bytes:
        if end <= start:
            return b""
        blob = self._bucket().blob(name, generation=generation)
        with _translated(name):
            try:
                data: bytes = blob.download_as_bytes(
                    start=max(0, start), end=end - 1, raw_download=True, checksum=None
                )
            except gexc.GoogleAPICallError as exc:
                if getattr(exc, "code", None) == 416:  # the range starts past the end
                    return b""
                raise
        return data

    def _chunks(self, name: str, generation: int, start: int) -> Iterator[bytes]:
        """The generation's bytes from `start`, one large ranged download at a time."""
        pos = start
        while True:
            chunk = self.read_range(name, pos, pos + _READ_CHUNK, generation)
            if chunk:
                yield chunk
            if len(chunk) < _READ_CHUNK:
                return
            pos += len(chunk)

    @contextlib.contextmanager
    def open_lines(self, name: str, generation: int, start: int = 0) -> Iterator[Iterator[bytes]]:
        yield split_lines(self._chunks(name, generation, start))

    def write(
        self, name: str, data: Data, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        blob = self._bucket().blob(name)
        blob.metadata = _metadata(bounds)
        with _translated(name):
            if isinstance(data, bytes):
                blob.upload_from_file(
                    io.BytesIO(data),
                    size=len(data),
                    content_type="application/x-ndjson",
                    if_generation_match=if_generation_match,
                )
            else:
                blob.content_type = "application/x-ndjson"
                with blob.open(
                    "wb", chunk_size=_CHUNK, if_generation_match=if_generation_match
                ) as out:
                    for chunk in data:
                        out.write(chunk)
                # BlobWriter does not copy the upload's response onto the blob (3.x), so its
                # generation is unknown here: read it back. One writer per object (the
                # ordered subscription) keeps this the generation we wrote.
                if blob.generation is None:
                    blob.reload()
        return _info(name, blob)

    def replace_from(
        self, name: str, offset: int, data: Chunks, if_generation_match: int, bounds: OptBounds
    ) -> ObjectInfo:
        # GCS has no partial write: the head is streamed through (one pass over the object).
        head = self._chunks(name, if_generation_match, 0) if offset > 0 else iter(())
        return self.write(name, _clip(head, offset, data), if_generation_match, bounds)

    def compose(
        self, name: str, sources: ObjectNames, if_generation_match: int, bounds: OptBounds = None
    ) -> ObjectInfo:
        bucket = self._bucket()
        blob = bucket.blob(name)
        blob.content_type = "application/x-ndjson"
        blob.metadata = _metadata(bounds)
        with _translated(name):
            blob.compose([bucket.blob(s) for s in sources], if_generation_match=if_generation_match)
        return _info(name, blob)

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        with _translated(name):
            self._bucket().blob(name).delete(if_generation_match=if_generation_match)

    def list(self, prefix: str) -> list[ObjectInfo]:
        with _translated(prefix):
            blobs = list(self.client.list_blobs(self.bucket_name, prefix=prefix))
        return sorted(
            (ObjectInfo(b.name, int(b.generation), int(b.size or 0)) for b in blobs),
            key=lambda o: o.name,
        )


def _metadata(bounds: Bounds | None) -> dict[str, str] | None:
    return None if bounds is None else {_FIRST: str(bounds.first), _LAST: str(bounds.last)}


def _info(name: str, blob: Any) -> ObjectInfo:
    meta = blob.metadata or {}
    bounds = None
    if _FIRST in meta and _LAST in meta:
        with contextlib.suppress(ValueError):
            bounds = Bounds(int(meta[_FIRST]), int(meta[_LAST]))
    return ObjectInfo(name, int(blob.generation), int(blob.size or 0), bounds)


def _clip(head: Iterator[bytes], offset: int, rest: Iterable[bytes]) -> Iterator[bytes]:
    """The first `offset` bytes of `head`, then `rest`."""
    left = offset
    for chunk in head:
        if left <= 0:
            break
        yield chunk[:left]
        left -= len(chunk)
    yield from rest
