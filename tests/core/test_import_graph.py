"""The pure core never imports a network or cloud client, a CLI framework or one of klinelake's
adapters (STYLE.md, point 1). Every module under klinelake/core/ is checked: a new module there is
covered without editing this test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import klinelake.core

CORE = sorted(
    f"klinelake.core.{p.stem}"
    for p in Path(klinelake.core.__file__).parent.glob("*.py")
    if p.stem != "__init__"
)
# Pure modules outside klinelake (policies of the streamer, the simulator, ...).
ALSO_PURE: list[str] = [
    "backfill.emit_policy",
    "backfill.span",
    "binance_sim.ws_control",
    "streamer.listing",
    "streamer.shards",
    "streamer.slot_policy",
]
# (the bare `google` namespace package is imported by a .pth file at start-up, so name clients)
CLIENTS = (
    "google.cloud.storage", "google.cloud.pubsub", "google.api_core", "google.auth", "httpx",
    "websockets", "aiohttp", "requests", "grpc", "urllib3",
)  # fmt: skip
# ... and the core depends on no CLI framework and none of klinelake's adapters either
ADAPTERS = ("click", "klinelake.binance", "klinelake.backends", "klinelake.commands")


def _imported(modules: list[str], forbidden: tuple[str, ...]) -> str:
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        f"bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.')"
        f" for f in {forbidden!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_core_holds_the_pure_modules() -> None:
    assert {"klinelake.core.row", "klinelake.core.contract", "klinelake.core.writer"} <= set(CORE)


def test_core_modules_import_no_io_library_and_no_adapter() -> None:
    assert _imported(CORE, CLIENTS + ADAPTERS) == ""


def test_other_pure_modules_import_no_network_or_cloud_client() -> None:
    assert _imported(ALSO_PURE, CLIENTS) == ""
