"""The symbol rule (docs/contracts.md): the object name is an injective function of
(symbol, interval), and `parse_object_name` gives both back."""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from klinelake.core.errors import InvalidSymbol
from klinelake.core.intervals import INTERVALS
from klinelake.core.symbols import object_name, parse_object_name, validate_symbol


@functools.cache
def siblings() -> dict[str, tuple[str, ...]]:
    """Every assigned character that shares a lowercase, casefold or NFKC-casefold form with
    another: the alphabet of one name reached by two spellings (K and U+212A, Ω and U+2126,
    ß and ẞ and SS, Σ σ ς, fullwidth and ASCII, ...)."""
    groups: dict[str, set[str]] = defaultdict(set)
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if unicodedata.category(ch) in ("Cn", "Cs", "Co"):
            continue
        for key in (ch.lower(), ch.casefold(), unicodedata.normalize("NFKC", ch).casefold()):
            groups[key].add(ch)
    out: dict[str, set[str]] = defaultdict(set)
    for members in groups.values():
        for ch in members:
            out[ch] |= members - {ch}
    return {ch: tuple(sorted(others)) for ch, others in out.items() if others}


# Characters whose case mappings or compatibility forms land on another character's spelling.
TRICKY = (
    "\u212a\u212b\u2126"  # KELVIN SIGN, ANGSTROM SIGN, OHM SIGN
    "ßẞıİiIKkΣσςΩωÅåǅǄǆﬀﬁŉᾼᾳ"
    "ＡＢＣＫｋ０１"  # fullwidth
    "²¹ⅫⅻАВСКаеоΑΒΚ"  # superscripts, roman numerals, Cyrillic and Greek look-alikes
    "-_."
)
alphabet = st.one_of(
    st.sampled_from(TRICKY),
    st.characters(codec="utf-8"),
    st.characters(categories=("Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No")),
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
)
# Most random strings are refused (lowercase, marks, punctuation), so `symbols` builds strings
# from characters that are accepted one by one (their combinations may still be refused:
# Hangul jamo compose under NFKC, sigma is final by context) and `candidates` adds raw text.
_char = (
    st.one_of(
        st.sampled_from(TRICKY),
        st.sampled_from(sorted(siblings())),
        st.characters(categories=("Lu", "Lt", "Lo", "Nd", "Nl", "No")),
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
    )
    .map(str.upper)
    .filter(lambda c: c in "-_." or accepted(c))
)
symbols = st.lists(_char, min_size=1, max_size=12).map(lambda cs: "".join(cs).lstrip("-_.") or "X")
candidates = st.one_of(symbols, st.text(alphabet, min_size=1, max_size=12))
_ENOUGH = settings(
    derandomize=True,
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


def accepted(symbol: str) -> bool:
    try:
        validate_symbol(symbol)
    except InvalidSymbol:
        return False
    return True


@_ENOUGH
@given(candidates, st.sampled_from(INTERVALS))
def test_accepted_symbols_round_trip_through_their_object_name(symbol: str, interval: str) -> None:
    assume(accepted(symbol))
    name = object_name(symbol, interval)
    assert parse_object_name(name) == (symbol, interval)
    assert name.count("/") == 1 and ".." not in name


@_ENOUGH
@given(symbols, st.data())
def test_twins_by_case_or_compatibility_never_share_an_object(
    symbol: str, data: st.DataObject
) -> None:
    """Swap some characters of a symbol for siblings (same lowercase, casefold or NFKC form):
    if both spellings are accepted they are the same symbol or have different object names."""
    twin = "".join(
        data.draw(st.sampled_from((c, *siblings().get(c, ())))) if c in siblings() else c
        for c in symbol
    )
    interval = data.draw(st.sampled_from(INTERVALS))
    twin_interval = data.draw(st.sampled_from([interval, *INTERVALS]))
    if not (accepted(symbol) and accepted(twin)):
        return  # most twins are refused outright, which is the point; not worth a retry
    same = object_name(symbol, interval) == object_name(twin, twin_interval)
    assert same == ((symbol, interval) == (twin, twin_interval))


@_ENOUGH
@given(symbols, symbols, st.sampled_from(INTERVALS), st.sampled_from(INTERVALS))
def test_distinct_accepted_pairs_have_distinct_object_names(
    a: str, b: str, ia: str, ib: str
) -> None:
    assume(accepted(a) and accepted(b))
    assert (object_name(a, ia) == object_name(b, ib)) == ((a, ia) == (b, ib))


def test_every_single_code_point_lowercases_to_a_different_name() -> None:
    """Exhaustive over Unicode: no two accepted one-character symbols share a lowercase form."""
    seen: dict[str, str] = {}
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if unicodedata.category(ch)[0] not in "LN" or not accepted(ch):
            continue
        assert ch.lower() not in seen, (ch, seen[ch.lower()])
        seen[ch.lower()] = ch
    assert len(seen) > 100_000  # letters and digits of every script, not just ASCII


@pytest.mark.parametrize(
    ("symbol", "why"),
    [
        ("LIN\u212aUSDT", "NFKC"),  # KELVIN SIGN: lowercases to ASCII k, LINKUSDT's object
        ("ＢＴＣＵＳＤＴ", "NFKC"),  # fullwidth twin of BTCUSDT
        ("BTC²", "NFKC"),
        ("btcusdt", "uppercase"),
        ("STRAßE", "uppercase"),  # ß uppercases to SS
        ("STRAẞE", "uppercase"),  # ẞ lowercases to ß, which uppercases to SS
        ("ıUSDT", "uppercase"),  # Turkish dotless i uppercases to I
        ("İUSDT", "uppercase"),  # lowercases to i + U+0307
        ("ΑΣς", "uppercase"),  # final sigma is a lowercase letter
    ],
)
def test_case_and_compatibility_twins_are_refused(symbol: str, why: str) -> None:
    with pytest.raises(InvalidSymbol, match=why):
        validate_symbol(symbol)


@pytest.mark.parametrize(
    "name",
    [
        "raw/notes.txt",
        "raw/binance_btcusdt_1H.jsonl",  # not an interval
        "raw/binance_BTCUSDT_1h.jsonl",  # not the lowercase form
        "raw/binance_linkusdt_1h.json",
        "raw/binance_ｂｔｃｕｓｄｔ_1h.jsonl",  # fullwidth: not a symbol
        "raw/binance_1h.jsonl",
        "raw/binance__1h.jsonl",
        "raw/binance_ß_1h.jsonl",  # would uppercase to SS, whose object is binance_ss
        "raw/sub/binance_btcusdt_1h.jsonl",
        "staging/binance_btcusdt_1h.jsonl",
    ],
)
def test_non_canonical_names_are_not_streams(name: str) -> None:
    assert parse_object_name(name) is None


def test_spot_and_futures_style_symbols_round_trip() -> None:
    for symbol, interval in [("BTCUSDT", "1M"), ("BTCUSD_PERP", "1h"), ("币安人生USDT", "1m")]:
        assert parse_object_name(object_name(symbol, interval)) == (symbol, interval)
    assert object_name("BTCUSD_PERP", "1h") == "raw/binance_btcusd_perp_1h.jsonl"
