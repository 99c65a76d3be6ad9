"""The GCS backend (google-cloud-storage), honouring STORAGE_EMULATOR_HOST as the client does.

google.api_core / google.cloud exceptions are translated here and never reach the core.

- Reads are ranged downloads of `_READ_CHUNK` bytes, split into lines here: the client's
  line-by-line `BlobReader` ran at ~2 MB/s of CPU (issue 15), a ranged download at the
  network's pace. Every range names the generation it reads, so a concurrent rewrite is a 404
  (ObjectNotFound: the writer re-reads) rather than a torn read.
- An object's first and last open_time ride in its custom metadata (`_FIRST`, `_LAST`), set by
  every write and compose, so a stat tells the writer where a batch goes without a read.
- The live path's calls (stat, a small write, compose, delete) go straight to the JSON API
  with the client's credentials and endpoint (`_JsonApi`): the client's Blob objects, retry
  wrappers and request plumbing were most of a live message's CPU (issue 15). Same endpoint
  (STORAGE_EMULATOR_HOST included), credentials, preconditions, retries and translations.
"""

from __future__ import annotations

import contextlib
import io
import os
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import requests
import requests.utils
import urllib3
from google.api_core import exceptions as gexc
from google.auth.transport.urllib3 import AuthorizedHttp
from google.cloud import storage
from google.cloud.storage.exceptions import InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY, _should_retry

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
_CONTENT_TYPE = "application/x-ndjson"
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
    except gexc.RetryError as exc:  # the client's retries ran out on a retryable failure
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
    except (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout) as exc:
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


_TIMEOUT = 60.0  # seconds, the client's default
_BOUNDARY = b"klinelake-part-boundary-7f3a"  # never inside the JSON part; the media part is
# delimited by it only where it follows CRLF "--" (RFC 2046), which NDJSON rows cannot hold


