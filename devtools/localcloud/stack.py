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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from klinelake.backends.gcs_store import GCSStore
from klinelake.backends.lake import read_object
from localcloud.gcs import (
    create_bucket,
    fake_gcs_argv,
    fake_gcs_binary,
    gcs_store,
    proxy_argv,
    wait_ready,
)
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
from localcloud.pubsub_admin import PubsubAdmin, SubscriptionSpec

DEVTOOLS = Path(__file__).resolve().parents[1]  # the dev-only distribution's root
REPO_ROOT = DEVTOOLS.parent
# Children import both distributions' packages even where the venv lacks the editable installs.
IMPORT_PATH = os.pathsep.join([str(REPO_ROOT), str(DEVTOOLS)])
EMULATOR_MISSING = (
    "the Pub/Sub emulator is not installed: install the gcloud component pubsub-emulator "
    "(apt package google-cloud-cli-pubsub-emulator, or `gcloud components install "
    "pubsub-emulator`)"
)
GCLOUD_MISSING = "the gcloud CLI is not installed (apt package google-cloud-cli): " + (
    EMULATOR_MISSING
)


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
        self._pubsub: PubsubAdmin | None = None

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
            self.create_bucket_if_missing()
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
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [IMPORT_PATH, env.get("PYTHONPATH")]))
        self._spawn("gcs-proxy", proxy_argv(st.gcs_upstream_port, st.gcs_port), env)

    def _wait_gcs(self) -> None:
        wait_ready(self.state.gcs_upstream_port, "fake-gcs-server", self.state.pids["gcs"])
        wait_ready(self.state.gcs_port, "gcs proxy", self.state.pids["gcs-proxy"])

    def _start_pubsub(self, binary: Path) -> None:
        data_dir = self.dir / "pubsub-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = self._base_env()
        # The emulator keeps every undelivered message on its heap: a backfill publishes 5,000-row
        # messages (~1.5 MB each) faster than the ordered push drains them, and with 128 MiB it
        # ran out of heap after ~39 of them (90 days of 1m behind a week); Pub/Sub itself holds
        # up to 7 days of backlog.
        env["JAVA_TOOL_OPTIONS"] = "-Xmx768m"
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
            # the push subscription's (SubscriptionSpec's) ack deadline bounds a delivery's work
            ACK_DEADLINE_S=str(SubscriptionSpec.ack_deadline_s),
        )
        env.update(overrides)
        argv = [
            sys.executable, "-m", "functions_framework",
            "--source", str(Path(__file__).with_name("function_main.py")),
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
        st = self.state
        for topic in [st.topic, st.dead_letter_topic, *st.extra_topics]:
            self.pubsub.ensure_topic(topic)
        for spec in st.subscriptions:
            self.pubsub.ensure_subscription(spec)

    def create_topic(self, topic: str) -> str:
        if topic not in self.state.extra_topics:
            self.state.extra_topics.append(topic)
        self.pubsub.ensure_topic(topic)
        self._save()
        return self.topic_path(topic)

    def create_subscription(self, spec: SubscriptionSpec) -> str:
        """Create (and remember, for restart_pubsub) a subscription; returns its path."""
        self.state.subscriptions = [s for s in self.state.subscriptions if s.name != spec.name]
        self.state.subscriptions.append(spec)
        self.pubsub.ensure_subscription(spec)
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

    # ------------------------------------------------------------------ clients and probes

    @property
    def pubsub(self) -> PubsubAdmin:
        if self._pubsub is None:
            self._pubsub = PubsubAdmin(self.pubsub_host, self.project)
        return self._pubsub

    @property
    def publisher(self) -> Any:
        return self.pubsub.publisher

    def _close_clients(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self._pubsub = None

    def publish(
        self,
        data: bytes,
        attributes: dict[str, str] | None = None,
        ordering_key: str = "",
        topic: str | None = None,
        timeout: float = 60,
    ) -> str:
        """Publish one message and return its id once the emulator accepted it."""
        return self.pubsub.publish(
            self.topic_path(topic), data, attributes, ordering_key=ordering_key, timeout=timeout
        )

    def pull(self, subscription: str, max_messages: int = 100, timeout: float = 5) -> list[Any]:
        """Pull and ack up to `max_messages` (PubsubMessage objects: data, attributes, ...)."""
        return self.pubsub.pull(self.subscription_path(subscription), max_messages, timeout)

    def pull_dead_letters(self, max_messages: int = 100, timeout: float = 5) -> list[Any]:
        return self.pull(self.state.dead_letter_subscription, max_messages, timeout)

    def create_bucket_if_missing(self) -> None:
        create_bucket(self.gcs_url, self.project, self.state.bucket)

    def store(self) -> GCSStore:
        """A klinelake GCSStore on this stack's bucket (explicit client: no env needed)."""
        return gcs_store(self.gcs_url, self.project, self.state.bucket)

    def read_object(self, name: str) -> bytes | None:
        """The object's bytes (None if it does not exist)."""
        store = self.store()
        return read_object(store, name) if store.stat(name) is not None else None

    def object_generation(self, name: str) -> int | None:
        info = self.store().stat(name)
        return None if info is None else info.generation

    def list_objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix` with its bytes (for byte-identical comparisons)."""
        store = self.store()
        return {o.name: read_object(store, o.name) for o in store.list(prefix)}

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
