#!/usr/bin/env python3
"""A stateful stand-in for the gcloud commands the infra scripts use (state in $FAKE_GCLOUD_STATE).

It knows resources only by command group and name, keeps the flags they were created or updated
with, and answers describe/get-iam-policy in the output shapes the scripts ask for with --format.
It lets tests run the scripts' real (not --dry-run) paths twice and see what a re-run does; the
formats themselves are checked against the real gcloud elsewhere (offline parse test, emulator).
Every call is appended to $FAKE_GCLOUD_STATE.log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

VERBS = {
    "describe", "create", "delete", "list", "enable", "deploy", "update", "add-metadata", "cp",
    "stop", "start", "rm", "add-iam-policy-binding", "remove-iam-policy-binding", "get-iam-policy",
}  # fmt: skip


def main(argv: list[str]) -> int:
    state_path = Path(os.environ["FAKE_GCLOUD_STATE"])
    with Path(f"{state_path}.log").open("a") as log:
        log.write(json.dumps(argv) + "\n")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    res: dict[str, dict[str, object]] = state.setdefault("resources", {})
    iam: dict[str, list[str]] = state.setdefault("iam", {})
    apis: list[str] = state.setdefault("apis", [])

    flags = {}
    words = []
    for a in argv:
        if a.startswith("--"):
            k, _, v = a[2:].partition("=")
            flags[k] = v
        else:
            words.append(a)
    if words[:3] == ["beta", "services", "identity"]:
        return 0
    if words[:2] == ["compute", "ssh"]:
        # The preflight: run $FAKE_SSH_RUN here instead of the remote command (a test points it
        # at `python -m streamer --check` against the simulator), with FAKE_SSH_ENV_FILE set to
        # the EnvironmentFile= the remote command names (one per market).
        run = os.environ.get("FAKE_SSH_RUN")
        found = re.search(r"EnvironmentFile=(\S+)", flags.get("command", ""))
        env = {**os.environ, "FAKE_SSH_ENV_FILE": found[1] if found else ""}
        return subprocess.run(run, shell=True, check=False, env=env).returncode if run else 0
    if words[:3] == ["alpha", "monitoring", "policies"]:
        code = policies(state, words[3:], flags)
        state_path.write_text(json.dumps(state))
        return code
    verb_at = next(i for i, w in enumerate(words) if w in VERBS)
    group, verb = " ".join(words[:verb_at]), words[verb_at]
    names = words[verb_at + 1 :]
    fmt = flags.get("format", "")

    if group == "services":
        if verb == "list":
            print("\n".join(apis))
        else:
            apis.extend(n for n in names if n not in apis)
    elif group == "storage" and verb == "cp":
        res[f"storage objects {names[1]}"] = {}
    elif group == "storage" and verb == "rm":
        res.pop(f"storage buckets {names[0]}", None)
    else:
        key = f"{group} {names[0]}" if names else group
        if group == "iam service-accounts" and verb == "create":
            key = f"{group} {names[0]}@{flags['project']}.iam.gserviceaccount.com"
        if group == "functions" and verb == "deploy":
            verb = "create" if key not in res else "update"
        if verb == "describe":
            if key not in res:
                print(f"ERROR: NOT_FOUND: {key} was not found", file=sys.stderr)
                return 1
            print(describe(res[key], fmt, flags))
        elif verb == "create":
            if key in res:
                print(f"ERROR: ALREADY_EXISTS: {key}", file=sys.stderr)
                return 1
            res[key] = {"flags": flags}
        elif verb in ("update", "add-metadata"):
            if key not in res:
                print(f"ERROR: NOT_FOUND: {key}", file=sys.stderr)
                return 1
            stored = res[key].setdefault("flags", {})
            assert isinstance(stored, dict)
            for k, v in flags.items():
                if k == "update-labels":
                    labels = dict(
                        kv.split("=", 1) for kv in stored.get("labels", "").split(",") if kv
                    )
                    labels.update(kv.partition("=")[::2] for kv in v.split(","))
                    stored["labels"] = ",".join(f"{a}={b}" for a, b in labels.items())
                else:
                    stored[k] = v
        elif verb == "delete":
            if res.pop(key, None) is None:
                print(f"ERROR: NOT_FOUND: {key}", file=sys.stderr)
                return 1
        elif verb == "get-iam-policy":
            print("\n".join(iam.get(key, [])))
        elif verb == "add-iam-policy-binding":
            line = f"{flags['role']},{flags['member']}"
            if line not in iam.setdefault(key, []):
                iam[key].append(line)
        elif verb == "remove-iam-policy-binding":
            iam[key].remove(f"{flags['role']},{flags['member']}")
    state_path.write_text(json.dumps(state))
    return 0


def policies(state: dict[str, object], words: list[str], flags: dict[str, str]) -> int:
    """Alert policies by server-assigned name, listed by displayName as monitoring.sh asks."""
    stored = state.setdefault("policies", {})
    assert isinstance(stored, dict)
    verb = words[0]
    if verb == "list":
        f = flags.get("filter", "")
        for name, p in stored.items():
            shown = p["displayName"]
            if (f.startswith("displayName=") and shown == f.split("=", 1)[1].strip('"')) or (
                f.startswith("displayName:") and f.split(":", 1)[1].strip('"') in shown
            ):
                fp = p.get("userLabels", {}).get("klines-fingerprint", "")
                print(name if flags.get("format") == "value(name)" else f"{name}\t{fp}")
        return 0
    if verb == "create":
        name = f"projects/{flags['project']}/alertPolicies/{len(stored) + 1}"
        stored[name] = json.loads(Path(flags["policy-from-file"]).read_text())
        return 0
    if words[1] not in stored:
        print(f"ERROR: NOT_FOUND: {words[1]}", file=sys.stderr)
        return 1
    if verb == "update":
        stored[words[1]] = json.loads(Path(flags["policy-from-file"]).read_text())
    elif verb == "delete":
        del stored[words[1]]
    return 0


def describe(resource: dict[str, object], fmt: str, args: dict[str, str]) -> str:
    flags = resource.get("flags", {})
    assert isinstance(flags, dict)
    labels = dict(
        kv.split("=", 1)
        for kv in (flags.get("labels", "") or flags.get("update-labels", "")).split(",")
        if kv
    )
    if fmt == "json" and "config-from-file" in flags:  # a log-based metric
        return Path(flags["config-from-file"]).read_text()
    if fmt.startswith("value(labels."):
        return str(labels.get(fmt[len("value(labels.") : -1], ""))
    if fmt == "value(serviceConfig.uri)":
        return "https://fn-123456789.us-central1.run.app"
    if fmt.startswith('value[separator="|"](uniform_bucket_level_access'):
        return "True|enforced|0"
    if fmt == "json(lifecycle_config)":
        lifecycle = json.loads(Path(flags["lifecycle-file"]).read_text())
        return json.dumps({"lifecycle_config": lifecycle})
    if fmt == "value(topic)":
        return f"projects/{args['project']}/topics/{flags['topic']}"
    if fmt.startswith('value[separator="|"](topic,enableMessageOrdering'):
        project = args["project"]

        def secs(d: str) -> str:
            n = int(d[:-1])
            return f"{n * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}[d[-1]]}s"

        return "|".join(
            [
                f"projects/{project}/topics/{flags['topic']}",
                "True" if "enable-message-ordering" in flags else "False",
                flags["push-endpoint"],
                flags["push-auth-service-account"],
                flags["push-auth-token-audience"],
                flags["ack-deadline"],
                secs(flags["min-retry-delay"]),
                secs(flags["max-retry-delay"]),
                flags["dead-letter-topic"],
                flags["max-delivery-attempts"],
                "",
            ]
        )
    return "name: fake"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
