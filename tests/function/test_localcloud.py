"""localcloud without servers: missing components are named, the env file is sourceable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from localcloud import Stack, StackError, WaitTimeout, wait_for
from localcloud.stack import pubsub_emulator_binary


def test_missing_gcloud_names_the_component(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(StackError, match=r"pubsub-emulator.*google-cloud-cli-pubsub-emulator"):
        pubsub_emulator_binary()


def test_missing_emulator_component_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "gcloud"
    fake.write_text(f"#!/bin/sh\necho {tmp_path / 'sdk'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(StackError, match="install the gcloud component pubsub-emulator"):
        pubsub_emulator_binary()


def test_env_file_is_sourceable(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "s", project="p1")
    stack.state.pubsub_port, stack.state.gcs_port, stack.state.function_port = 1111, 2222, 3333
    stack._save()
    out = subprocess.run(
        ["bash", "-c", f"source {stack.env_file} && env"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:1111"
    assert env["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:2222"
    assert env["CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB"] == "http://127.0.0.1:1111/"
    assert env["KLINES_TOPIC"] == "projects/p1/topics/klines"
    assert env["DEAD_LETTER_SUBSCRIPTION"].startswith("projects/p1/subscriptions/")
    assert env["CLOUDSDK_AUTH_DISABLE_CREDENTIALS"] == "true"
    assert env["CLOUDSDK_CONFIG"].startswith(str(tmp_path))
    assert Stack.load(tmp_path / "s").state.pubsub_port == 1111


def test_down_without_a_stack_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no stack recorded"):
        Stack.load(tmp_path)


def test_wait_for_returns_the_value_or_times_out() -> None:
    calls = iter([0, 0, 7])
    assert wait_for(lambda: next(calls), 5, interval=0.001) == 7
    with pytest.raises(WaitTimeout, match="never"):
        wait_for(lambda: False, 0.05, interval=0.01, what="never")
