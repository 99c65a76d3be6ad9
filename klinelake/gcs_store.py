"""The GCS backend (google-cloud-storage), honouring STORAGE_EMULATOR_HOST as the client does.

google.api_core / google.cloud exceptions are translated here and never reach the core.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage

from klinelake.errors import LakeUnavailable, ObjectNotFound, PreconditionFailed, TransientError
from klinelake.storage import ObjectInfo

_CHUNK = 8 * 1024 * 1024  # resumable uploads need multiples of 256 KiB


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
    except (ConnectionError, TimeoutError) as exc:
        raise TransientError(f"{name}: {exc}") from exc


def make_client(project: str | None = None) -> storage.Client:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=project or "local-emulator",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
    return storage.Client(project=project)


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
        return ObjectInfo(name, int(blob.generation), int(blob.size or 0))

    def read_tail(self, name: str, nbytes: int, generation: int) -> bytes:
        blob = self._bucket().blob(name, generation=generation)
        with _translated(name):
            data: bytes = (
                blob.download_as_bytes(start=None, end=None, raw_download=True)
                if (nbytes <= 0)
                else self._download_tail(blob, nbytes)
            )
        return data

    @staticmethod
    def _download_tail(blob: Any, nbytes: int) -> bytes:
        # A suffix range ("bytes=-N") is what GCS serves for "the last N bytes"; the client
        # only takes start/end, so ask for the size first when needed.
        blob.reload()
        size = int(blob.size or 0)
        start = max(0, size - nbytes)
        if size == 0:
            return b""
        data: bytes = blob.download_as_bytes(start=start, end=size - 1, raw_download=True)
        return data

    @contextlib.contextmanager
    def open_lines(self, name: str, generation: int) -> Iterator[Iterator[bytes]]:
        blob = self._bucket().blob(name, generation=generation)
        with _translated(name):
            reader = blob.open("rb", chunk_size=_CHUNK, raw_download=True)
        try:
            yield _translated_lines(name, reader)
        finally:
            reader.close()

    def write(
        self, name: str, data: bytes | Iterable[bytes], if_generation_match: int
    ) -> ObjectInfo:
        blob = self._bucket().blob(name)
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
        return ObjectInfo(name, int(blob.generation), int(blob.size or 0))

    def compose(self, name: str, sources: Sequence[str], if_generation_match: int) -> ObjectInfo:
        bucket = self._bucket()
        blob = bucket.blob(name)
        blob.content_type = "application/x-ndjson"
        with _translated(name):
            blob.compose([bucket.blob(s) for s in sources], if_generation_match=if_generation_match)
        return ObjectInfo(name, int(blob.generation), int(blob.size or 0))

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


def _translated_lines(name: str, reader: Any) -> Iterator[bytes]:
    with _translated(name):
        yield from reader
