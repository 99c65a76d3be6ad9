"""Issue 13's infra: regions, the preflight, the outside watch, the unit's restart limit, the
function's narrowed identity. Offline: dry runs, a stateful fake gcloud, the simulator."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from binance_sim.testing import SimProcess, run_simulator
from klinelake import config as cfg
from streamer.config import Settings, StreamSpec

from .conftest import INFRA, TEST_CONFIG
from .test_infra import commands, find, needs_systemd, no_gcloud_env, run_script

_spec = importlib.util.spec_from_file_location(
    "monitoring_policies", INFRA / "monitoring_policies.py"
)
assert _spec is not None and _spec.loader is not None
mp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp)


def _unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (INFRA / "streamer@.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


# --- regions and endpoints ------------------------------------------------------------------


def test_example_config_puts_the_vm_where_binance_serves() -> None:
    example = dict(
        line.split("=", 1)
        for line in (INFRA / "config.env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert example["VM_REGION"] == "asia-northeast1"
    assert example["VM_ZONE"].startswith("asia-northeast1-")
    assert example["REGION"] == "us-central1"  # bucket and function: separate setting


def test_a_zone_outside_the_vm_region_is_refused(
    tmp_path: Path, gcloud_env: dict[str, str]
) -> None:
    config = tmp_path / "c.env"
    config.write_text(TEST_CONFIG.replace("VM_ZONE=asia-northeast1-b", "VM_ZONE=us-central1-a"))
    proc = run_script(
        "deploy_vm.sh", "--config", config, "--dry-run", env=no_gcloud_env(gcloud_env, tmp_path),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "VM_ZONE us-central1-a is not in VM_REGION asia-northeast1" in proc.stderr


def test_shell_defaults_agree_with_the_configuration_table() -> None:
    lib = (INFRA / "lib.sh").read_text()
    assert f'BINANCE_REST_URL="${{BINANCE_REST_URL:-{cfg.DEFAULT_REST_URL}}}"' in lib
    assert f'BINANCE_WS_URL="${{BINANCE_WS_URL:-{cfg.DEFAULT_WS_URL}}}"' in lib


# --- the function's identity ------------------------------------------------------------------


def test_function_may_touch_only_the_prefixes_it_writes(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    out = run_script(
        "bootstrap.sh", "--config", config, "--dry-run", "--only", "iam",
        env=no_gcloud_env(gcloud_env, tmp_path),
    ).stdout  # fmt: skip
    bindings = find(commands(out), "gcloud", "storage", "buckets", "add-iam-policy-binding")
    (fn,) = [b for b in bindings if "--member=serviceAccount:klines-ingest@" in " ".join(b)]
    assert "--role=roles/storage.objectUser" in fn
    (cond,) = [a for a in fn if a.startswith("--condition=")]
    objects = "projects/_/buckets/test-lake/objects/"
    assert cond == (
        f'--condition=expression=resource.name.startsWith("{objects}raw/") || '
        f'resource.name.startsWith("{objects}meta/") || '
        f'resource.name.startsWith("{objects}staging/"),title=lake-prefixes-only'
    )
    assert "artifacts/" not in cond and "," not in cond.split("expression=")[1].split(",title")[0]


# --- monitoring ------------------------------------------------------------------------------


def test_absence_durations_per_interval() -> None:
    assert mp.absent_seconds("1m", 3) == 180
    assert mp.absent_seconds("1s", 3) == mp.MIN_ABSENT_S
    assert mp.absent_seconds("1h", 3) == 3 * 3600
    assert mp.absent_seconds("4h", 5) == 20 * 3600
    assert mp.absent_seconds("8h", 3) is None  # 24 h > 23 h 30 min: cannot be watched this way
    assert mp.absent_seconds("1d", 1) is None


def test_monitoring_dry_run(config: Path, gcloud_env: dict[str, str], tmp_path: Path) -> None:
    out_dir = tmp_path / "mon"
    cfg_file = tmp_path / "m.env"
    cfg_file.write_text(
        config.read_text().replace("INTERVALS=1h,1m", "INTERVALS=1h,1m,1d")
        + "NOTIFICATION_CHANNELS=projects/test-project/notificationChannels/42\n"
    )
    proc = run_script(
        "monitoring.sh", "--config", cfg_file, "--dry-run", "--out-dir", out_dir,
        env=no_gcloud_env(gcloud_env, tmp_path),
    )  # fmt: skip
    cmds = commands(proc.stdout)
    (metric,) = find(cmds, "gcloud", "logging", "metrics", "create", "klines_written")
    assert f"--config-from-file={out_dir / 'metric.json'}" in metric
    created = find(cmds, "gcloud", "alpha", "monitoring", "policies", "create")
    assert len(created) == 3  # 1h, 1m, dead letters; 1d cannot be covered and says so
    assert "no freshness alert for 1d streams" in proc.stderr
    m = json.loads((out_dir / "metric.json").read_text())
    assert 'resource.labels.service_name="klines-ingest"' in m["filter"]
    assert m["labelExtractors"]["stream"] == "EXTRACT(jsonPayload.stream)"
    fresh = json.loads((out_dir / "policy-freshness-1m.json").read_text())
    absent = fresh["conditions"][0]["conditionAbsent"]
    assert absent["duration"] == "180s"
    assert re.search(r'metric\.type="logging\.[a-z.]+/user/klines_written"', absent["filter"])
    assert absent["aggregations"][0]["groupByFields"] == ["metric.label.stream"]
    assert fresh["notificationChannels"] == ["projects/test-project/notificationChannels/42"]
    dead = json.loads((out_dir / "policy-dead-letter.json").read_text())
    threshold = dead["conditions"][0]["conditionThreshold"]
    assert 'subscription_id="klines-dead-letter-inspect"' in threshold["filter"]
    assert threshold["comparison"] == "COMPARISON_GT" and threshold["thresholdValue"] == 0
    for policy in (fresh, dead):
        assert "docs/runbook.md" in policy["documentation"]["content"]
        assert re.fullmatch(r"[0-9a-f]{40}", policy["userLabels"]["klines-fingerprint"])


# --- the unit: a permanent block ends in `failed` ---------------------------------------------


def test_restart_limit_ends_a_permanent_block_in_failed() -> None:
    """What systemd does is not run here (no systemd as PID 1); what is proven is the arithmetic
    the documented semantics rest on (systemd.unit(5): more than StartLimitBurst starts within
    StartLimitIntervalSec and the unit is not started again, state `failed`;
    systemd.service(5): an exit status in RestartPreventExitStatus= is never restarted)."""
    unit = _unit()
    (burst,) = map(int, unit["StartLimitBurst"])
    (interval,) = map(int, unit["StartLimitIntervalSec"])
    (restart_sec,) = map(int, unit["RestartSec"])
    assert unit["Restart"] == ["always"]
    # A blocked streamer exits within its exchangeInfo deadline (it exits at once on 451/403).
    deadline = Settings(streams=(StreamSpec("BTCUSDC", "1h"),)).exchange_info_deadline_s
    worst_cycle = deadline + restart_sec + 10  # + start-up and shutdown slack
    assert burst * worst_cycle < interval, "a permanent block would restart forever"
    # A configuration error stops at once; a block is retried (a WAF 403 may pass).
    prevented = {int(code) for v in unit["RestartPreventExitStatus"] for code in v.split()}
    assert cfg.EXIT_BAD_CONFIG in prevented and cfg.EXIT_BLOCKED not in prevented


@needs_systemd
def test_unit_hardening_score(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` works on a unit file (systemd >= 250): the
    exposure score is recorded in docs/deploy.md; this keeps it from silently getting worse."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/streamer@.service").write_bytes(
        (INFRA / "streamer@.service").read_bytes()
    )
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager",
         "streamer@spot.service"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("systemd-analyze has no --offline here (systemd < 250)")
    found = re.search(r"Overall exposure level for streamer@spot.service: ([0-9.]+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 1.4


# --- the preflight, through deploy_vm.sh, against the simulator ------------------------------


@pytest.fixture(scope="module")
def sim() -> object:
    with run_simulator(None, "--synthetic", "BTCUSDC:1m:2024-01-01") as s:
        yield s


@pytest.mark.parametrize(("fault", "ok"), [({"rest_block": 451}, False),
                                           ({"ws_block": 403}, False), ({}, True)])  # fmt: skip
def test_deploy_fails_naming_the_region_when_the_preflight_fails(  # noqa: PLR0917
    config: Path, gcloud_env: dict[str, str], tmp_path: Path, built_wheel: Path,
    sim: SimProcess, fault: dict[str, int], ok: bool,
) -> None:  # fmt: skip
    """The fake gcloud's `compute ssh` runs the streamer's --check here, against the simulator
    answering 451 (REST), 403 (WS handshake) or 200; deploy_vm.sh must fail (or pass) on it."""
    fake = Path(__file__).with_name("fake_gcloud.py")
    check = shlex.join([
        sys.executable, "-m", "streamer", "--check", "--check-timeout", "10",
        "--symbols", "BTCUSDC", "--intervals", "1m", "--rest-url", sim.url, "--ws-url", sim.ws_url,
    ])  # fmt: skip
    env = {
        **no_gcloud_env(gcloud_env, tmp_path),
        "GCLOUD": str(fake),
        "FAKE_GCLOUD_STATE": str(tmp_path / "state.json"),
        "FAKE_SSH_RUN": check,
    }
    sim.admin({"rest_block": 0, "ws_block": 0, **fault})
    try:
        proc = run_script(
            "deploy_vm.sh", "--config", config, "--build-dir", tmp_path / "vm",
            "--wheel", built_wheel, env=env, check=False,
        )  # fmt: skip
    finally:
        sim.admin({"rest_block": 0, "ws_block": 0})
    ssh = find(commands(proc.stdout), str(fake), "compute", "ssh", "klines-streamer")
    assert len(ssh) == 1
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Done: VM klines-streamer in asia-northeast1-b" in proc.stdout
        return
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("ERROR:")]
    assert 'step "preflight on klines-streamer (asia-northeast1-b)"' in line
    assert (
        "preflight of market spot (streamer@spot) failed on klines-streamer in region "
        "asia-northeast1" in line
    )
    assert "streamer --check: blocked: Binance answered HTTP" in line
    assert "VM_REGION/VM_ZONE" in line and "BINANCE_REST_URL" in line


# --- the scripts' shared argument parser (infra/lib.sh parse_args) ---------------------------


def test_flags_in_both_forms_and_unknown_ones(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    env = no_gcloud_env(gcloud_env, tmp_path)
    out = run_script(
        "monitoring.sh", f"--config={config}", "--dry-run", f"--out-dir={tmp_path / 'a'}", env=env
    )
    assert (tmp_path / "a" / "metric.json").exists() and "Done:" in out.stdout
    bad = run_script("teardown.sh", "--config", config, "--dry-run", "--bogus", env=env,
                     check=False)  # fmt: skip
    assert bad.returncode == 1 and "unknown argument: --bogus" in bad.stderr
    missing = run_script("deploy_vm.sh", "--config", config, "--wheel", env=env, check=False)
    assert missing.returncode == 1 and "--wheel needs a value" in missing.stderr
