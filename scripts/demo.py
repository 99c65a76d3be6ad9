"""`make demo`: the main job end to end on this machine, no cloud account needed.

1. start the Binance simulator on the bundled real data (BTCUSDT 1h, January 2022), its clock
   at 2022-02-01 00:00 UTC running 1800x (an hour passes in 2 s);
2. backfill the last 30 simulated days into ./lake (the embedded default lake);
3. run the streamer for a few simulated hours, with a forced disconnect halfway;
4. stop everything and print the lake status (and verify it).

`--cloud` does the same through the local cloud: Pub/Sub emulator → function → fake-gcs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # localcloud is a dev-only package of this checkout
PY = sys.executable
START = "2022-02-01T00:00:00Z"
SPEED = 1800.0
STREAM_HOURS = 6


def step(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def wait_until(pred, timeout: float, what: str, interval: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)  # polling a condition with a deadline
    raise SystemExit(f"demo: timed out waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cloud", action="store_true", help="go through the local cloud stack")
    ap.add_argument("--lake", default=str(ROOT / "lake"))
    args = ap.parse_args()

    from binance_sim.testing import run_simulator

    work = ROOT / ".demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    state = work / "state"
    env = dict(os.environ)
    stack = None
    lake = args.lake
    if args.cloud:
        from localcloud import Stack

        step("starting the local cloud (Pub/Sub emulator, fake-gcs-server, function)")
        stack = Stack(work / "stack")
        stack.start()
        env.update(stack.env())
        lake = env["LAKE_URI"]
    else:
        env.pop("KLINES_TOPIC", None)
        shutil.rmtree(lake, ignore_errors=True)
    try:
        step(f"starting the Binance simulator at {START}, {SPEED:.0f}x, bundled real data")
        with run_simulator(
            ROOT / "devtools" / "binance_sim" / "data",
            "--start", START, "--speed", str(SPEED),
            "--synthetic", "BTCUSDT:1h:2022-02-01T00:00:00Z",
        ) as sim:  # fmt: skip
            common = ["--symbols", "BTCUSDT", "--intervals", "1h", "--rest-url", sim.url,
                      "--state-dir", str(state)]  # fmt: skip
            sink = [] if args.cloud else ["--lake", lake]
            step("backfill: the last 30 simulated days (real Binance rows from the bundled dump)")
            subprocess.run([PY, "-m", "backfill", *common, *sink, "--days", "30"], env=env,
                           check=True)  # fmt: skip
            step(f"streamer: {STREAM_HOURS} simulated hours live, a forced disconnect halfway")
            t0 = sim.state()["now"]
            proc = subprocess.Popen(
                [PY, "-m", "streamer", *common, *sink, "--ws-url", sim.ws_url,
                 "--clock-speed", str(SPEED)],
                env=env,
            )  # fmt: skip
            try:
                half = t0 + STREAM_HOURS // 2 * 3_600_000
                end = t0 + STREAM_HOURS * 3_600_000
                wait_until(lambda: sim.state()["now"] >= half, 60, "half time")
                print("demo: dropping every WebSocket connection now", flush=True)
                sim.admin({"ws_drop": True})
                wait_until(lambda: sim.state()["now"] >= end + 60_000, 60, "the end")
                truth_end = end

                def caught_up() -> bool:
                    return _lake_tail(lake, env) >= truth_end - 3_600_000

                wait_until(caught_up, 60, "the streamer to write the last closed kline")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            now_ms = sim.state()["now"]
            got = _lake_bytes(lake, env)
            first = json.loads(got.split(b"\n", 1)[0])["open_time"]
            expected = sim.truth("BTCUSDT", "1h", first, _lake_tail(lake, env))
        step("lake status")
        subprocess.run([PY, "-m", "klinelake", "status", "--lake", lake, "--state-dir",
                        str(state), "--now", str(now_ms)], env=env, check=True)  # fmt: skip
        rc = subprocess.run([PY, "-m", "klinelake", "verify", "--lake", lake, "--state-dir",
                             str(state), "--now", str(now_ms), "--json"], env=env,
                            capture_output=True, text=True)  # fmt: skip
        print(rc.stderr.strip())
        n_expected, n_got = expected.count(b"\n"), got.count(b"\n")
        print(
            f"demo: between the lake's first and last kline the simulator produced "
            f"{n_expected} closed klines; the lake holds {n_got}; byte-identical: "
            f"{got == expected}"
        )
        return rc.returncode
    finally:
        if stack is not None:
            stack.stop()


def _lake_bytes(lake: str, env: dict[str, str]) -> bytes:
    os.environ.update({k: v for k, v in env.items() if k.endswith("_EMULATOR_HOST")})
    from klinelake.backends.lake import open_store, read_object
    from klinelake.core.symbols import object_name

    return read_object(open_store(lake), object_name("BTCUSDT", "1h"))


def _lake_tail(lake: str, env: dict[str, str]) -> int:
    data = _lake_bytes(lake, env)
    if not data:
        return 0
    return int(json.loads(data.splitlines()[-1])["open_time"])


if __name__ == "__main__":
    sys.exit(main())
