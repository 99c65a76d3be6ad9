"""Pure modules never import a network or cloud client (STYLE.md, point 1)."""

from __future__ import annotations

import subprocess
import sys

PURE = [
    "klinelake.errors", "klinelake.intervals", "klinelake.symbols", "klinelake.row",
    "klinelake.binance_ws", "klinelake.contract", "klinelake.merge", "klinelake.storage",
    "klinelake.writer", "klinelake.markets", "klinelake.exchange_info", "klinelake.selector",
    "klinelake.halts", "klinelake.halts_writer", "klinelake.vision", "klinelake.publish",
    "klinelake.json_input", "klinelake.binance_limits", "streamer.listing",
    "binance_sim.ws_control", "backfill.emit_policy", "backfill.span", "streamer.shards",
    "streamer.slot_policy",
]  # fmt: skip
# (the bare `google` namespace package is imported by a .pth file at start-up, so name clients)
FORBIDDEN = (
    "google.cloud.storage", "google.cloud.pubsub", "google.api_core", "google.auth", "httpx",
    "websockets", "aiohttp", "requests", "grpc", "urllib3",
)  # fmt: skip


def test_pure_modules_import_no_network_or_cloud_client() -> None:
    code = (
        "import sys\n"
        f"for m in {PURE!r}: __import__(m)\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
