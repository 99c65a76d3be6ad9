"""Run gcloud commands with every API pointed at a local recording server that refuses them.

usage (inside a network namespace with only loopback: `unshare -n`):
    python gcloud_offline.py COMMANDS.jsonl > RESULTS.jsonl

Each input line is a JSON argv. Each output line: {"cmd", "rc", "stderr", "requests"}, where
requests are the (method, path, body) the command sent before the server's 400 stopped it. A
command whose flags gcloud rejects exits 2 without sending anything; one that reaches the server
was parsed and turned into an API request by this gcloud version.

`bq` commands are pointed at the same server through a BIGQUERYRC file (`--api`, and the SDK's
own BigQuery discovery document, which bq would otherwise fetch from the server) and a dummy
access token; BigQuery GETs are answered 404 notFound, so `bq mk` goes on to send the request
that would create the resource, which is recorded.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

APIS = [
    "PUBSUB",
    "STORAGE",
    "IAM",
    "CLOUDFUNCTIONS",
    "RUN",
    "COMPUTE",
    "SERVICEUSAGE",
    "CLOUDRESOURCEMANAGER",
    "CLOUDBUILD",
    "ARTIFACTREGISTRY",
    "LOGGING",
    "EVENTARC",
    "MONITORING",
    "OSLOGIN",
]

_lock = threading.Lock()
_requests: dict[str, list[dict[str, Any]]] = {}


class _Refuse(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        # Each command gets its own endpoint prefix (/<index>/...), which identifies it here.
        index = self.path.split("/", 2)[1]
        with _lock:
            _requests.setdefault(index, []).append(
                {"method": self.command, "path": self.path, "body": body}
            )
        code, error = 400, {"code": 400, "message": "offline check", "status": "INVALID_ARGUMENT"}
        if self.command == "GET" and "/bigquery/v2/" in self.path:
            code = 404  # "does not exist yet": bq mk then sends its insert
            message = "Not found: offline check"
            error = {"code": 404, "message": message, "status": "NOT_FOUND",
                     "errors": [{"reason": "notFound", "message": message}]}  # fmt: skip
        payload = json.dumps({"error": error}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


def main(commands_path: str) -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with open(commands_path) as f:
        commands = [json.loads(line) for line in f if line.strip()]
    scratch = Path(tempfile.mkdtemp(prefix="gcloud-offline-"))
    (scratch / "token").write_text("offline-dummy-token\n")
    discovery = _bq_discovery() if any(Path(c[0]).name == "bq" for c in commands) else ""

    def one(item: tuple[int, list[str]]) -> dict[str, Any]:
        index, argv = item
        env = dict(os.environ)
        for api in APIS:
            env[f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api}"] = f"{base}/{index}/"
        if Path(argv[0]).name == "bq":
            rc = scratch / f"bigqueryrc.{index}"
            rc.write_text(f"--api={base}/{index}\n--discovery_file={discovery}\n")
            env["BIGQUERYRC"] = str(rc)
            env["CLOUDSDK_AUTH_ACCESS_TOKEN_FILE"] = str(scratch / "token")
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        return {"cmd": argv, "rc": proc.returncode, "stderr": proc.stderr}

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, enumerate(commands)))
    for index, result in enumerate(results):
        result["requests"] = _requests.get(str(index), [])
        print(json.dumps(result))
    server.shutdown()
    return 0


def _bq_discovery() -> str:
    """The BigQuery discovery document that ships with the installed SDK's bq."""
    sdk = subprocess.run(
        ["gcloud", "info", "--format=value(installation.sdk_root)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return str(Path(sdk) / "platform/bq/discovery_next/bigquery.json")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
