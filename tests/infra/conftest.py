"""Fixtures for the infra tests: a test config, a gcloud environment that can reach nothing real,
and a Pub/Sub emulator of our own (module-scoped, stopped by PID)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcloud import wait_for

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
VENV_BIN = REPO / ".venv" / "bin"

TEST_CONFIG = """\
PROJECT=test-project
PROJECT_NUMBER=123456789
REGION=us-central1
VM_REGION=asia-northeast1
VM_ZONE=asia-northeast1-b
BUCKET=test-lake
TOPIC=klines
DEAD_LETTER_TOPIC=klines-dead-letter
DEAD_LETTER_SUBSCRIPTION=klines-dead-letter-inspect
PUSH_SUBSCRIPTION=klines-ingest-push
FUNCTION_NAME=klines-ingest
VM_NAME=klines-streamer
SYMBOLS=BTCUSDC,ETHUSDC
INTERVALS=1h,1m
STREAMER_SA=klines-streamer
FUNCTION_SA=klines-ingest
PUSH_SA=klines-push
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.env"
    path.write_text(TEST_CONFIG)
    return path


def _isolated_gcloud_env(cfg_dir: Path) -> dict[str, str]:
    """gcloud with no credentials and a throwaway config: nothing real can be reached with it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
    cfg_dir.mkdir(parents=True, exist_ok=True)
    env.update(
        CLOUDSDK_CONFIG=str(cfg_dir),
        CLOUDSDK_AUTH_DISABLE_CREDENTIALS="true",
        CLOUDSDK_CORE_PROJECT="test-project",
        CLOUDSDK_CORE_DISABLE_PROMPTS="1",
        CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="true",
        CLOUDSDK_CORE_DISABLE_USAGE_REPORTING="true",
    )
    return env


@pytest.fixture
def gcloud_env(tmp_path: Path) -> dict[str, str]:
    return _isolated_gcloud_env(tmp_path / "gcloud-config")


@pytest.fixture(scope="module")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Pub/Sub emulator on a free port; yields the gcloud environment that targets it."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("gcloud SDK not installed")
    sdk_root = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        check=True,
        capture_output=True,
        text=True,
        env=_isolated_gcloud_env(tmp_path_factory.mktemp("gcloud-info")),
    ).stdout.strip()
    binary = Path(sdk_root) / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
    if not binary.exists():
        pytest.skip(f"Pub/Sub emulator not installed at {binary}")
    base = tmp_path_factory.mktemp("pubsub-emulator")
    data_dir = base / "data"
    data_dir.mkdir()
    port = free_port()
    log = (base / "emulator.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "--host=127.0.0.1", f"--port={port}"],
        cwd=data_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "JAVA_TOOL_OPTIONS": "-Xmx128m"},
        start_new_session=True,
    )
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"emulator exited early: {(base / 'emulator.log').read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for(answers, 60, 0.2, "the Pub/Sub emulator to answer")
        env = _isolated_gcloud_env(base / "gcloud-config")
        env["CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB"] = f"http://127.0.0.1:{port}/"
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")
    # Build from a copy so the repo gets no build/ directory; as infra/deploy_vm.sh builds it: no
    # setup.py and no in-place build of the extension (pure; the VM compiles the row path).
    shutil.copy(REPO / "pyproject.toml", src)
    packages = ("klinelake", "streamer", "backfill", "ingest_function")
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.dylib")
    for pkg in packages:
        if (REPO / pkg).is_dir():
            shutil.copytree(REPO / pkg, src / pkg, ignore=skip)
    subprocess.run(
        [str(VENV_BIN / "pip"), "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    return wheel
