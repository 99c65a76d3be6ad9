"""Dead-letter list and redrive through the real CLI against the Pub/Sub emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from klinelake.core.contract import KlineBatch, encode_batch
from klinelake.core.row import parse_csv
from klinelake.core.symbols import object_name
from localcloud import Stack, wait_for
from tests.recorded import recorded_csv

pytestmark = pytest.mark.stack


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env()}
    return subprocess.run([sys.executable, "-m", "klinelake", "deadletters", *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_list_then_redrive_selected_dead_letters(stack: Stack) -> None:
    rows = parse_csv(recorded_csv("BTCUSDT-1h-2023-05.csv"), "BTCUSDT", "1h")
    # a stream of its own, so other tests' objects are not touched
    rows = [r.__class__(**{**r.to_dict(), "symbol": "REDRIVEUSDT"}) for r in rows[:24]]
    good = encode_batch(KlineBatch("REDRIVEUSDT", "1h", tuple(rows)), "rest")
    # a message the subscription dead-lettered after repeated transient failures (simulated by
    # publishing it to the dead-letter topic as the policy would), and a real poison message
    dl_topic = stack.state.dead_letter_topic
    dl_attrs = {"dead_letter_reason": "test outage", "original_message_id": "orig-1"}
    good_id = stack.publish(good.data, {**good.attributes, **dl_attrs}, topic=dl_topic)
    stack.publish(b"not json", {"dead_letter_reason": "data is not UTF-8 JSON",
                                "original_message_id": "orig-2"}, topic=dl_topic)  # fmt: skip

    listed = cli(stack, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = {d["original_message_id"]: d for d in json.loads(listed.stdout)}
    assert letters["orig-1"]["stream"] == "REDRIVEUSDT@1h"
    assert letters["orig-2"]["reason"] == "data is not UTF-8 JSON"

    again = cli(stack, "list", "--json")  # listing leaves them dead-lettered
    assert {d["original_message_id"] for d in json.loads(again.stdout)} >= {"orig-1", "orig-2"}

    out = cli(stack, "redrive", "--id", good_id)
    assert out.returncode == 0, out.stderr
    assert "1 redriven" in out.stderr

    name = object_name("REDRIVEUSDT", "1h")
    expected = b"".join(r.to_line() for r in rows)
    wait_for(lambda: stack.read_object(name) == expected, timeout=60)
    left = json.loads(cli(stack, "list", "--json").stdout)
    assert [d["original_message_id"] for d in left] == ["orig-2"]
    stack.pull_dead_letters()  # leave the subscription empty for other tests