class _JsonApi:
    """The JSON API's object calls, issued through the client's authorized session.

    Paths and parameters: https://cloud.google.com/storage/docs/json_api/v1/objects (get,
    insert with uploadType=multipart, compose, delete); `ifGenerationMatch` is a query parameter
    of each mutation (0: the object must not exist), a mismatch is 412. Errors become the
    google.api_core exceptions the client raises (`from_http_response`), so `_translated`
    handles both paths alike; a retryable failure (the client's `_should_retry`: 429, 5xx,
    connection errors) is retried under the client's `DEFAULT_RETRY` where the client would:
    reads, deletes, and mutations that carry a precondition."""

    def __init__(self, client: storage.Client, bucket: str) -> None:
        base = client._connection.API_BASE_URL
        session = client._http
        # requests' per-request work (settings merges, hooks, typing.Protocol checks) was half
        # of each call's CPU: go one layer down, to urllib3 with google-auth's AuthorizedHttp
        # (the same credentials, refreshed on 401 as the session would), with the CA bundle
        # requests would use. Behind a proxy, stay on the session, which knows how to use it.
        self.http: AuthorizedHttp | None = None
        if not session.proxies.get(urllib.parse.urlsplit(base).scheme):
            verify = session.verify
            pool = urllib3.PoolManager(
                cert_reqs="CERT_REQUIRED" if verify is not False else "CERT_NONE",
                ca_certs=verify
                if isinstance(verify, str)
                else requests.utils.DEFAULT_CA_BUNDLE_PATH,
                retries=False,
                timeout=_TIMEOUT,
            )
            self.http = AuthorizedHttp(client._credentials, http=pool)  # type: ignore[no-untyped-call]
        self.session = session
        quoted = urllib.parse.quote(bucket, safe="")
        self.objects = f"{base}/storage/v1/b/{quoted}/o/"
        self.upload = f"{base}/upload/storage/v1/b/{quoted}/o"

    def call(
        self,
        method: str,
        url: str,
        idempotent: bool,
        *,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            if self.http is None:
                resp = self.session.request(
                    method, url, params=params, data=data, headers=headers, timeout=_TIMEOUT
                )
                if resp.status_code >= 400:
                    raise gexc.from_http_response(resp)  # type: ignore[no-untyped-call]
                return orjson.loads(resp.content) if resp.content else {}
            full = f"{url}?{urllib.parse.urlencode(params)}" if params else url
            try:
                r = self.http.urlopen(method, full, body=data, headers=headers or {})  # type: ignore[no-untyped-call]
            except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out
                raise ConnectionError(f"{method} {url}: {exc}") from exc
            if r.status >= 400:
                raise _api_error(r.status, method, full, r.data)
            return orjson.loads(r.data) if r.data else {}

        try:
            return once()
        except Exception as exc:  # only to decide on a retry: re-raised as it came otherwise
            if not (idempotent and _should_retry(exc)):
                raise
        return DEFAULT_RETRY(once)()  # type: ignore[no-any-return]

    def url(self, name: str, suffix: str = "") -> str:
        return self.objects + urllib.parse.quote(name, safe="") + suffix

    def get(self, name: str) -> dict[str, Any]:
        return self.call("GET", self.url(name), True, params={"projection": "noAcl"})

    def insert(
        self, name: str, data: bytes, if_generation_match: int, metadata: dict[str, str] | None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "contentType": _CONTENT_TYPE}
        if metadata is not None:
            meta["metadata"] = metadata
        b = _BOUNDARY
        body = b"".join((
            b"--", b, b"\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n",
            orjson.dumps(meta),
            b"\r\n--", b, b"\r\ncontent-type: ", _CONTENT_TYPE.encode(), b"\r\n\r\n",
            data,
            b"\r\n--", b, b"--",
        ))  # fmt: skip
        headers = {"content-type": f'multipart/related; boundary="{b.decode()}"'}
        params = {"uploadType": "multipart", "ifGenerationMatch": str(if_generation_match)}
        return self.call("POST", self.upload, True, params=params, data=body, headers=headers)

    def compose(
        self,
        name: str,
        sources: ObjectNames,
        if_generation_match: int,
        metadata: dict[str, str] | None,
    ) -> dict[str, Any]:
        dest: dict[str, Any] = {"contentType": _CONTENT_TYPE}
        if metadata is not None:
            dest["metadata"] = metadata
        body = orjson.dumps({"sourceObjects": [{"name": s} for s in sources], "destination": dest})
        params = {"ifGenerationMatch": str(if_generation_match)}
        headers = {"content-type": "application/json"}
        return self.call(
            "POST", self.url(name, "/compose"), True, params=params, data=body, headers=headers
        )

    def delete(self, name: str, if_generation_match: int | None) -> None:
        params = (
            None if if_generation_match is None else {"ifGenerationMatch": str(if_generation_match)}
        )
        self.call("DELETE", self.url(name), True, params=params)


def _api_error(status: int, method: str, url: str, body: bytes) -> gexc.GoogleAPICallError:
    """The exception the client raises for this status (as `from_http_response` builds it)."""
    try:
        message = str(orjson.loads(body)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = body[:200].decode(errors="replace")
    return gexc.from_http_status(status, f"{method} {url}: {message}")  # type: ignore[no-untyped-call,no-any-return]


class GCSStore:
    def __init__(self, bucket: str, client: storage.Client | None = None) -> None:
        self._client = client
        self.bucket_name = bucket
        self._api_: _JsonApi | None = None

    @property
    def _api(self) -> _JsonApi:
        if self._api_ is None:
            self._api_ = _JsonApi(self.client, self.bucket_name)
        return self._api_

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
            try:
                resource = self._api.get(name)
            except gexc.NotFound:
                return None
        return _info_of(name, resource)

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
        if isinstance(data, bytes) and len(data) <= _CHUNK:  # one request, as the client would
            with _translated(name):
                resource = self._api.insert(name, data, if_generation_match, _metadata(bounds))
            return _info_of(name, resource)
        blob = self._bucket().blob(name)
        blob.metadata = _metadata(bounds)
        with _translated(name):
            if isinstance(data, bytes):
                blob.upload_from_file(
                    io.BytesIO(data),
                    size=len(data),
                    content_type=_CONTENT_TYPE,
                    if_generation_match=if_generation_match,
                )
            else:
                blob.content_type = _CONTENT_TYPE
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
        with _translated(name):
            resource = self._api.compose(name, sources, if_generation_match, _metadata(bounds))
        return _info_of(name, resource)

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        with _translated(name):
            self._api.delete(name, if_generation_match)

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
    return _info_from(name, blob.generation, blob.size, blob.metadata)


def _info_of(name: str, resource: dict[str, Any]) -> ObjectInfo:
    """From a JSON API object resource (generation and size are decimal strings there)."""
    return _info_from(name, resource["generation"], resource.get("size"), resource.get("metadata"))


def _info_from(name: str, generation: Any, size: Any, metadata: Any) -> ObjectInfo:
    meta = metadata or {}
    bounds = None
    if _FIRST in meta and _LAST in meta:
        with contextlib.suppress(ValueError):
            bounds = Bounds(int(meta[_FIRST]), int(meta[_LAST]))
    return ObjectInfo(name, int(generation), int(size or 0), bounds)


def _clip(head: Iterator[bytes], offset: int, rest: Iterable[bytes]) -> Iterator[bytes]:
    """The first `offset` bytes of `head`, then `rest`."""
    left = offset
    for chunk in head:
        if left <= 0:
            break
        yield chunk[:left]
        left -= len(chunk)
    yield from rest
