"""One streamer unit per market (MARKETS="spot um cm"): deploy_vm.sh ships an environment file
per market and runs `streamer --check` with each; startup.sh installs the template unit
streamer@.service, an env file per market, migrates the single streamer.service of earlier
deployments, and drops markets no longer configured; monitoring covers every market's intervals."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from klinelake.config import DEFAULT_REST_URL

from .conftest import INFRA, REPO, VENV_BIN
from .test_infra import _unit_root, commands, find, needs_systemd, no_gcloud_env, run_script

FUTURES = """\
MARKETS="spot um cm"
SYMBOLS_UM=um:quote=USDT
INTERVALS_UM=5m,1h
SYMBOLS_CM=BTCUSD_PERP
BINANCE_REST_URL_CM=https://dapi.example.test
"""
ENV = "/etc/klines/streamer-{}.env"


def _markets_config(config: Path, extra: str = FUTURES) -> Path:
    config.write_text(config.read_text() + extra)
    return config


def _remote(ssh: list[str]) -> str:
    (remote,) = [a.removeprefix("--command=") for a in ssh if a.startswith("--command=")]
    return remote


def test_three_markets_three_env_files_and_three_checks(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path, built_wheel: Path
) -> None:
    build = tmp_path / "build"
    proc = run_script(
        "deploy_vm.sh", "--config", _markets_config(config), "--dry-run",
        "--build-dir", build, "--wheel", built_wheel, env=no_gcloud_env(gcloud_env, tmp_path),
    )  # fmt: skip
    cmds = commands(proc.stdout)
    (create,) = find(cmds, "gcloud", "compute", "instances", "create", "klines-streamer")
    (metadata,) = [a for a in create if a.startswith("--metadata=")]
    assert ",streamer-markets=spot um cm," in metadata
    (files,) = [a for a in create if a.startswith("--metadata-from-file=")]
    keys = dict(kv.split("=", 1) for kv in files.removeprefix("--metadata-from-file=").split(","))
    assert keys["streamer-service"] == str(INFRA / "streamer@.service")
    paths = {m: Path(keys[f"streamer-env-{m}"]) for m in ("spot", "um", "cm")}
    env = {m: path.read_text().splitlines() for m, path in paths.items()}
    assert len(set(paths.values())) == 3
    for m, lines in env.items():
        assert f"MARKET={m}" in lines
        assert "KLINES_TOPIC=projects/test-project/topics/klines" in lines
    assert "SYMBOLS=BTCUSDC,ETHUSDC" in env["spot"] and "INTERVALS=1h,1m" in env["spot"]
    assert f"BINANCE_REST_URL={DEFAULT_REST_URL}" in env["spot"]
    assert "SYMBOLS=um:quote=USDT" in env["um"] and "INTERVALS=5m,1h" in env["um"]
    # No URL set for um: the streamer picks the market's own hosts (fapi, fstream).
    assert not [x for x in env["um"] if x.startswith("BINANCE_")]
    assert "SYMBOLS=BTCUSD_PERP" in env["cm"] and "INTERVALS=1h,1m" in env["cm"]  # the default
    assert "BINANCE_REST_URL=https://dapi.example.test" in env["cm"]
    # The preflight: one `streamer --check` per market, each with its own environment file.
    ssh = find(cmds, "gcloud", "compute", "ssh", "klines-streamer")
    assert cmds[-3:] == ssh and len(ssh) == 3
    for m, one in zip(("spot", "um", "cm"), ssh, strict=True):
        assert _remote(one).endswith(
            f"--uid=klines --property=EnvironmentFile={ENV.format(m)} "
            "/opt/klines/venv/bin/python -m streamer --check"
        )


def test_the_preflight_names_the_market_that_fails(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path, built_wheel: Path
) -> None:
    """The fake gcloud's `compute ssh` runs a stand-in for --check that reads the environment
    file the remote command names (as built by the deploy) and fails for um: the deploy stops
    there, naming the market, after checking spot and before cm."""
    build, seen = tmp_path / "vm", tmp_path / "checked"
    check = (
        f'f={shlex.quote(str(build))}/"$(basename "$FAKE_SSH_ENV_FILE")"; '
        f'grep "^MARKET=" "$f" >> {shlex.quote(str(seen))}; '
        'if grep -qx MARKET=um "$f"; then '
        'echo "streamer --check: blocked: Binance answered HTTP 451" >&2; exit 4; fi'
    )
    env = {
        **no_gcloud_env(gcloud_env, tmp_path),
        "GCLOUD": str(Path(__file__).with_name("fake_gcloud.py")),
        "FAKE_GCLOUD_STATE": str(tmp_path / "state.json"),
        "FAKE_SSH_RUN": check,
    }
    proc = run_script(
        "deploy_vm.sh", "--config", _markets_config(config), "--build-dir", build,
        "--wheel", built_wheel, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert seen.read_text().split() == ["MARKET=spot", "MARKET=um"]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("ERROR:")]
    assert "preflight of market um (streamer@um) failed on klines-streamer" in line
    assert "streamer --check: blocked: Binance answered HTTP 451" in line


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ('MARKETS="spot xm"\n', "MARKETS: unknown market 'xm'"),
        ('MARKETS="um"\n', "SYMBOLS_UM is not set"),
        ('MARKETS="spot spot"\n', "MARKETS: spot is listed twice"),
    ],
)
def test_bad_markets_are_refused_before_anything_runs(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path, extra: str, error: str
) -> None:
    proc = run_script(
        "deploy_vm.sh", "--config", _markets_config(config, extra), "--dry-run",
        env=no_gcloud_env(gcloud_env, tmp_path), check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert error in proc.stderr
    assert commands(proc.stdout) == []


def test_monitoring_covers_every_markets_intervals(
    config: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "mon"
    proc = run_script(
        "monitoring.sh", "--config", _markets_config(config), "--dry-run", "--out-dir", out,
        env=no_gcloud_env(gcloud_env, tmp_path),
    )  # fmt: skip
    names = {line.split("\t")[0] for line in (out / "policies.tsv").read_text().splitlines()}
    for interval in ("1m", "1h", "5m"):  # 5m is um's only
        assert f"klines: a {interval} stream is behind" in names, names
    assert "Done: metric klines_written and 4 alert policies." in proc.stdout


# --- the template unit ------------------------------------------------------------------------


def _instance(market: str) -> dict[str, str]:
    """The unit's settings for streamer@MARKET (%i expanded as systemd does)."""
    text = (INFRA / "streamer@.service").read_text().replace("%i", market)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")


