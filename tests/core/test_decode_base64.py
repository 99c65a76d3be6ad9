"""The pushed message's base64: `decode_base64` is the standard library's decision, exactly
(same bytes, same refusals), at pybase64's speed where pybase64 accepts."""

from __future__ import annotations

import base64
import binascii

import pybase64
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core.contract import decode_base64

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
# base64's alphabet, padding, and the bytes a hostile or broken sender could mix in: spaces
# and newlines, the URL-safe alphabet, NUL, non-ASCII letters and digits, a fullwidth A
_NOISE = [" ", "\n", "\r", "-", "_", "\x00", "é", "١", "Ａ"]
texts = st.one_of(
    st.text(st.sampled_from([*_B64, *_NOISE]), max_size=24),
    st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode()),
    st.tuples(
        st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode()),
        st.integers(0, 40),
        st.sampled_from([*_NOISE, "=", "==", "A", "+"]),
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
    st.text(max_size=16),
)


def standard(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def ours(text: str) -> bytes | None:
    try:
        return decode_base64(text)
    except (binascii.Error, ValueError):
        return None


@settings(max_examples=3000, derandomize=True)
@given(texts)
def test_decode_base64_is_the_standard_librarys_decision(text: str) -> None:
    assert ours(text) == standard(text)


@settings(max_examples=3000, derandomize=True)
@given(texts)
def test_what_pybase64_accepts_decodes_as_the_standard_library_does(text: str) -> None:
    """The property `decode_base64` rests on: pybase64 is never more lenient, nor different."""
    try:
        fast = pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return
    assert fast == standard(text)


def test_padding_after_a_complete_quantum_is_accepted_as_before() -> None:
    # pybase64 alone refuses this; the standard library (and so the function, as before) takes it
    assert decode_base64("0000=") == base64.b64decode("0000=", validate=True) == b"\xd3M4"
