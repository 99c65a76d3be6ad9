"""The ingest function end to end on the local stack (issue 5, "Done when"), asserting on the
objects in fake-gcs-server and on the function's structured log lines.

Each test writes its own stream (its own symbol), so tests share the session stack safely.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.cloud.pubsub_v1.publisher.exceptions import MessageTooLargeError

from klinelake.core.row import Kline
from klinelake.core.symbols import object_name
from localcloud import Stack, wait_for
from tests.function.helpers import klines, lines, message

pytestmark = pytest.mark.stack
DOCS = Path(__file__).resolve().parents[2] / "docs" / "replay.md"


def publish_rows(stack: Stack, rows: list[Kline], source: str = "ws", **kw: Any) -> str:
    data, attrs, key = message(rows, source)
    return stack.publish(data, attrs, key, **kw)


def object_is(stack: Stack, name: str, expected: bytes, timeout: float = 30) -> None:
    wait_for(lambda: stack.read_object(name) == expected, timeout, what=f"{name} contents")


def contains_rows(data: bytes | None, expected: bytes) -> bool:
    got = (data or b"").splitlines(keepends=True)
    want = expected.splitlines(keepends=True)
    return all(got.count(line) == 1 for line in want) and got == sorted(
        got, key=lambda line: line[: line.index(b",")]
    )


def log_lines(stack: Stack, **match: object) -> list[dict[str, Any]]:
    return [r for r in stack.function_log_lines() if all(r.get(k) == v for k, v in match.items())]


def at_least(stack: Stack, n: int, **match: object) -> list[dict[str, Any]]:
    """The matching log lines once there are at least `n` of them (else [] to keep waiting)."""
    found = log_lines(stack, **match)
    return found if len(found) >= n else []


@pytest.fixture
def healthy_function(stack: Stack) -> Any:
    """Leave the function as it was (no fault injection) whatever the test did."""
    yield stack
    if stack.state.function_env:
        stack.restart_function({})


def test_live_single_row_messages_build_the_object_by_compose(stack: Stack) -> None:
    rows = klines("LIVEAPPEND", 25)
    for row in rows:
        publish_rows(stack, [row])
    name = object_name("LIVEAPPEND", "1h")
    object_is(stack, name, lines(rows))
    recs = wait_for(lambda: at_least(stack, 25, stream="LIVEAPPEND@1h"))
    assert len(recs) == 25
    assert [r["action"] for r in recs] == ["create"] + ["append"] * 24
    for r in recs:
        # the object is never downloaded on the live path: the function's writer knows the
        # generation and bounds it made, so only the staged part, a compose and its delete
        assert "open_lines" not in r["storage_calls"], r
        assert r["rows_appended"] == 1 and r["rows_merged"] == 0
    for prev, cur in itertools.pairwise(recs):
        assert cur["storage_calls"] == {"write": 1, "compose": 1, "delete": 1}
        assert cur["generation_before"] == prev["generation_after"]
    assert stack.store().list("staging/") == []


def test_backfill_batch_merges_and_identical_redelivery_keeps_the_generation(
    stack: Stack,
) -> None:
    rows = klines("BACKFILL", 40)
    name = object_name("BACKFILL", "1h")
    publish_rows(stack, rows[:25])
    object_is(stack, name, lines(rows[:25]))
    # a backfill batch overlapping the tail, correcting 5 rows: the batch wins
    corrected = [
        Kline(**{**r.to_dict(), "close": "1.00000000"}) if 15 <= i < 20 else r
        for i, r in enumerate(rows[15:40], start=15)
    ]
    merge_id = publish_rows(stack, corrected, source="rest")
    expected = lines(rows[:15] + corrected)
    object_is(stack, name, expected)
    merge = wait_for(lambda: log_lines(stack, message_id=merge_id))[0]
    assert merge["action"] == "merge"
    assert (merge["rows_merged"], merge["rows_replaced"], merge["rows_ignored"]) == (15, 5, 5)
    generation = stack.object_generation(name)
    assert generation == merge["generation_after"]
    again_id = publish_rows(stack, corrected, source="rest")
    again = wait_for(lambda: log_lines(stack, message_id=again_id))[0]
    assert again["action"] == "noop" and again["rows_ignored"] == 25
    assert stack.object_generation(name) == generation
    assert stack.read_object(name) == expected


def test_out_of_order_duplicated_and_redelivered_messages_end_exactly_once(
    healthy_function: Stack, tmp_path: Path
) -> None:
    stack = healthy_function
    fails = 3
    stack.restart_function(
        {"INGEST_FAIL_FIRST_N": str(fails), "INGEST_FAIL_STATE": str(tmp_path / "failures")}
    )
    rows = klines("REDELIVER", 40)
    name = object_name("REDELIVER", "1h")
    sends = [rows[20:30], rows[0:10], rows[25:40], rows[10:20], rows[5:15], rows[20:30]]
    ids = [publish_rows(stack, chunk, source="rest") for chunk in sends]
    publish_rows(stack, [rows[39]])  # a live duplicate of the last row
    object_is(stack, name, lines(rows), timeout=60)
    injected = wait_for(lambda: at_least(stack, fails, error="InjectedFailure"))
    assert len(injected) == fails
    # the first message failed `fails` times and was redelivered, then written once
    assert {r["message_id"] for r in injected} == {ids[0]}
    first = wait_for(lambda: log_lines(stack, message_id=ids[0], severity="INFO"))
    # written once: its first success creates the object; Pub/Sub is at-least-once, so a later
    # redelivery of the acked message (the emulator does this now and then) must be a no-op
    assert first[0]["action"] == "create", first
    assert all(r["action"] == "noop" for r in first[1:]), first
    assert (tmp_path / "failures").read_text() != ""


POISON_ORDER = ["not_json", "wrong_schema", "bad_symbol", "contradicting", "empty", "junk_9_9mb"]


def poison_messages() -> dict[str, tuple[bytes, dict[str, str]]]:
    good_data, good_attrs, _ = message(klines("POISONGOOD", 3))
    bad_symbol_row = {**klines("X", 1)[0].to_dict(), "symbol": "../x"}
    return {
        "not_json": (b"definitely not json {", {}),
        "wrong_schema": (b'{"symbol":"POISONGOOD","interval":"1h","rows":[1,2]}', {}),
        "bad_symbol": (
            orjson.dumps({"symbol": "../x", "interval": "1h", "klines": [bad_symbol_row]}),
            {},
        ),
        "contradicting": (good_data, {**good_attrs, "symbol": "ETHUSDC"}),
        "empty": (b"", {}),
        "junk_9_9mb": (os.urandom(9_900_000), {}),
    }


def test_poison_of_every_kind_is_dead_lettered_and_the_lake_is_untouched(stack: Stack) -> None:
    publish_rows(stack, klines("POISONSEED", 3))
    object_is(stack, object_name("POISONSEED", "1h"), lines(klines("POISONSEED", 3)))
    stack.pull_dead_letters()  # start from an empty dead-letter subscription
    before = stack.list_objects()

    # 20 MB: refused at publish. It is the client library that refuses (> 10 MB, before sending);
    # the emulator does not refuse cleanly (a raw 20 MB Publish RPC hangs until the deadline)
    # and runs out of heap (-Xmx128m) pushing a message over 10 MB, so the function's own guard
    # for > 10 MB is shown in test_handler.py; here a 9.9 MB junk message shows the dead-letter
    # copy's size guard (truncated, with dead_letter_truncated=<original size>).
    with pytest.raises(MessageTooLargeError):
        stack.publish(b"\x00" * 20_000_000, {"case": "junk_20mb"})

    published: dict[str, tuple[str, bytes]] = {}
    got: dict[str, Any] = {}

    def all_dead_lettered() -> bool:
        for m in stack.pull_dead_letters(10):
            got[m.attributes["case"]] = m
        return set(got) == set(published)

    for case, (data, attrs) in poison_messages().items():
        published[case] = (stack.publish(data, {**attrs, "case": case}), data)
    wait_for(all_dead_lettered, 60, interval=0.2, what="every poison message dead-lettered")
    for case, (message_id, data) in published.items():
        dl = got[case]
        assert dl.attributes["original_message_id"] == message_id, case
        assert dl.attributes["dead_letter_reason"], case
        if case.startswith("junk_"):
            assert dl.attributes["dead_letter_truncated"] == str(len(data))
            assert dl.data == data[: len(dl.data)] and len(dl.data) < len(data)
        else:
            assert dl.data == data, case
        warnings = log_lines(stack, message_id=message_id, severity="WARNING")
        assert len(warnings) == 1 and warnings[0]["reason"] == dl.attributes["dead_letter_reason"]
    assert "contradicts" in got["contradicting"].attributes["dead_letter_reason"]
    assert "'..'" in got["bad_symbol"].attributes["dead_letter_reason"]
    assert stack.list_objects() == before  # byte-identical, and no new object


def test_subscription_dead_letter_policy_after_repeated_transient_failures(
    healthy_function: Stack, tmp_path: Path
) -> None:
    stack = healthy_function
    stack.restart_function(
        {"INGEST_FAIL_FIRST_N": "1000", "INGEST_FAIL_STATE": str(tmp_path / "failures")}
    )
    # unordered: the emulator's ordered subscription stops pushing for good once it dead-letters
    stack.create_dead_letter_policy_subscription(
        "dlp-push", "dlp-in", "dlp-dead", max_delivery_attempts=5
    )
    rows = klines("DLPOLICY", 2)
    data, attrs, _ = message(rows)
    message_id = stack.publish(data, attrs, topic="dlp-in")
    dead = wait_for(lambda: stack.pull("dlp-dead-pull", 10), 60, interval=0.2)
    assert len(dead) == 1
    assert dead[0].data == data
    assert dead[0].attributes["symbol"] == "DLPOLICY"
    failures = int((tmp_path / "failures").read_text())
    assert failures >= 5  # every delivery attempt failed before the policy dead-lettered it
    assert stack.read_object(object_name("DLPOLICY", "1h")) is None
    assert message_id


def replay_command() -> str:
    text = DOCS.read_text()
    block = re.search(r"<!-- replay-command.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert block, "docs/replay.md lost its replay-command block"
    return block.group(1)


def test_operator_replay_with_the_documented_gcloud_command(stack: Stack) -> None:
    command = replay_command()
    assert command.startswith('gcloud pubsub topics publish "$KLINES_TOPIC"')
    env = {**os.environ, **stack.env()}
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE"):
        env.pop(var, None)
    done = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "messageIds" in done.stdout
    expected = lines(klines("BTCUSDC", 2))
    # the documented stream is BTCUSDC@1h, which other suites on this session's stack also
    # fill (backfill through Pub/Sub): the replayed rows must be there, in order, once each
    name = object_name("BTCUSDC", "1h")
    wait_for(lambda: contains_rows(stack.read_object(name), expected), 30, what=f"{name} rows")
    # other suites' backfill messages for this stream may be logged after ours: find ours
    recs = wait_for(lambda: log_lines(stack, stream="BTCUSDC@1h", source="replay"), 30)
    assert recs[-1]["action"] in ("create", "append", "prepend", "merge", "noop")


def test_second_stack_side_by_side_and_down_leaves_nothing(stack: Stack, tmp_path: Path) -> None:
    import sys

    from localcloud.procs import port_open

    root = Path(__file__).resolve().parents[2]
    run = [sys.executable, "-m", "localcloud"]
    up = subprocess.run(
        [*run, "up", "--dir", str(tmp_path / "s2"), "--project", "other"],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    other = Stack.load(tmp_path / "s2")
    try:
        assert up.returncode == 0, up.stderr
        assert "export KLINES_TOPIC=projects/other/topics/klines" in up.stdout
        ports = {other.state.gcs_port, other.state.pubsub_port, other.state.function_port}
        mine = {stack.state.gcs_port, stack.state.pubsub_port, stack.state.function_port}
        assert not ports & mine
        rows = klines("SIDEBYSIDE", 2)
        data, attrs, key = message(rows)
        other.publish(data, attrs, key)
        object_is(other, object_name("SIDEBYSIDE", "1h"), lines(rows))
        assert stack.read_object(object_name("SIDEBYSIDE", "1h")) is None
        pids = dict(other.state.pids)
    finally:
        down = subprocess.run(
            [*run, "down", "--dir", str(tmp_path / "s2")],
            cwd=root, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    for name in ("function", "pubsub", "gcs"):
        assert f"stopped {name}" in down.stdout
    assert Stack.load(tmp_path / "s2").any_process_left() == []
    from localcloud.procs import group_members

    assert all(group_members(pid) == [] for pid in pids.values())
    assert not any(port_open(p) for p in ports)
    assert all(stack.running().values())  # the session stack is untouched


def test_gcs_store_streaming_write_reports_the_new_generation(stack: Stack) -> None:
    # regression: GCSStore.write(iterable) returned generation None (BlobWriter leaves the
    # blob's properties unset), which crashed every merge on GCS
    store = stack.store()
    info = store.write("tests/streamed.jsonl", iter([b"a\n", b"b\n"]), if_generation_match=0)
    assert info.generation == stack.object_generation("tests/streamed.jsonl")
    assert info.size == 4
    assert stack.read_object("tests/streamed.jsonl") == b"a\nb\n"


def test_restart_pubsub_keeps_the_stack_working(stack: Stack) -> None:
    pid = stack.state.pids["pubsub"]
    stack.restart_pubsub()
    assert stack.state.pids["pubsub"] != pid
    rows = klines("AFTERRESTART", 3)
    publish_rows(stack, rows)
    object_is(stack, object_name("AFTERRESTART", "1h"), lines(rows))
    data = b"not json"
    message_id = stack.publish(data, {"case": "after-restart"})
    dead = wait_for(lambda: stack.pull_dead_letters(10), 30, interval=0.2)
    assert [(m.data, m.attributes["original_message_id"]) for m in dead] == [(data, message_id)]
