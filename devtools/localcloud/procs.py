"""Processes of the local stack: free ports, detached process groups, readiness, stopping.

Every server is started in its own session (so its own process group: gunicorn's workers and
anything else it forks come along) and stopped by that group id: TERM, then KILL past a
deadline, then a check that no member is left and that its port is closed. Readiness is polled
with a deadline; nothing here sleeps as synchronisation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from localcloud.waiting import WaitTimeout, wait_for

READY_TIMEOUT = 60.0  # seconds a stand-in may take to answer after it was started


class StackError(RuntimeError):
    """The local stack could not be started, checked or stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def spawn(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` detached in a new session (its own process group), output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )


def poll(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Return once `predicate()` is true; StackError past `timeout` or if `alive()` turns false
    (the one wait loop, `localcloud.waiting.wait_for`, with the stack's error)."""

    def ready() -> bool:
        try:
            if predicate():
                return True
        except Exception:  # not ready yet
            pass
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited before it was ready")
        return False

    try:
        wait_for(ready, timeout, interval, what, fatal=(StackError,))
    except WaitTimeout:
        raise StackError(f"{what}: not ready after {timeout:.0f}s") from None


def http_answers(url: str, ok_statuses: tuple[int, ...] = ()) -> bool:
    """True if something answers HTTP at `url` (with one of `ok_statuses`, if given)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            status: int = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError):
        return False
    return not ok_statuses or status in ok_statuses


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) of a pid, from /proc; None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is not None and st[1] == pgid and st[0] != "Z":
            members.append(int(entry))
    return members


def pid_alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def stop_group(
    pgid: int, timeout: float = 10.0, popen: subprocess.Popen[bytes] | None = None
) -> list[int]:
    """TERM the process group, KILL what is left after `timeout`; returns the pids it found."""
    found = group_members(pgid)
    if not found:
        _reap(popen)
        return []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)

    def gone() -> bool:
        _reap(popen, 0.05)
        return not group_members(pgid)

    with contextlib.suppress(WaitTimeout):
        wait_for(gone, timeout, 0.05, f"process group {pgid} after SIGTERM")
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        poll(lambda: not group_members(pgid), 10, f"process group {pgid} after SIGKILL")
    _reap(popen)
    return found


def _reap(popen: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout)
