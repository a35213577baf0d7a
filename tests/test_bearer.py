"""``get_bearer_token`` against Backstage's own verdicts (tests/data/backstage_vectors.json)."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest

from flask_backstage_auth.http_auth.bearer import MAX_AUTHORIZATION_HEADER_LENGTH, get_bearer_token

VECTORS_PATH = Path(__file__).parent / "data" / "backstage_vectors.json"

with open(VECTORS_PATH, encoding="utf-8") as _vectors_file:
    _VECTORS: dict[str, t.Any] = json.load(_vectors_file)

BEARER_SECTION: dict[str, t.Any] = _VECTORS["bearer_headers"]
PROBES: list[dict[str, t.Any]] = BEARER_SECTION["probes"]
#: The real ServerTokenManager token that the probes wrap.
VECTOR_TOKEN: str = BEARER_SECTION["token"]


#: JavaScript's ``\s`` class (ECMAScript WhiteSpace and LineTerminator).
JS_WHITESPACE = frozenset(
    "\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)


def _probe_id(probe: dict[str, t.Any]) -> str:
    return str(probe.get("id") or repr(probe["value"])[:40])


def test_the_vector_file_has_probes_of_both_verdicts() -> None:
    # Guards against a silently truncated or reshaped vector file: the
    # parametrized test below would then pass vacuously.
    verdicts = {probe["expected_token"] is None for probe in PROBES}
    assert verdicts == {True, False}
    assert all("value" in probe and "expected_token" in probe for probe in PROBES)


@pytest.mark.parametrize("probe", PROBES, ids=[_probe_id(p) for p in PROBES])
def test_probe_extracts_the_expected_token(probe: dict[str, t.Any]) -> None:
    assert get_bearer_token(probe["value"]) == probe["expected_token"]


@pytest.mark.parametrize(
    "probe",
    [p for p in PROBES if p["expected_token"] is not None],
    ids=[_probe_id(p) for p in PROBES if p["expected_token"] is not None],
)
def test_extracted_token_is_a_substring_of_the_header(probe: dict[str, t.Any]) -> None:
    token = get_bearer_token(probe["value"])
    assert token is not None
    assert token in probe["value"]
    # JavaScript's \s, not Python's (U+0085 and U+001C are not JS whitespace).
    assert not any(ch in JS_WHITESPACE for ch in token)


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"Bearer abc",
        bytearray(b"Bearer abc"),
        42,
        4.2,
        ["Bearer abc"],
        {"Bearer": "abc"},
        object(),
    ],
    ids=["none", "bytes", "bytearray", "int", "float", "list", "dict", "object"],
)
def test_non_string_values_give_no_token(value: object) -> None:
    assert get_bearer_token(value) is None


def test_header_at_the_size_limit_is_parsed() -> None:
    token = "a" * (MAX_AUTHORIZATION_HEADER_LENGTH - len("Bearer "))
    header = f"Bearer {token}"
    assert len(header) == MAX_AUTHORIZATION_HEADER_LENGTH
    assert get_bearer_token(header) == token


def test_header_one_over_the_size_limit_gives_no_token() -> None:
    header = "Bearer " + "a" * (MAX_AUTHORIZATION_HEADER_LENGTH - len("Bearer ") + 1)
    assert len(header) == MAX_AUTHORIZATION_HEADER_LENGTH + 1
    assert get_bearer_token(header) is None


def test_oversized_header_with_a_real_token_gives_no_token() -> None:
    header = "Bearer " + VECTOR_TOKEN + "x" * (20 * 1024)
    assert get_bearer_token(header) is None
    # The same token alone is extracted, so the size is what refuses it.
    assert get_bearer_token("Bearer " + VECTOR_TOKEN) == VECTOR_TOKEN


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Basic dXNlcjpwYXNz",
        f"Bearer\t{VECTOR_TOKEN}",
        f"Bearer {VECTOR_TOKEN}\n",
        f"Bearer {VECTOR_TOKEN}\r\n",
        f"Bearer\u00a0{VECTOR_TOKEN}",
        f"Bearer {VECTOR_TOKEN}\u3000",
        f"XBearer {VECTOR_TOKEN}",
    ],
)
def test_malformed_headers_give_no_token(value: str) -> None:
    assert get_bearer_token(value) is None


def test_scheme_is_case_insensitive_and_spaces_are_repeatable() -> None:
    assert get_bearer_token(f"bEARER   {VECTOR_TOKEN}") == VECTOR_TOKEN


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer  ", "BEARER "])
@pytest.mark.parametrize("place", ["start", "middle", "end"])
def test_every_character_gets_javascripts_verdict(scheme: str, place: str) -> None:
    """The fast path for ASCII tokens and the regex agree with ``\\S`` on every character:
    a token with a JavaScript space is no token; any other character is part of it."""
    for code in [*range(0x80), 0x85, 0xA0, 0x1680, *range(0x2000, 0x2030), 0x205F, 0x3000, 0xFEFF]:
        char = chr(code)
        token = {"start": char + "abc", "middle": "ab" + char + "c", "end": "abc" + char}[place]
        expected = None if char in JS_WHITESPACE and place != "start" else token
        if char in JS_WHITESPACE and place == "start":
            # Leading spaces (0x20) are the separator; any other JS space is no token.
            expected = "abc" if char == " " else None
        assert get_bearer_token(scheme + token) == expected, (scheme, hex(code), place)
