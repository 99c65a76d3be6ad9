"""A thin proxy in front of fake-gcs-server that enforces generation preconditions the way GCS
does, on every mutating call the lake writer makes (issue 12 item 5).

fake-gcs-server (1.54.0) checks `ifGenerationMatch` only on single-request (multipart) uploads:
it accepts a stale one on resumable uploads (the path `GCSStore.write` streams merges through),
on compose, delete and patch. So on the local
stack a stale write would silently win, and tests that claim exactly-once there would prove
nothing. This proxy forwards everything, and for a mutation carrying `ifGenerationMatch`:

- stats the object's current generation upstream and answers 412 itself on a mismatch (a
  resumable upload is checked when its last chunk arrives, with the precondition its session
  was opened with: GCS checks it at finalisation too);
- serialises the check and the forwarded mutation per object name, so nothing proxied slips in
  between (the proxy is the stack's only way in to fake-gcs).

    python -m localcloud.gcs_proxy --upstream http://127.0.0.1:UPSTREAM --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass

from aiohttp import ClientSession, web

_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}
_OBJECT = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)(/compose)?$")
_UPLOAD = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o$")


@dataclass(frozen=True)
class Session:
    """A resumable upload in flight: what it writes, under which precondition."""

    bucket: str
    name: str
    if_generation_match: int | None


class Proxy:
    def __init__(self, upstream: str, public: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.public = public.rstrip("/")
        self.locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self.sessions: dict[str, Session] = {}
        self.refused = 0  # 412s answered here (the tests read it from the log)
        self._http: ClientSession | None = None

    async def http(self) -> ClientSession:
        if self._http is None:
            self._http = ClientSession(auto_decompress=False)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def generation(self, bucket: str, name: str) -> int:
        """The object's current generation upstream; 0 if it does not exist."""
        quoted = urllib.parse.quote(name, safe="")
        http = await self.http()
        async with http.get(f"{self.upstream}/storage/v1/b/{bucket}/o/{quoted}") as resp:
            if resp.status == 404:
                return 0
            resp.raise_for_status()
            return int((await resp.json())["generation"])

    async def forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        http = await self.http()
        async with http.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
            if "Location" in out:  # a resumable session URL: keep the client on the proxy
                out["Location"] = out["Location"].replace(self.upstream, self.public)
            return web.Response(status=resp.status, body=data, headers=out)

    def refuse(self, bucket: str, name: str, have: int, want: int) -> web.Response:
        self.refused += 1
        print(f"412 {bucket}/{name}: generation is {have}, precondition {want}", flush=True)
        error = {"code": 412, "message": "Precondition Failed (enforced by localcloud.gcs_proxy)"}
        return web.json_response({"error": {**error, "errors": [error]}}, status=412)

    async def conditional(
        self, request: web.Request, body: bytes, bucket: str, name: str, want: int | None
    ) -> web.Response:
        async with self.locks[(bucket, name)]:
            if want is not None:
                have = await self.generation(bucket, name)
                if have != want:
                    return self.refuse(bucket, name, have, want)
            return await self.forward(request, body)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        query = request.query
        want = int(query["ifGenerationMatch"]) if "ifGenerationMatch" in query else None
        path = request.rel_url.raw_path  # object names stay %-encoded: "raw%2Fx.jsonl"
        upload = _UPLOAD.match(path)
        if upload is not None:
            return await self.handle_upload(request, body, upload.group("bucket"), want)
        obj = _OBJECT.match(path)
        if obj is None or request.method not in ("POST", "PUT", "PATCH", "DELETE"):
            return await self.forward(request, body)
        bucket, name = obj.group("bucket"), urllib.parse.unquote(obj.group("name"))
        return await self.conditional(request, body, bucket, name, want)

    async def handle_upload(
        self, request: web.Request, body: bytes, bucket: str, want: int | None
    ) -> web.Response:
        upload_id = request.query.get("upload_id")
        if upload_id is None:  # a multipart upload, or the start of a resumable one
            name = request.query.get("name") or _name_in_metadata(request, body)
            # GCS checks the precondition when a resumable session starts and when it ends
            resp = await self.conditional(request, body, bucket, name, want)
            if request.query.get("uploadType") != "resumable" or resp.status != 200:
                return resp
            location = resp.headers.get("Location", "")
            sid = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("upload_id")
            if sid:
                self.sessions[sid[0]] = Session(bucket, name, want)
            return resp
        session = self.sessions.get(upload_id)
        if session is None or not _is_last_chunk(request.headers.get("Content-Range", "")):
            return await self.forward(request, body)
        resp = await self.conditional(
            request, body, session.bucket, session.name, session.if_generation_match
        )
        if resp.status in (200, 201, 412):
            self.sessions.pop(upload_id, None)
        return resp


def _is_last_chunk(content_range: str) -> bool:
    """`bytes 0-99/100` or `bytes */100` finish an upload; `bytes 0-99/*` does not."""
    total = content_range.rpartition("/")[2]
    return bool(total) and total != "*"


def _name_in_metadata(request: web.Request, body: bytes) -> str:
    """The object name of a multipart upload (in its JSON metadata part) or a resumable start."""
    if request.content_type == "application/json" and body:
        name = json.loads(body).get("name")
        return str(name or "")
    match = re.search(rb'"name"\s*:\s*"([^"]+)"', body[:4096])
    return match.group(1).decode() if match else ""


def make_app(upstream: str, public: str) -> web.Application:
    proxy = Proxy(upstream, public)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)

    async def close(_app: web.Application) -> None:
        await proxy.close()

    app.on_cleanup.append(close)
    app["proxy"] = proxy
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud.gcs_proxy", description=__doc__)
    parser.add_argument("--upstream", required=True, help="fake-gcs-server, http://HOST:PORT")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    public = f"http://127.0.0.1:{args.port}"
    print(f"gcs proxy {public} -> {args.upstream}", file=sys.stderr, flush=True)
    web.run_app(make_app(args.upstream, public), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
