"""Backfill behind existing rows (issue 15), run by hand: history written behind a recent week
vs the same history into an empty lake, for the baseline tree and this tree, side by side.

    .venv/bin/python bench/bench_behind.py [--days 358] [--week 7] [--baseline df8fe1d]
    .venv/bin/python bench/bench_behind.py --cloud [--days 30] [--week 3] [--repeat 3]
    .venv/bin/python bench/bench_behind.py --compose-probe 5000 47520 500000

One simulator serves a synthetic BTCUSDC 1m stream; each tree (the baseline commit exported
with `git archive`, and this working tree) runs `python -m backfill` into a fresh local lake:
(a) `--days` of history into an empty lake; (b) the `--week` after that history first, then the
same history behind it (only the history run is timed). Prints wall and CPU seconds and the
bytes the backfill process read and wrote (`/proc/self/io` rchar/wchar) for each.

`--cloud`: the same through each tree's own local cloud (`python -m localcloud up` from that
tree: Pub/Sub emulator → the tree's ingest function → fake-gcs), `python -m backfill --topic`;
the time is from the history backfill's start until the object holds every row (its stat is
polled every 50 ms, its rows counted once per new generation whose bounds cover the span). Each
run also reads the function's log: messages, median and total handler time (`latency_ms`), and
the queueing (publish to handled, less the handler time). `--repeat N` runs the scenario N
times per tree on a fresh stack, the behind phase first on every other run (the machine is
shared: load drifts), and prints the median ratio. `--baseline ''`: this tree only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
    # untimed: the simulator renders each page on its first request, which would be the
    # first timed phase's wall time
    backfill(tree, sim, history[0], recent[1], work / "warm")
    empty = backfill(tree, sim, *history, work / "empty")
    backfill(tree, sim, *recent, work / "behind")  # the week a streamer would have written
    behind = backfill(tree, sim, *history, work / "behind")
    lake = work / "behind" / "lake" / "raw" / "binance_btcusdc_1m.jsonl"
    rows = lake.read_bytes().count(b"\n")
    assert rows == (days + week) * 1440, rows
    return {
        "empty": empty, "behind": behind,
        "ratio": round(behind["wall_s"] / empty["wall_s"], 2),
        "cpu_ratio": round(behind["cpu_s"] / empty["cpu_s"], 2),
    }  # fmt: skip


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


def _object_url(env: dict[str, str], symbol: str) -> str:
    bucket = env["LAKE_URI"].removeprefix("gs://")
    name = urllib.parse.quote(f"raw/binance_{symbol.lower()}_1m.jsonl", safe="")
    return f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b/{bucket}/o/{name}"


def rows_landed(env: dict[str, str], symbol: str, span: tuple[int, int], want_rows: int) -> Any:
    """A predicate: the object holds `want_rows` rows. Polls the object's stat (cheap: no
    bytes move); counts its rows only for a new generation whose bounds (the writer's custom
    metadata) cover `span`, so the poll itself does not load the stand-in with downloads."""
    url = _object_url(env, symbol)
    counted: set[str] = set()

    def check() -> bool:
        resp = httpx.get(url, timeout=60)
        if resp.status_code == 404:
            return False
        resp.raise_for_status()
        meta = resp.json()
        bounds = meta.get("metadata") or {}
        first = int(bounds.get("klinelake-first-open-time", span[0] + 1))
        last = int(bounds.get("klinelake-last-open-time", span[0]))
        generation = str(meta["generation"])
        if first > span[0] or last < span[1] - 60_000 or generation in counted:
            return False
        counted.add(generation)
        body = httpx.get(url, params={"alt": "media", "generation": generation}, timeout=60)
        return body.content.count(b"\n") >= want_rows

    return check


def cloud_backfill(
    tree: Path, env: dict[str, str], sim: SimProcess, symbol: str, span: tuple[int, int], *,
    want_rows: int, covers: tuple[int, int], state: Path,
) -> tuple[float, dict[str, float]]:  # fmt: skip
    """Seconds from the backfill's start until the object holds `want_rows` rows (`covers`:
    the open_time span the object spans then); the backfill process's CPU seconds and when
    it exited (every batch published)."""
    args = [
        sys.executable, "-m", "backfill", "--rest-url", sim.url, "--symbols", symbol,
        "--intervals", "1m", "--start", str(span[0]), "--end", str(span[1]),
        "--topic", env["KLINES_TOPIC"], "--state-dir", str(state),
    ]  # fmt: skip
    landed = rows_landed(env, symbol, covers, want_rows)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"backfill in {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    exited = time.perf_counter() - t0
    wait_for(landed, 3600, 0.05, f"{symbol} rows")
    wall = round(time.perf_counter() - t0, 2)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, {"backfill": round(cpu, 2), "backfill_exited_s": round(exited, 2)}


def _iso_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def function_stats(log: Path, symbol: str, after_id: int = 0) -> dict[str, object]:
    """The function's handling of `symbol`'s messages (ids above `after_id`), from its log."""
    handled = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        mine = event.get("stream") == f"{symbol}@1m" and "action" in event
        if mine and int(event.get("message_id", 0)) > after_id:
            handled.append(event)
    if not handled:
        return {}
    ms = [float(e["latency_ms"]) for e in handled]
    queued = [
        _iso_s(e["time"]) - _iso_s(e["publish_time"]) - m / 1000
        for e, m in zip(handled, ms, strict=True)
    ]
    actions: dict[str, int] = {}
    for e in handled:
        actions[e["action"]] = actions.get(e["action"], 0) + 1
    return {
        "messages": len(handled),
        "actions": actions,
        "handler_ms_median": round(statistics.median(ms), 1),
        "handler_s_total": round(sum(ms) / 1000, 2),
        "queued_s_median": round(statistics.median(queued), 2),
        "publish_to_last_handled_s": round(
            _iso_s(handled[-1]["time"]) - _iso_s(handled[0]["publish_time"]), 2
        ),
    }


def server_cpu(stack_dir: Path) -> dict[str, float]:
    """CPU seconds (user + system) each of the stack's servers has used so far: every live
    process of its process group, from /proc (the function, fake-gcs, its proxy, Pub/Sub)."""
    from localcloud.procs import group_members

    pids = json.loads((stack_dir / "state.json").read_text())["pids"]
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pgid in pids.items():
        total = 0
        for pid in group_members(int(pgid)):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        out[name] = total / tick
    return out


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 2) for name in after}


def _last_message_id(log: Path) -> int:
    ids = [0]
    for line in log.read_text().splitlines():
        try:
            ids.append(int(json.loads(line).get("message_id", 0)))
        except (ValueError, AttributeError):
            continue
    return max(ids)


def cloud_scenario(
    tree: Path, sim: SimProcess, days: int, week: int, work: Path, *, behind_first: bool = False
) -> dict[str, object]:
    history = (ms(START), ms(START + timedelta(days=days)) - 1)
    recent = (history[1] + 1, ms(START + timedelta(days=days + week)) - 1)
    stack_dir = work / "stack"
    env = cloud_env(tree, stack_dir)
    log = stack_dir / "logs" / "function.log"
    out: dict[str, object] = {}

    def empty() -> None:
        cpu = server_cpu(stack_dir)
        out["empty_s"], backfill = cloud_backfill(
            tree, env, sim, "ETHUSDC", history, want_rows=days * 1440, covers=history,
            state=work / "s1",
        )  # fmt: skip
        out["empty_function"] = function_stats(log, "ETHUSDC")
        out["empty_backfill_exited_s"] = backfill.pop("backfill_exited_s")
        out["empty_cpu_s"] = {**cpu_spent(cpu, server_cpu(stack_dir)), **backfill}

    def behind() -> None:
        cloud_backfill(
            tree, env, sim, "BTCUSDC", recent, want_rows=week * 1440, covers=recent,
            state=work / "s2",
        )  # fmt: skip
        after_week = _last_message_id(log)
        cpu = server_cpu(stack_dir)
        out["behind_s"], backfill = cloud_backfill(
            tree, env, sim, "BTCUSDC", history, want_rows=(days + week) * 1440,
            covers=(history[0], recent[1]), state=work / "s3",
        )  # fmt: skip
        out["behind_function"] = function_stats(log, "BTCUSDC", after_week)
        out["behind_backfill_exited_s"] = backfill.pop("backfill_exited_s")
        out["behind_cpu_s"] = {**cpu_spent(cpu, server_cpu(stack_dir)), **backfill}

    try:
        for phase in (behind, empty) if behind_first else (empty, behind):
            phase()
    finally:
        subprocess.run([sys.executable, "-m", "localcloud", "down", "--dir", str(stack_dir)],
                       cwd=tree, env=env, capture_output=True, check=False)  # fmt: skip
    out["ratio"] = round(float(out["behind_s"]) / float(out["empty_s"]), 2)  # type: ignore[arg-type]
    out["order"] = "behind first" if behind_first else "empty first"
    return out


def compose_probe(sizes: list[int], batch: int = 5000, repeat: int = 5) -> None:
    """One prepend as the function does it (part write, compose [part, object], delete) on
    fake-gcs-server behind the proxy, timed per call against the object's size; and the
    compose alone straight to fake-gcs-server (without the proxy's generation check). GCS
    composes server-side; fake-gcs-server copies every source into a new file."""
    from bench.bench_function import big_lines
    from localcloud.gcs import create_bucket, gcs_store, running_gcs

    with tempfile.TemporaryDirectory() as tmp, running_gcs(Path(tmp)) as gcs:
        create_bucket(gcs.url, "bench", "probe")
        store = gcs_store(gcs.url, "bench", "probe")
        direct = gcs_store(gcs.upstream_url, "bench", "probe")
        part_body = b"".join(big_lines(batch, "PART"))
        for rows in sizes:
            name = f"raw/probe_{rows}.jsonl"
            info = store.write(name, big_lines(rows), if_generation_match=0)
            calls: dict[str, list[float]] = {"write": [], "compose": [], "delete": [], "direct": []}
            sizes_mb = []
            for k in range(repeat):
                part = f"staging/{name}.{k}.part"
                t0 = time.perf_counter()
                store.write(part, part_body, if_generation_match=0)
                sizes_mb.append(info.size / 1e6)
                t1 = time.perf_counter()
                info = store.compose(name, [part, name], if_generation_match=info.generation)
                t2 = time.perf_counter()
                store.delete(part)
                t3 = time.perf_counter()
                calls["write"].append(t1 - t0)
                calls["compose"].append(t2 - t1)
                calls["delete"].append(t3 - t2)
                store.write(part, part_body, if_generation_match=0)
                t4 = time.perf_counter()
                info = direct.compose(name, [part, name], if_generation_match=info.generation)
                calls["direct"].append(time.perf_counter() - t4)
                store.delete(part)
            med = {k: round(statistics.median(v) * 1000, 1) for k, v in calls.items()}
            print(
                f"object {rows:>7} rows (median {statistics.median(sizes_mb):6.1f} MB while "
                f"timed): prepend of "
                f"{batch} rows ({len(part_body) / 1e6:.1f} MB), median ms: part write "
                f"{med['write']}, compose {med['compose']} (straight to fake-gcs "
                f"{med['direct']}), delete {med['delete']}",
                flush=True,
            )
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=358)
    parser.add_argument("--week", type=int, default=7)
    parser.add_argument("--baseline", default="df8fe1d", help="'' for this tree only")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--cloud", action="store_true", help="through each tree's local cloud")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree (--cloud)")
    parser.add_argument(
        "--compose-probe", type=int, nargs="+", metavar="ROWS",
        help="only time one prepend on fake-gcs against objects of these row counts",
    )  # fmt: skip
    opts = parser.parse_args()
    if opts.compose_probe:
        compose_probe(opts.compose_probe)
        return
    first = START.strftime("%Y-%m-%d")
    sim_args = [
        "--synthetic", f"BTCUSDC:1m:{first}", "--synthetic", f"ETHUSDC:1m:{first}",
        "--start", (START + timedelta(days=opts.days + opts.week + 1)).isoformat()[:19],
        "--latency-ms", str(opts.latency_ms),
    ]  # fmt: skip
    where = "local cloud (Pub/Sub emulator, function, fake-gcs)" if opts.cloud else "local lake"
    with tempfile.TemporaryDirectory() as tmp, run_simulator(None, *sim_args) as sim:
        work = Path(tmp)
        trees = {"this tree": ROOT}
        if opts.baseline:
            baseline = export_tree(opts.baseline, work / "baseline-tree")
            trees = {f"baseline {opts.baseline}": baseline, **trees}
        print(f"{opts.days} days of 1m behind {opts.week} days, {where}; {sim.url}")
        for label, tree in trees.items():
            if not opts.cloud:
                out = scenario(tree, sim, opts.days, opts.week, work / label.split()[0])
                print(f"{label}: {out}", flush=True)
                continue
            ratios = []
            for i in range(opts.repeat):
                run_dir = work / f"{label.split()[0]}-{i}"
                flip = i % 2 == 1
                out = cloud_scenario(tree, sim, opts.days, opts.week, run_dir, behind_first=flip)
                ratios.append(float(out["ratio"]))  # type: ignore[arg-type]
                load = os.getloadavg()[0]
                print(f"{label} run {i + 1}: {out}, load {load:.1f}", flush=True)
            print(f"{label}: ratios {ratios}, median {statistics.median(ratios):.2f}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")


if __name__ == "__main__":
    main()
