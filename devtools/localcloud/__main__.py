"""`python -m localcloud up|down|env --dir .stack [--project P]`."""

from __future__ import annotations

import argparse
import sys

from klinelake.config import version
from localcloud.procs import StackError
from localcloud.stack import Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud",
        description=__doc__,
        epilog="Reads no environment variable. `up` writes DIR/env (source it): "
        "PUBSUB_EMULATOR_HOST, STORAGE_EMULATOR_HOST, KLINES_TOPIC, LAKE_URI, ... for the others.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("command", choices=["up", "down", "env", "status"])
    parser.add_argument("--dir", default=".stack", help="state, logs and data (default .stack)")
    parser.add_argument("--project", default="local-project")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            stack = Stack(args.dir, args.project).start()
            for name, pid in stack.state.pids.items():
                print(f"started {name} pid {pid}", file=sys.stderr)
            print(f"function log: {stack.function_log}", file=sys.stderr)
            print(stack.env_file.read_text(), end="")
        elif args.command == "down":
            stack = Stack.load(args.dir)
            stopped = stack.stop()
            for name, pids in stopped.items():
                print(f"stopped {name}: pids {' '.join(map(str, pids)) or '(already gone)'}")
            if not stopped:
                print("nothing was running")
        elif args.command == "env":
            print(Stack.load(args.dir).env_file.read_text(), end="")
        else:
            for name, alive in Stack.load(args.dir).running().items():
                print(f"{name}: {'running' if alive else 'stopped'}")
    except StackError as exc:
        print(f"localcloud: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
