"""The local cloud stand-ins used by tests, the demo and the benchmarks.

    python -m localcloud up --dir .stack [--project P]   # start, write .stack/env
    python -m localcloud env --dir .stack                # print the env lines
    python -m localcloud down --dir .stack               # stop everything it started

or from Python: `with Stack(tmpdir) as stack: stack.publish(...)`.
"""

from localcloud.procs import StackError
from localcloud.pubsub_admin import SubscriptionSpec
from localcloud.stack import Stack
from localcloud.waiting import WaitTimeout, wait_for

__all__ = ["Stack", "StackError", "SubscriptionSpec", "WaitTimeout", "wait_for"]
