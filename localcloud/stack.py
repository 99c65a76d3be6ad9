"""The local cloud: fake-gcs-server + the Pub/Sub emulator + the ingest function, wired together.

    publisher ──> topic ──ordered push──> functions-framework (localcloud/function_main.py: ingest)
                                            │           └──> dead-letter topic ──> pull sub
                                            └──> fake-gcs-server bucket (LAKE_URI)

`Stack(dir).start()` starts the three servers detached (each in its own process group), creates
the bucket, topics and subscriptions, and writes `dir/state.json` (ports, pids) and `dir/env`
(sourceable `export` lines). `Stack(dir).stop()` (or `Stack.load(dir).stop()` from another
process) stops every group it started, by pid, and checks that no process and no port is left.

What the stand-ins do not emulate is written down in shared/DESIGN.md; in particular the ordered
push subscription has no dead-letter policy here (the emulator stops pushing for good when an
ordered subscription dead-letters): poison is dead-lettered by the function itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from localcloud.gcs import fake_gcs_argv, fake_gcs_binary, proxy_argv, wait_ready
from localcloud.procs import (
    READY_TIMEOUT,
    StackError,
    free_port,
    group_members,
    http_answers,
    pid_alive,
    poll,
    port_open,
    spawn,
    stop_group,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
EMULATOR_MISSING = (
    "the Pub/Sub emulator is not installed: install the gcloud component pubsub-emulator "
    "(apt package google-cloud-cli-pubsub-emulator, or `gcloud components install "
    "pubsub-emulator`)"
)
GCLOUD_MISSING = "the gcloud CLI is not installed (apt package google-cloud-cli): " + (
    EMULATOR_MISSING
)


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


@dataclass
class StackState:
    project: str
    bucket: str
    topic: str
    dead_letter_topic: str
    dead_letter_subscription: str
    push_subscription: str
    gcs_port: int = 0  # the generation-enforcing proxy: what every client uses
    gcs_upstream_port: int = 0  # fake-gcs-server behind it
    pubsub_port: int = 0
    function_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    function_env: dict[str, str] = field(default_factory=dict)
    extra_topics: list[str] = field(default_factory=list)
    subscriptions: list[SubscriptionSpec] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StackState:
        subs = [SubscriptionSpec(**s) for s in raw.pop("subscriptions", [])]
        return cls(**raw, subscriptions=subs)


def pubsub_emulator_binary() -> Path:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise StackError(GCLOUD_MISSING)
    out = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    sdk_root = out.stdout.strip()
    path = Path(sdk_root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not sdk_root or not path.exists():
        raise StackError(f"{EMULATOR_MISSING} (looked for {path})")
    return path


class Stack:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        project: str = "local-project",
        *,
        bucket: str = "klines-lake",
        topic: str = "klines",
    ) -> None:
        self.dir = Path(directory).resolve()
        self.state = StackState(
            project=project,
            bucket=bucket,
            topic=topic,
            dead_letter_topic=f"{topic}-dead-letter",
            dead_letter_subscription=f"{topic}-dead-letter-pull",
            push_subscription=f"{topic}-ingest-push",
        )
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self._publisher: Any = None
        self._subscriber: Any = None
        self._http: httpx.Client | None = None

    # ------------------------------------------------------------------ names and env

    @property
    def project(self) -> str:
        return self.state.project

    def topic_path(self, topic: str | None = None) -> str:
        return f"projects/{self.project}/topics/{topic or self.state.topic}"

    def subscription_path(self, sub: str) -> str:
        return f"projects/{self.project}/subscriptions/{sub}"

    @property
    def pubsub_host(self) -> str:
        return f"127.0.0.1:{self.state.pubsub_port}"

    @property
    def gcs_url(self) -> str:
        return f"http://127.0.0.1:{self.state.gcs_port}"

    @property
    def function_url(self) -> str:
        return f"http://127.0.0.1:{self.state.function_port}"

    @property
    def lake_uri(self) -> str:
        return f"gs://{self.state.bucket}"

    @property
    def function_log(self) -> Path:
        return self.dir / "logs" / "function.log"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def env_file(self) -> Path:
        return self.dir / "env"

    def env(self) -> dict[str, str]:
        """What a shell (or a publisher, or gcloud) needs to talk to this stack."""
        return {
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "STORAGE_EMULATOR_HOST": self.gcs_url,
            "KLINES_TOPIC": self.topic_path(),
            "LAKE_URI": self.lake_uri,
            "DEAD_LETTER_TOPIC": self.topic_path(self.state.dead_letter_topic),
            "DEAD_LETTER_SUBSCRIPTION": self.subscription_path(self.state.dead_letter_subscription),
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://{self.pubsub_host}/",
            "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
            "CLOUDSDK_CORE_PROJECT": self.project,
            "CLOUDSDK_CONFIG": str(self.dir / "gcloud-config"),
            "GOOGLE_CLOUD_PROJECT": self.project,
        }

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Stack:
        """The stack recorded in `directory/state.json` (started by another process)."""
        path = Path(directory).resolve() / "state.json"
        if not path.exists():
            raise StackError(f"no stack recorded in {path.parent} (state.json missing)")
        raw = json.loads(path.read_text())
        stack = cls(directory, raw["project"], bucket=raw["bucket"], topic=raw["topic"])
        stack.state = StackState.from_json(raw)
        return stack

    def running(self) -> dict[str, bool]:
        return {name: pid_alive(pid) for name, pid in self.state.pids.items()}

    def start(self) -> Stack:
        if self.state_file.exists():
            old = Stack.load(self.dir)
            if any(old.running().values()):
                raise StackError(f"a stack is already running from {self.dir}: stop it first")
        emulator = pubsub_emulator_binary()  # fail early, naming the missing component
        gcs_bin = fake_gcs_binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "gcloud-config").mkdir(exist_ok=True)
        st = self.state
        st.gcs_port, st.pubsub_port, st.function_port = free_port(), free_port(), free_port()
        st.gcs_upstream_port = free_port()
        try:
            self._start_gcs(gcs_bin)
            self._start_pubsub(emulator)
            self._start_function(st.function_env)
            self._wait_gcs()
            self._create_bucket()
            self._wait_pubsub()
            self._declare_pubsub_defaults()
            self._create_pubsub_resources()
            self._wait_function()
            self._save()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> dict[str, list[int]]:
        """Stop every process group this stack started; return the pids stopped per server."""
        self._close_clients()
        stopped: dict[str, list[int]] = {}
        for name in ("function", "pubsub", "gcs-proxy", "gcs"):
            pid = self.state.pids.get(name)
            if pid is None:
                continue
            stopped[name] = stop_group(pid, popen=self._popen.pop(name, None))
        ports = [self.state.function_port, self.state.pubsub_port, self.state.gcs_port,
                 self.state.gcs_upstream_port]  # fmt: skip
        for port in ports:
            if port:
                poll(lambda p=port: not port_open(p), 10, f"port {port} to close")  # type: ignore[misc]
        self.state.pids.clear()
        if self.dir.exists():
            self._save()
        return stopped

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        tmp.replace(self.state_file)
        lines = [f"export {k}={_shell_quote(v)}" for k, v in self.env().items()]
        self.env_file.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ servers

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PUBSUB_", "STORAGE_EM"))}
        env.pop("INGEST_FAIL_FIRST_N", None)
        env.pop("INGEST_FAIL_STATE", None)
        return env

    def _start_gcs(self, binary: Path) -> None:
        root = self.dir / "gcs"
        root.mkdir(parents=True, exist_ok=True)
        st = self.state
        self._spawn("gcs", fake_gcs_argv(binary, root, st.gcs_upstream_port, st.gcs_port),
                    self._base_env())  # fmt: skip
        env = self._base_env()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self._spawn("gcs-proxy", proxy_argv(st.gcs_upstream_port, st.gcs_port), env)

    def _wait_gcs(self) -> None:
        wait_ready(self.state.gcs_upstream_port, "fake-gcs-server", self.state.pids["gcs"])
        wait_ready(self.state.gcs_port, "gcs proxy", self.state.pids["gcs-proxy"])

    def _start_pubsub(self, binary: Path) -> None:
        data_dir = self.dir / "pubsub-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = self._base_env()
        env["JAVA_TOOL_OPTIONS"] = "-Xmx128m"
        argv = [
            str(binary), "--host=127.0.0.1", f"--port={self.state.pubsub_port}",
            f"--data-dir={data_dir}",
        ]  # fmt: skip
        self._spawn("pubsub", argv, env)

    def _wait_pubsub(self) -> None:
        url = f"http://{self.pubsub_host}/"
        poll(lambda: http_answers(url, (200,)), READY_TIMEOUT, "Pub/Sub emulator",
             alive=lambda: pid_alive(self.state.pids["pubsub"]))  # fmt: skip

    def _start_function(self, overrides: dict[str, str]) -> None:
        env = self._base_env()
        env.update(
            LAKE_URI=self.lake_uri,
            STORAGE_EMULATOR_HOST=self.gcs_url,
            PUBSUB_EMULATOR_HOST=self.pubsub_host,
            DEAD_LETTER_TOPIC=self.topic_path(self.state.dead_letter_topic),
            GOOGLE_CLOUD_PROJECT=self.project,
            PYTHONUNBUFFERED="1",
            WORKERS=env.get("WORKERS", "1"),
            THREADS=env.get("THREADS", "8"),
        )
        env.update(overrides)
        argv = [
            sys.executable, "-m", "functions_framework",
            "--source", str(REPO_ROOT / "localcloud" / "function_main.py"),
            "--target", "ingest", "--signature-type", "cloudevent",
            "--host", "127.0.0.1", "--port", str(self.state.function_port),
        ]  # fmt: skip
        self._spawn("function", argv, env, log=self.function_log)

    def _wait_function(self) -> None:
        # Any HTTP answer means gunicorn is serving and the module imported.
        poll(lambda: http_answers(self.function_url + "/"), READY_TIMEOUT, "functions-framework",
             alive=lambda: pid_alive(self.state.pids["function"]))  # fmt: skip

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], log: Path | None = None
    ) -> None:
        proc = spawn(argv, log or self.dir / "logs" / f"{name}.log", env, cwd=REPO_ROOT)
        self._popen[name] = proc
        self.state.pids[name] = proc.pid
        self._save()  # record the pid at once, so `down` finds it even if `up` dies

    def restart_function(self, env_overrides: dict[str, str] | None = None) -> None:
        """Restart the function with extra environment (e.g. INGEST_FAIL_FIRST_N); {} resets."""
        pid = self.state.pids.pop("function", None)
        if pid is not None:
            stop_group(pid, popen=self._popen.pop("function", None))
        poll(lambda: not port_open(self.state.function_port), 10, "function port to close")
        self.state.function_env = dict(env_overrides or {})
        self._start_function(self.state.function_env)
        self._wait_function()
        self._save()

    def restart_pubsub(self) -> None:
        """Stop the emulator and start it again on the same port and data dir; re-create the
        topics and subscriptions (the emulator does not keep them)."""
        self._close_clients()
        pid = self.state.pids.pop("pubsub", None)
        if pid is not None:
            stop_group(pid, popen=self._popen.pop("pubsub", None))
        poll(lambda: not port_open(self.state.pubsub_port), 10, "emulator port to close")
        self._start_pubsub(pubsub_emulator_binary())
        self._wait_pubsub()
        self._create_pubsub_resources()
        self._save()

    # ------------------------------------------------------------------ resources

    def _declare_pubsub_defaults(self) -> None:
        st = self.state
        st.subscriptions = [
            SubscriptionSpec(st.dead_letter_subscription, st.dead_letter_topic),
            SubscriptionSpec(
                st.push_subscription, st.topic,
                push_endpoint=f"{self.function_url}/{self.topic_path()}", ordered=True,
            ),
        ]  # fmt: skip

    def _create_pubsub_resources(self) -> None:
        from google.api_core import exceptions as gexc

        st = self.state
        for topic in [st.topic, st.dead_letter_topic, *st.extra_topics]:
            with contextlib.suppress(gexc.AlreadyExists):
                self.publisher.create_topic(request={"name": self.topic_path(topic)})
        for spec in st.subscriptions:
            with contextlib.suppress(gexc.AlreadyExists):
                self.subscriber.create_subscription(request=self._subscription_request(spec))

    def _subscription_request(self, spec: SubscriptionSpec) -> dict[str, Any]:
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

    def create_topic(self, topic: str) -> str:
        from google.api_core import exceptions as gexc

        if topic not in self.state.extra_topics:
            self.state.extra_topics.append(topic)
        with contextlib.suppress(gexc.AlreadyExists):
            self.publisher.create_topic(request={"name": self.topic_path(topic)})
        self._save()
        return self.topic_path(topic)

    def create_subscription(self, spec: SubscriptionSpec) -> str:
        """Create (and remember, for restart_pubsub) a subscription; returns its path."""
        from google.api_core import exceptions as gexc

        self.state.subscriptions = [s for s in self.state.subscriptions if s.name != spec.name]
        self.state.subscriptions.append(spec)
        with contextlib.suppress(gexc.AlreadyExists):
            self.subscriber.create_subscription(request=self._subscription_request(spec))
        self._save()
        return self.subscription_path(spec.name)

    def create_dead_letter_policy_subscription(
        self, name: str, topic: str, dead_letter_topic: str, max_delivery_attempts: int = 5
    ) -> str:
        """An UNORDERED push subscription to the function with a dead-letter policy (the
        emulator's ordered + dead-letter combination breaks, see DESIGN.md). Creates both
        topics and a pull subscription `{dead_letter_topic}-pull` on the dead-letter topic."""
        self.create_topic(topic)
        self.create_topic(dead_letter_topic)
        self.create_subscription(SubscriptionSpec(f"{dead_letter_topic}-pull", dead_letter_topic))
        return self.create_subscription(
            SubscriptionSpec(
                name, topic, push_endpoint=f"{self.function_url}/{self.topic_path(topic)}",
                dead_letter_topic=dead_letter_topic, max_delivery_attempts=max_delivery_attempts,
            )
        )  # fmt: skip

    # ------------------------------------------------------------------ clients and helpers

    def _channel(self) -> Any:
        import grpc

        return grpc.insecure_channel(
            self.pubsub_host,
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

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.gcs_url, timeout=60)
        return self._http

    def _close_clients(self) -> None:
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                self._publisher.stop()
            with contextlib.suppress(Exception):
                self._publisher.transport.close()
        if self._subscriber is not None:
            with contextlib.suppress(Exception):
                self._subscriber.close()
        if self._http is not None:
            self._http.close()
        self._publisher = self._subscriber = self._http = None

    def publish(
        self,
        data: bytes,
        attributes: dict[str, str] | None = None,
        ordering_key: str = "",
        topic: str | None = None,
        timeout: float = 60,
    ) -> str:
        """Publish one message and return its id once the emulator accepted it."""
        topic_path = self.topic_path(topic)
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

    def pull(self, subscription: str, max_messages: int = 100, timeout: float = 5) -> list[Any]:
        """Pull and ack up to `max_messages` (PubsubMessage objects: data, attributes, ...)."""
        from google.api_core import exceptions as gexc

        path = self.subscription_path(subscription)
        try:
            resp = self.subscriber.pull(
                request={
                    "subscription": path,
                    "max_messages": max_messages,
                    "return_immediately": True,
                },
                timeout=timeout,
            )
        except gexc.DeadlineExceeded:
            return []
        if resp.received_messages:
            self.subscriber.acknowledge(
                request={
                    "subscription": path,
                    "ack_ids": [m.ack_id for m in resp.received_messages],
                }
            )
        return [m.message for m in resp.received_messages]

    def pull_dead_letters(self, max_messages: int = 100, timeout: float = 5) -> list[Any]:
        return self.pull(self.state.dead_letter_subscription, max_messages, timeout)

    def create_bucket_if_missing(self) -> None:
        self._create_bucket()

    def _create_bucket(self) -> None:
        resp = self.http.post(
            "/storage/v1/b", params={"project": self.project}, json={"name": self.state.bucket}
        )
        if resp.status_code not in (200, 409):
            raise StackError(f"creating bucket {self.state.bucket}: {resp.status_code} {resp.text}")

    def _object_url(self, name: str) -> str:
        quoted = urllib.parse.quote(name, safe="")
        return f"/storage/v1/b/{self.state.bucket}/o/{quoted}"

    def read_object(self, name: str) -> bytes | None:
        """The object's bytes from fake-gcs (None if it does not exist)."""
        resp = self.http.get(self._object_url(name), params={"alt": "media"})
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.content

    def object_generation(self, name: str) -> int | None:
        resp = self.http.get(self._object_url(name))
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return int(resp.json()["generation"])

    def list_objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix` with its bytes (for byte-identical comparisons)."""
        resp = self.http.get(f"/storage/v1/b/{self.state.bucket}/o", params={"prefix": prefix})
        resp.raise_for_status()
        names = [item["name"] for item in resp.json().get("items", [])]
        return {n: self.read_object(n) or b"" for n in sorted(names)}

    def store(self) -> Any:
        """A klinelake GCSStore on this stack's bucket (explicit client: no env needed)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        from klinelake.gcs_store import GCSStore

        client = storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.gcs_url},
        )
        return GCSStore(self.state.bucket, client=client)

    def function_log_lines(self) -> list[dict[str, Any]]:
        """The function's structured (JSON) log lines so far."""
        out: list[dict[str, Any]] = []
        if not self.function_log.exists():
            return out
        for line in self.function_log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def any_process_left(self) -> list[int]:
        return [p for pid in self.state.pids.values() for p in group_members(pid)]


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)
