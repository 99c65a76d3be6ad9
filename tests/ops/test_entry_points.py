"""CLI conventions (issue 13): every entry point answers `-h`, `--help` and `--version`, both as
`python -m NAME` and as the console script pyproject.toml declares, and its help names every
environment variable it reads (from klinelake.config's table)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from klinelake import config as cfg

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# What each entry point reads from the environment (the table's rows).
READS: dict[str, tuple[cfg.Setting, ...]] = {
    "streamer": (
        cfg.TOPIC, cfg.LAKE, cfg.REST_URL, cfg.WS_URL, cfg.SYMBOLS, cfg.INTERVALS,
        cfg.STATE_DIRECTORY, cfg.NOTIFY_SOCKET, *cfg.EMULATORS,
    ),
    "backfill": (
        cfg.TOPIC, cfg.LAKE, cfg.REST_URL, cfg.VISION_URL, cfg.SYMBOLS, cfg.INTERVALS,
        *cfg.EMULATORS,
    ),
    "klinelake": (),  # the group; its subcommands are checked below
    "binance_sim": (),
    "localcloud": (),
}  # fmt: skip
PRODUCTION = ("streamer", "backfill", "klinelake")
SUBCOMMANDS = {
    "klinelake status": (cfg.LAKE,),
    "klinelake verify": (cfg.LAKE,),
    "klinelake deadletters list": (cfg.DEAD_LETTER_SUBSCRIPTION,),
    "klinelake deadletters redrive": (cfg.DEAD_LETTER_SUBSCRIPTION, cfg.TOPIC),
}


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_console_scripts_are_declared() -> None:
    # the production distribution's and the dev-only one's (devtools/: simulator, local cloud)
    scripts = {
        name
        for pyproject in (ROOT / "pyproject.toml", ROOT / "devtools" / "pyproject.toml")
        for name in tomllib.loads(pyproject.read_text())["project"]["scripts"]
    }
    assert scripts == set(READS)


@pytest.mark.parametrize("name", sorted(READS))
@pytest.mark.parametrize("how", ["module", "script"])
def test_help_and_version(name: str, how: str) -> None:
    argv = [sys.executable, "-m", name] if how == "module" else [str(BIN / name)]
    short, long = _run([*argv, "-h"]), _run([*argv, "--help"])
    assert short.returncode == 0 and long.returncode == 0, short.stderr + long.stderr
    assert short.stdout == long.stdout and "usage" in long.stdout.lower()
    # click wraps help text: compare without line breaks and indentation
    text = " ".join(long.stdout.split())
    for setting in READS[name]:
        assert setting.env is not None and setting.env in text, (name, setting.env)
    version = _run([*argv, "--version"])
    assert version.returncode == 0, version.stderr
    first, *rest = version.stdout.splitlines()
    assert first.split()[-1] == cfg.version() != "0+unknown"
    if name in PRODUCTION:  # `make venv` builds the compiled row path (setup.py)
        assert rest == ["row path: compiled"]


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_subcommand_help_names_its_variables(command: str) -> None:
    out = _run([sys.executable, "-m", *command.split(), "-h"])
    assert out.returncode == 0, out.stderr
    for setting in SUBCOMMANDS[command]:
        assert f"env var: {setting.env}" in " ".join(out.stdout.split())
