"""Backfill behind existing rows (issue 15), run by hand: history written behind a recent week
vs the same history into an empty lake, for the baseline tree and this tree, side by side.

    .venv/bin/python bench/bench_behind.py [--days 358] [--week 7] [--baseline df8fe1d]
    .venv/bin/python bench/bench_behind.py --cloud [--days 30] [--week 3]

One simulator serves a synthetic BTCUSDC 1m stream; each tree (the baseline commit exported
with `git archive`, and this working tree) runs `python -m backfill` into a fresh local lake:
(a) `--days` of history into an empty lake; (b) the `--week` after that history first, then the
same history behind it (only the history run is timed). Prints wall and CPU seconds and the
bytes the backfill process read and wrote (`/proc/self/io` rchar/wchar) for each.

`--cloud`: the same through each tree's own local cloud (`python -m localcloud up` from that
tree: Pub/Sub emulator → the tree's ingest function → fake-gcs), `python -m backfill --topic`;
the time is from the history backfill's start until the object holds every row.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from binance_sim.testing import SimProcess, run_simulator  # noqa: E402
from localcloud import wait_for  # noqa: E402

START = datetime(2022, 1, 1, tzinfo=UTC)
# Runs `python -m backfill` and leaves the process's I/O counters in a file at exit.
_WRAPPER = (
    "import atexit, runpy, sys\n"
    "out = sys.argv[1]\n"
    "atexit.register(lambda: open(out, 'w').write(open('/proc/self/io').read()))\n"
    "sys.argv = ['backfill', *sys.argv[2:]]\n"
    "runpy.run_module('backfill', run_name='__main__')\n"
)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def export_tree(commit: str, into: Path) -> Path:
    """The baseline's source tree (git archive), to run beside this one with the same venv."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def backfill(tree: Path, sim: SimProcess, start: int, end: int, work: Path) -> dict[str, float]:
    io_file = work / "io.txt"
    args = [
        sys.executable, "-c", _WRAPPER, str(io_file), "--rest-url", sim.url,
        "--symbols", "BTCUSDC", "--intervals", "1m", "--start", str(start), "--end", str(end),
        "--lake", str(work / "lake"), "--state-dir", str(work / f"state-{start}"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("KLINES_TOPIC", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=tree, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"backfill in {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    io = dict(line.split(": ") for line in io_file.read_text().splitlines())
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "read_gb": round(int(io["rchar"]) / 1e9, 2),
        "written_gb": round(int(io["wchar"]) / 1e9, 2),
    }


def scenario(tree: Path, sim: SimProcess, days: int, week: int, work: Path) -> dict[str, object]:
    history = (ms(START), ms(START + timedelta(days=days)) - 1)
    recent = (history[1] + 1, ms(START + timedelta(days=days + week)) - 1)
    empty = backfill(tree, sim, *history, work / "empty")
    backfill(tree, sim, *recent, work / "behind")  # the week a streamer would have written
    behind = backfill(tree, sim, *history, work / "behind")
    lake = work / "behind" / "lake" / "raw" / "binance_btcusdc_1m.jsonl"
    rows = lake.read_bytes().count(b"\n")
    assert rows == (days + week) * 1440, rows
    return {"empty": empty, "behind": behind, "ratio": round(behind["wall_s"] / empty["wall_s"], 2)}


def cloud_env(tree: Path, stack_dir: Path) -> dict[str, str]:
    """Start the tree's local cloud; the environment a publisher needs to reach it."""
    up = subprocess.run(
        [sys.executable, "-m", "localcloud", "up", "--dir", str(stack_dir)],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
        check=True, timeout=300,
    )  # fmt: skip
    env = dict(os.environ)
    for line in up.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        if key and value:
            env[key] = value.strip("'\"")
    env["PYTHONPATH"] = str(tree)
    return env


def object_rows(env: dict[str, str], symbol: str) -> int:
    bucket = env["LAKE_URI"].removeprefix("gs://")
    name = urllib.parse.quote(f"raw/binance_{symbol.lower()}_1m.jsonl", safe="")
    url = f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b/{bucket}/o/{name}?alt=media"
    resp = httpx.get(url, timeout=60)
    return 0 if resp.status_code == 404 else resp.content.count(b"\n")


def cloud_backfill(
    tree: Path, env: dict[str, str], sim: SimProcess, symbol: str, span: tuple[int, int], *,
    want_rows: int, state: Path,
) -> float:  # fmt: skip
    """Seconds from the backfill's start until the object holds `want_rows` rows."""
    args = [
        sys.executable, "-m", "backfill", "--rest-url", sim.url, "--symbols", symbol,
        "--intervals", "1m", "--start", str(span[0]), "--end", str(span[1]),
        "--topic", env["KLINES_TOPIC"], "--state-dir", str(state),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, check=True)
    wait_for(lambda: object_rows(env, symbol) >= want_rows, 3600, 1.0, f"{symbol} rows")
    return round(time.perf_counter() - t0, 1)


def cloud_scenario(
    tree: Path, sim: SimProcess, days: int, week: int, work: Path
) -> dict[str, object]:
    history = (ms(START), ms(START + timedelta(days=days)) - 1)
    recent = (history[1] + 1, ms(START + timedelta(days=days + week)) - 1)
    stack_dir = work / "stack"
    env = cloud_env(tree, stack_dir)
    try:
        empty = cloud_backfill(
            tree, env, sim, "ETHUSDC", history, want_rows=days * 1440, state=work / "s1"
        )
        cloud_backfill(tree, env, sim, "BTCUSDC", recent, want_rows=week * 1440, state=work / "s2")
        behind = cloud_backfill(
            tree, env, sim, "BTCUSDC", history, want_rows=(days + week) * 1440, state=work / "s3"
        )
    finally:
        subprocess.run([sys.executable, "-m", "localcloud", "down", "--dir", str(stack_dir)],
                       cwd=tree, env=env, capture_output=True, check=False)  # fmt: skip
    return {"empty_s": empty, "behind_s": behind, "ratio": round(behind / empty, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=358)
    parser.add_argument("--week", type=int, default=7)
    parser.add_argument("--baseline", default="df8fe1d")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--cloud", action="store_true", help="through each tree's local cloud")
    opts = parser.parse_args()
    first = START.strftime("%Y-%m-%d")
    sim_args = [
        "--synthetic", f"BTCUSDC:1m:{first}", "--synthetic", f"ETHUSDC:1m:{first}",
        "--start", (START + timedelta(days=opts.days + opts.week + 1)).isoformat()[:19],
        "--latency-ms", str(opts.latency_ms),
    ]  # fmt: skip
    run = cloud_scenario if opts.cloud else scenario
    where = "local cloud (Pub/Sub emulator, function, fake-gcs)" if opts.cloud else "local lake"
    with tempfile.TemporaryDirectory() as tmp, run_simulator(None, *sim_args) as sim:
        work = Path(tmp)
        trees = {
            f"baseline {opts.baseline}": export_tree(opts.baseline, work / "baseline-tree"),
            "this tree": ROOT,
        }
        print(f"{opts.days} days of 1m behind {opts.week} days, {where}; {sim.url}")
        for label, tree in trees.items():
            out = run(tree, sim, opts.days, opts.week, work / label.split()[0])
            print(f"{label}: {out}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")


if __name__ == "__main__":
    main()
