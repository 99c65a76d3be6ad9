"""One exception root for the whole project, split by who is at fault.

    KlineLakeError
    ├── InvalidData            the upstream sent garbage: log it, dead-letter it, never retry
    │   ├── InvalidRow         one kline row (names the field, the value and why)
    │   ├── InvalidSymbol      a symbol that must not reach an object name
    │   ├── InvalidInterval    not one of Binance's 16 interval names
    │   └── InvalidMessage     a Pub/Sub message that breaks the message contract
    ├── TransientError         a failure worth retrying (GCS 429/5xx, network, 412 past the budget)
    │   ├── PreconditionFailed a generation precondition did not hold (HTTP 412): re-read, retry
    │   └── WorkDeferred       left for a redelivery on purpose (a merge staged over several
    │       ├── MergeInProgress  deliveries, each within the ack deadline; another delivery
    │       └── LeaseHeld        holding the object's lease): logged at WARNING, not ERROR
    ├── ObjectNotFound         the object (or that generation of it) does not exist
    ├── LakeUnavailable        the lake itself (bucket or directory) is missing or unreadable
    └── BinanceError           Binance answered with an error (see klinelake.binance.rest)

The function acks `InvalidData` (after dead-lettering) and raises everything else, so the
decision is made by type, never by matching error text.
"""

from __future__ import annotations


class KlineLakeError(Exception):
    """Root of every error this project raises on purpose."""


class InvalidData(KlineLakeError):
    """Input that can never succeed however often it is retried."""


class InvalidRow(InvalidData):
    def __init__(self, field: str, value: object, reason: str, *, where: str = "") -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.where = where
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}field {field!r} = {shown}: {reason}")


class InvalidSymbol(InvalidData):
    pass


class InvalidInterval(InvalidData):
    pass


class InvalidMessage(InvalidData):
    pass


class TransientError(KlineLakeError):
    """Worth retrying later; the caller decides how often."""


class PreconditionFailed(TransientError):
    """A generation precondition failed (GCS HTTP 412)."""


class WorkDeferred(TransientError):
    """Not a failure: the rest of the work is left for Pub/Sub's redelivery, on purpose."""


class MergeInProgress(WorkDeferred):
    """A merge too large for one delivery staged what its time budget allowed."""


class LeaseHeld(WorkDeferred):
    """Another delivery holds this object's lease (it is doing this work right now)."""


class ObjectNotFound(KlineLakeError):
    pass


class LakeUnavailable(KlineLakeError):
    """No such bucket or directory, or no credentials for it: the operator must act."""


class BinanceError(KlineLakeError):
    """Binance (or the simulator) answered with an error; see klinelake.binance.rest."""
