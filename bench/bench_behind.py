"""Backfill behind existing rows (issue 15), run by hand: history written behind a recent week
vs the same history into an empty lake, for the baseline tree and this tree, side by side.

    .venv/bin/python bench/bench_behind.py [--days 358] [--week 7] [--baseline df8fe1d]

One simulator serves a synthetic BTCUSDC 1m stream; each tree (the baseline commit exported
with `git archive`, and this working tree) runs `python -m backfill` into a fresh local lake:
(a) `--days` of history into an empty lake; (b) the `--week` after that history first, then the
same history behind it (only the history run is timed). Prints wall and CPU seconds and the
bytes the backfill process read and wrote (`/proc/self/io` rchar/wchar) for each.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from binance_sim.testing import SimProcess, run_simulator  # noqa: E402

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
    archive = subprocess.run(
        ["git", "archive", commit, "klinelake", "backfill", "binance_sim"],
        cwd=ROOT, capture_output=True, check=True,
    )  # fmt: skip
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=358)
    parser.add_argument("--week", type=int, default=7)
    parser.add_argument("--baseline", default="df8fe1d")
    parser.add_argument("--latency-ms", type=int, default=0)
    opts = parser.parse_args()
    total = opts.days + opts.week
    sim_args = (
        "--synthetic", f"BTCUSDC:1m:{START.strftime('%Y-%m-%d')}",
        "--start", (START + timedelta(days=total + 1)).strftime("%Y-%m-%dT%H:%M:%S"),
        "--latency-ms", str(opts.latency_ms),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, run_simulator(None, *sim_args) as sim:
        work = Path(tmp)
        trees = {
            f"baseline {opts.baseline}": export_tree(opts.baseline, work / "baseline-tree"),
            "this tree": ROOT,
        }
        print(f"{opts.days} days of BTCUSDC 1m behind {opts.week} days, local lake; {sim.url}")
        for label, tree in trees.items():
            out = scenario(tree, sim, opts.days, opts.week, work / label.split()[0])
            print(f"{label}: {out}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")


if __name__ == "__main__":
    main()
