"""The live path's direct JSON API calls (`_JsonApi`: stat, a small write, compose, delete)
translate every failure as the client path does: 412 → PreconditionFailed, 404 →
ObjectNotFound (a stat: None), 429/5xx and connection errors → TransientError after the
client's retries, 403 → LakeUnavailable. A local HTTP server answers every request with
the status under test (bound to 127.0.0.1 on a free port, stopped at the end)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.api_core import exceptions as gexc

import klinelake.backends.gcs_store as gs
from klinelake.core.errors import (
    LakeUnavailable,
    ObjectNotFound,
    PreconditionFailed,
    TransientError,
)
from klinelake.core.storage import Bounds

OPS: dict[str, Callable[[gs.GCSStore], Any]] = {
    "stat": lambda s: s.stat("raw/x.jsonl"),
    "write": lambda s: s.write("raw/x.jsonl", b"{}\n", 0, Bounds(1, 2)),
    "compose": lambda s: s.compose("raw/x.jsonl", ["raw/x.jsonl", "staging/p"], 7, Bounds(1, 2)),
    "delete": lambda s: s.delete("staging/p"),
}
EXPECTED: dict[int, type[Exception]] = {
    412: PreconditionFailed,
    404: ObjectNotFound,
    429: TransientError,
    500: TransientError,
    503: TransientError,
    403: LakeUnavailable,
}  # (a 401 makes the authorized session refresh the credentials first: the session's rule)


class Answers:
    def __init__(self) -> None:
        self.status = 200
        self.requests: list[tuple[str, str]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Answers]]:
    answers = Answers()

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            answers.requests.append((self.command, self.path))
            body = b'{"error": {"code": %d, "message": "refused"}}' % answers.status
            self.send_response(answers.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = answer

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", answers
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = gs.DEFAULT_RETRY.with_delay(initial=0.001, maximum=0.002).with_timeout(0.2)
    monkeypatch.setattr(gs, "DEFAULT_RETRY", fast)


@pytest.fixture(params=["urllib3", "session"])
def via(request: pytest.FixtureRequest) -> str:
    """Each call goes through urllib3, or (with a proxy configured) the requests session."""
    return str(request.param)


def store_at(url: str, monkeypatch: pytest.MonkeyPatch, via: str = "urllib3") -> gs.GCSStore:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    store = gs.GCSStore("bkt", gs.make_client("test"))
    if via == "session":
        store._api.http = None  # what a proxy for the endpoint's scheme selects
    return store


@pytest.mark.parametrize("status", sorted(EXPECTED))
@pytest.mark.parametrize("op", sorted(OPS))
def test_each_failure_is_translated(
    server: tuple[str, Answers], monkeypatch: pytest.MonkeyPatch, via: str, op: str, status: int
) -> None:
    url, answers = server
    answers.status = status
    store = store_at(url, monkeypatch, via)
    if op == "stat" and status == 404:
        assert store.stat("raw/x.jsonl") is None
        return
    with pytest.raises(EXPECTED[status]) as caught:
        OPS[op](store)
    assert "x.jsonl" in str(caught.value) or "staging/p" in str(caught.value)
    assert not isinstance(caught.value, gexc.GoogleAPICallError)
    retried = len(answers.requests) > 1
    assert retried == (status in (429, 500, 503))  # every live-path call is idempotent


@pytest.mark.parametrize("op", sorted(OPS))
def test_a_refused_connection_is_transient(
    server: tuple[str, Answers], monkeypatch: pytest.MonkeyPatch, via: str, op: str
) -> None:
    url, _ = server
    closed = url.rsplit(":", 1)[0] + ":9"  # discard port: nothing listens on 127.0.0.1:9
    with pytest.raises(TransientError):
        OPS[op](store_at(closed, monkeypatch, via))


def test_requests_name_the_documented_paths(
    server: tuple[str, Answers], monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    url, answers = server
    answers.status = 412
    store = store_at(url, monkeypatch, via)
    for op in sorted(OPS):
        with pytest.raises(PreconditionFailed):
            OPS[op](store)
    assert [m for m, _ in answers.requests] == ["POST", "DELETE", "GET", "POST"]
    paths = [p for _, p in answers.requests]
    assert paths[0] == "/storage/v1/b/bkt/o/raw%2Fx.jsonl/compose?ifGenerationMatch=7"
    assert paths[1] == "/storage/v1/b/bkt/o/staging%2Fp"
    assert paths[2] == "/storage/v1/b/bkt/o/raw%2Fx.jsonl?projection=noAcl"
    assert paths[3] == "/upload/storage/v1/b/bkt/o?uploadType=multipart&ifGenerationMatch=0"
