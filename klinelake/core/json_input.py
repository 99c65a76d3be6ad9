"""Decode a JSON document from outside (a Binance body or frame, a Pub/Sub message) into the one
type the caller expects, or raise the caller's InvalidData naming what it was."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson

from klinelake.core.errors import InvalidData

T = TypeVar("T", dict[str, Any], list[Any])
_KIND = {dict: "object", list: "array"}


def load_json(
    data: bytes | str, what: str, expect: type[T], *, error: type[InvalidData] = InvalidData
) -> T:
    """`data` as a JSON `expect` (dict or list); else `error("WHAT is not JSON ...")`."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise error(f"{what} is not JSON: {exc}: {data[:80]!r}") from None
    if not isinstance(obj, expect):
        kind = _KIND[expect]
        raise error(f"{what} must be a JSON {kind}, got {type(obj).__name__}: {str(obj)[:80]}")
    return obj
