"""Codes: random digits, keyed hashes a cabinet can check offline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartlocker.protocol import (
    MalformedMessage,
    derive_code_key,
    generate_code,
    hash_code,
    normalize_code,
)

SECRET = b"cloud secret for tests, 32 bytes!"


def test_generated_codes_are_8_digits_and_vary() -> None:
    codes = {generate_code() for _ in range(1000)}
    assert all(len(c) == 8 and c.isdigit() for c in codes)
    assert len(codes) > 990  # 1e8 possibilities: collisions are rare


def test_too_short_codes_cannot_be_generated() -> None:
    with pytest.raises(ValueError):
        generate_code(4)


@given(st.from_regex(r"[0-9]{8,16}", fullmatch=True))
def test_cabinet_and_cloud_agree_and_keys_separate_cabinets(code: str) -> None:
    key_a = derive_code_key(SECRET, "cab-a")
    assert hash_code(key_a, code) == hash_code(derive_code_key(SECRET, "cab-a"), code)
    assert hash_code(key_a, code) != hash_code(derive_code_key(SECRET, "cab-b"), code)
    assert hash_code(key_a, code) != hash_code(derive_code_key(b"other secret", "cab-a"), code)
    assert code not in hash_code(key_a, code) or len(code) < 8


def test_people_may_type_spaces_and_dashes() -> None:
    key = derive_code_key(SECRET, "cab-a")
    assert hash_code(key, "1234 5678") == hash_code(key, "1234-5678") == hash_code(key, "12345678")


@pytest.mark.parametrize(
    "code",
    ["", "abc", "12345", "1234567a", "1" * 17, "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18"],
)
def test_malformed_codes_are_refused(code: str) -> None:
    with pytest.raises(MalformedMessage):
        normalize_code(code)
