# ruff: noqa: E501  (the mutations are exact source snippets, kept on one line each)
"""Run by hand: remove one fault handling at a time and show that the fault suite goes red.

    .venv/bin/python tests/e2e/remove_one_handling.py [NAME-FRAGMENT ...]

Each mutation is applied to a scratch git worktree of HEAD (never to this checkout), then
`pytest tests/e2e` runs there; the first assertion lines are printed. The replacements are exact
source snippets: when the code they target changes, the assert names the stale mutation.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

REPO = str(pathlib.Path(__file__).resolve().parents[2])
WT = pathlib.Path(tempfile.gettempdir()) / "klines-mutation-worktree"
MUTATIONS = {
    "serverShutdown ignored (no replacement-first switch)": (
        "streamer/connection.py",
        "            self.shutdown_notice = True\n",
        "            pass\n",
    ),
    "malformed frames (parse errors not caught)": (
        "streamer/connection.py",
        "        except InvalidData as exc:\n            self.counters.malformed += 1\n",
        "        except ZeroDivisionError as exc:\n            self.counters.malformed += 1\n",
    ),
    "stall detection (never stalled)": (
        "streamer/stall.py",
        "        return earliest is not None and earliest < now_ms and self.last_closed_at <= earliest",
        "        return False",
    ),
    "gap repair over REST (skipped)": (
        "streamer/sender.py",
        '    async def _repair(self, target: int, rows: list[Kline]) -> bool:\n        """Fill the gaps up to `target`; True if rows were added. Retries until REST answers."""\n',
        '    async def _repair(self, target: int, rows: list[Kline]) -> bool:\n        """Fill the gaps up to `target`; True if rows were added. Retries until REST answers."""\n        return False\n',
    ),
    "publish retry (a failed publish is dropped)": (
        "streamer/sender.py",
        "                await asyncio.sleep(delay)\n        self.spool.ack(",
        "                break\n        self.spool.ack(",
    ),
    "poison dead-lettering (poison acked silently)": (
        "ingest_function/handler.py",
        '        reason = f"{type(exc).__name__}: {exc}"\n',
        '        return None\n        reason = f"{type(exc).__name__}: {exc}"\n',
    ),
    "transient failures re-raised (swallowed instead)": (
        "ingest_function/handler.py",
        "            )  # fmt: skip\n            raise\n        fields",
        "            )  # fmt: skip\n            return None\n        fields",
    ),
    "merge dedupe (object line kept beside the batch line)": (
        "klinelake/core/merge.py",
        "        if i < n and batch[i][0] == t:\n            yield batch[i][1]\n            i += 1\n        else:\n            yield line\n",
        "        if i < n and batch[i][0] == t:\n            yield batch[i][1]\n            i += 1\n        yield line\n",
    ),
}
only = sys.argv[1:]
for name, (path, old, new) in MUTATIONS.items():
    if only and not any(o in name for o in only):
        continue
    if WT.exists():
        subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", str(WT)])
    subprocess.run(
        ["git", "-C", REPO, "worktree", "add", "--detach", str(WT), "HEAD"],
        check=True,
        capture_output=True,
    )
    f = WT / path
    src = f.read_text()
    assert src.count(old) == 1, (name, src.count(old))
    f.write_text(src.replace(old, new))
    r = subprocess.run(
        [
            f"{REPO}/.venv/bin/python",
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/e2e",
            "--timeout",
            "600",
        ],
        cwd=WT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(WT)},
    )
    tail = [
        line
        for line in r.stdout.splitlines()
        if line.startswith(("E ", "FAILED", "1 passed", "1 failed"))
    ][:4]
    print(f"### {name}: exit {r.returncode}", *tail, sep="\n", flush=True)
subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", str(WT)])
