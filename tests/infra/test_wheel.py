"""The production wheel (what infra/deploy_vm.sh uploads and the VM installs) carries the
production packages only: the simulator and the local cloud are a separate, dev-only distribution
(devtools/pyproject.toml), and tests, scripts and benchmarks never ship. Built here from the whole
source tree, as `pip wheel .` at the repo root would, so a package added to the tree cannot slip in
unnoticed."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO, VENV_BIN

PRODUCTION = {"klinelake", "streamer", "backfill", "ingest_function"}
PRODUCTION_SCRIPTS = {"streamer", "backfill", "klinelake"}


@pytest.fixture(scope="module")
def tree_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, out = tmp_path_factory.mktemp("tree"), tmp_path_factory.mktemp("dist")
    # Every tracked or untracked-but-not-ignored file: the tree, without the venv and build output.
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    subprocess.run(
        [str(VENV_BIN / "pip"), "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel


def test_production_wheel_has_only_production_packages(tree_wheel: Path) -> None:
    with zipfile.ZipFile(tree_wheel) as zf:
        names = zf.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = configparser.ConfigParser()
        scripts.read_string(zf.read(entry_points).decode())
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == PRODUCTION
    assert set(scripts["console_scripts"]) == PRODUCTION_SCRIPTS
    assert not [n for n in names if n.endswith(".csv")], "simulator data must not ship"
    # package data the production code reads at run time does ship
    assert {"klinelake/py.typed", "klinelake/schema/message.schema.json"} <= set(names)
    # the row path's C source and stub: the VM compiles it (infra/startup.sh)
    assert {"klinelake/core/_rest_page.c", "klinelake/core/_rest_page.pyi"} <= set(names)


def test_the_wheel_the_vm_installs_is_pure_and_carries_the_c_source(built_wheel: Path) -> None:
    """Built as infra/deploy_vm.sh builds it (the `built_wheel` fixture; deploy_vm.sh itself in
    tests/infra/test_infra.py): installable on the VM whatever machine built it."""
    assert built_wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(built_wheel) as zf:
        names = set(zf.namelist())
    assert {"klinelake/core/_rest_page.c", "klinelake/core/_rest_page.pyi"} <= names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib"))]