def test_instances_have_their_own_files_and_the_same_hardening() -> None:
    units = {m: _instance(m) for m in ("spot", "um", "cm")}
    for key in ("EnvironmentFile", "StateDirectory", "SyslogIdentifier"):
        assert len({u[key] for u in units.values()}) == 3, key
    assert units["um"]["EnvironmentFile"] == ENV.format("um")
    assert units["um"]["StateDirectory"] == "klines/um"  # /var/lib/klines/um
    shared = {k: v for k, v in units["spot"].items() if "um" not in v and "spot" not in v}
    for key in ("User", "ProtectSystem", "NoNewPrivileges", "CapabilityBoundingSet", "ExecStart"):
        assert key in shared, key
    for u in units.values():  # everything but the per-market names is the same
        assert {k: u[k] for k in shared} == shared


@needs_systemd
def test_every_market_instance_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    root = _unit_root(tmp_path, with_python=True)
    for m in ("spot", "um", "cm"):
        proc = subprocess.run(
            ["systemd-analyze", "verify", f"--root={root}", "--man=no",
             str(root / f"etc/systemd/system/streamer@{m}.service")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stderr


# --- the startup script: a unit per market, and the migration from streamer.service ----------


def _startup(
    tmp_path: Path, wheel: Path, markets: str, root: Path, *, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    meta = tmp_path / "metadata"
    meta.mkdir(exist_ok=True)
    shutil.copy(INFRA / "streamer@.service", meta / "streamer-service")
    shutil.copy(REPO / "constraints.txt", meta / "constraints")
    (meta / "wheel-sha256").write_text(hashlib.sha256(wheel.read_bytes()).hexdigest())
    (meta / "streamer-markets").write_text(markets)
    for m in markets.split():
        (meta / f"streamer-env-{m}").write_text(
            f"MARKET={m}\nKLINES_TOPIC=projects/test-project/topics/klines\nSYMBOLS=X\n"
        )
    env = {
        **os.environ, "ROOT": str(root), "WHEEL": str(wheel), "METADATA_DIR": str(meta),
        "SKIP_SYSTEMCTL": "1", "PYTHON": str(VENV_BIN / "python"), "PIP_INSTALL_DEPS": "0",
    }  # fmt: skip
    proc = subprocess.run(
        [str(INFRA / "startup.sh")], env=env, capture_output=True, text=True, timeout=300,
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr
    return proc


def test_startup_installs_a_unit_per_market_and_migrates_the_old_one(
    tmp_path: Path, built_wheel: Path
) -> None:
    root = tmp_path / "vmroot"
    # A VM deployed before MARKETS: one unit, one env file, the spot state in /var/lib/klines.
    old_unit = root / "etc/systemd/system/streamer.service"
    old_unit.parent.mkdir(parents=True)
    old_unit.write_text("[Service]\nExecStart=/opt/klines/venv/bin/python -m streamer\n")
    (root / "etc/klines").mkdir(parents=True)
    (root / "etc/klines/streamer.env").write_text("SYMBOLS=BTCUSDC\n")
    state = root / "var/lib/klines"
    (state / "spool").mkdir(parents=True)
    (state / "spool/000001.seg").write_bytes(b"unsent")
    (state / "checkpoints.json").write_text('{"BTCUSDC@1h": 1}')

    proc = _startup(tmp_path, built_wheel, "spot um cm", root)
    assert "streamer.service replaced by streamer@spot.service" in proc.stdout
    assert not old_unit.exists() and not (root / "etc/klines/streamer.env").exists()
    assert (state / "spot/spool/000001.seg").read_bytes() == b"unsent"
    assert (state / "spot/checkpoints.json").read_text() == '{"BTCUSDC@1h": 1}'
    assert sorted(p.name for p in state.iterdir()) == ["spot"]
    unit = root / "etc/systemd/system/streamer@.service"
    assert unit.read_text() == (INFRA / "streamer@.service").read_text()
    for m in ("spot", "um", "cm"):
        env_file = root / ENV.format(m).lstrip("/")
        assert f"MARKET={m}\n" in env_file.read_text()
        assert env_file.stat().st_mode & 0o777 == 0o640

    # Re-run: nothing to migrate, the state stays where it is.
    proc = _startup(tmp_path, built_wheel, "spot um cm", root)
    assert "no streamer.service, nothing to migrate" in proc.stdout
    assert (state / "spot/spool/000001.seg").read_bytes() == b"unsent"
    # Back to spot only: um's and cm's env files go, the template and spot's file stay.
    proc = _startup(tmp_path, built_wheel, "spot", root)
    assert "market um is no longer configured" in proc.stdout
    assert sorted(p.name for p in (root / "etc/klines").iterdir()) == ["streamer-spot.env"]
    assert unit.exists()


def test_a_migration_that_fails_midway_loses_no_state_and_is_finished_by_the_next_run(
    tmp_path: Path, built_wheel: Path
) -> None:
    """A file of the old state cannot be moved (here: immutable; on a VM a disk error): the
    run fails, every file is still under /var/lib/klines, and the next run (once the file can
    be moved) finishes the migration (it used to stage the state in its temporary directory,
    which its exit removed, and to drop the old unit first, so no later run migrated)."""
    root = tmp_path / "vmroot"
    old_unit = root / "etc/systemd/system/streamer.service"
    old_unit.parent.mkdir(parents=True)
    old_unit.write_text("[Service]\nExecStart=/opt/klines/venv/bin/python -m streamer\n")
    state = root / "var/lib/klines"
    (state / "spool").mkdir(parents=True)
    (state / "spool/000001.seg").write_bytes(b"unsent")
    (state / "checkpoints.json").write_text('{"BTCUSDC@1h": 1}')
    stuck = state / "stuck"
    stuck.write_text("x")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not available here (needs root on a filesystem with it)")
    try:
        _startup(tmp_path, built_wheel, "spot", root, ok=False)
        kept = {p.relative_to(state).parts[-1] for p in state.rglob("*") if p.is_file()}
        assert {"000001.seg", "checkpoints.json", "stuck"} <= kept
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    _startup(tmp_path, built_wheel, "spot", root)
    assert (state / "spot/spool/000001.seg").read_bytes() == b"unsent"
    assert (state / "spot/checkpoints.json").read_text() == '{"BTCUSDC@1h": 1}'
    assert sorted(p.name for p in state.iterdir()) == ["spot"]
    assert not old_unit.exists()
